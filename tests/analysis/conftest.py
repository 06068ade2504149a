"""A synthetic tidy table shared by the analysis tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.analysis.helpers import LAYERS, STEPS, make_table


@pytest.fixture
def synthetic() -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    shape = (len(STEPS), len(LAYERS))
    t = np.arange(len(STEPS))[:, None]
    base = {
        "a": rng.normal(size=shape) + 0.3 * t,
        "b": rng.normal(size=shape) * 5 + 100,
        "c": np.exp(0.05 * t) + rng.normal(scale=0.2, size=shape),
    }
    with_bad = dict(base)
    with_bad["const"] = np.full(shape, 3.0)
    nanned = rng.normal(size=shape)
    nanned[4, :] = np.nan  # NaN at one step on every layer: the metric can't be averaged there
    with_bad["hasnan"] = nanned
    return make_table(with_bad), base
