"""Task vectors of a few runs sharing a base, for the sampling tests."""

import numpy as np


def runs(seed=0, n_runs=5):
    rng = np.random.default_rng(seed)
    base = {
        "a": rng.standard_normal((6, 4)).astype(np.float32),
        "b": rng.standard_normal(7),
        "frozen": rng.standard_normal((3, 3)),
        "ids": np.arange(5),
    }
    shared = rng.standard_normal((6, 4))
    ft = []
    for _ in range(n_runs):
        ft.append(
            {
                "a": (base["a"] + shared + 0.3 * rng.standard_normal((6, 4))).astype(np.float32),
                "b": base["b"] + rng.standard_normal(7) * np.linspace(0.1, 2, 7),
                "frozen": base["frozen"].copy(),
                "ids": base["ids"].copy(),
            }
        )
    return base, ft
