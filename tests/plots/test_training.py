"""Training curves (ckptlens.plots.training)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ckptlens.plots import (
    plot_training_curves,
)
from tests.plots.helpers import PYTHIA_STEPS, assert_no_leftovers, assert_png


def test_training_curves(tmp_path, no_data_calls):
    steps = np.array(PYTHIA_STEPS)
    log = pd.DataFrame(
        {
            "step": steps,
            "loss": 5 * np.exp(-steps / 3e4) + 1,
            "id_error": np.linspace(0.9, 0.1, steps.size),
            "ood_error": np.linspace(0.95, 0.4, steps.size),
        }
    )
    log.loc[2, "ood_error"] = np.nan
    both = assert_png(plot_training_curves(log, tmp_path / "curves.png"))
    # errors missing or all NaN: only the loss panel (a narrower figure)
    loss_only = assert_png(plot_training_curves(log[["step", "loss"]], tmp_path / "loss.png"))
    nan_err = assert_png(plot_training_curves(log.assign(id_error=np.nan, ood_error=np.nan), tmp_path / "nan.png"))
    assert loss_only.shape[1] < both.shape[1] and nan_err.shape == loss_only.shape
    assert not no_data_calls
    assert_no_leftovers(tmp_path)
