"""Shared by the figure tests: PNG checks and a tidy table."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PYTHIA_STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 3000] + list(range(13000, 143001, 10000))


def assert_png(path: Path) -> np.ndarray:
    path = Path(path)
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0
    return img


def assert_no_leftovers(directory: Path) -> None:
    """Only final PNGs: no temporary (dot-prefixed or .tmp) files survive."""
    for p in Path(directory).rglob("*"):
        assert not p.name.startswith("."), p
        assert not p.name.endswith(".tmp"), p


def tidy(runs=("run-a",), metrics=("weight_norm", "grad/cos sim"), layers=4, steps=PYTHIA_STEPS):
    rng = np.random.default_rng(0)
    rows = []
    for run in runs:
        for m in metrics:
            for i in range(layers):
                for kind in ("attn.q_proj", "mlp.fc1"):
                    for s in steps:
                        rows.append(
                            {
                                "run": run,
                                "step": s,
                                "layer": f"blocks.{i}.{kind}",
                                "metric": m,
                                "value": rng.normal() + np.log1p(s),
                            }
                        )
    df = pd.DataFrame(rows)
    df.loc[5, "value"] = np.nan  # a gap
    return df
