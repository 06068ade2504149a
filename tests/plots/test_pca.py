"""The PCA figure (ckptlens.plots.pca)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ckptlens.plots import (
    plot_pca,
)
from tests.plots.helpers import assert_no_leftovers, assert_png


def test_pca_plot(tmp_path):
    rows = []
    for matrix, ratios in (("layer_mean", [0.7, 0.2, 0.1]), ("layer_metric", [0.5, 0.3, 0.1, 0.06, 0.04])):
        for k, (r, c) in enumerate(zip(ratios, np.cumsum(ratios))):
            rows.append(
                {"run": "r", "matrix": matrix, "component": k + 1, "explained_variance_ratio": r, "cumulative": c}
            )
    assert_png(plot_pca(pd.DataFrame(rows), tmp_path / "sub" / "pca.png"))
    assert_no_leftovers(tmp_path)
