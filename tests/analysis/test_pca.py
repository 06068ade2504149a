"""The notes of the cross-metric PCA count NaNs where they are (ckptlens.analysis.pca)."""

import numpy as np
import pandas as pd

from ckptlens.analysis.correlation import correlation_matrix
from ckptlens.analysis.pca import pca_explained_variance

STEPS = [0, 10, 20, 30, 40, 50]
LAYERS = ["l.0", "l.1", "l.2"]


def table_of(values: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [
        {"run": "r", "step": s, "layer": layer, "metric": m, "value": float(v[i, j])}
        for m, v in values.items()
        for i, s in enumerate(STEPS)
        for j, layer in enumerate(LAYERS)
    ]
    return pd.DataFrame(rows)


def test_a_metric_undefined_at_the_first_step_is_counted_at_1_of_6_steps():
    """relative_update_norm_previous: NaN at the first step (no previous checkpoint) in every layer.
    No note may say it is NaN at 6 of 6 steps (its layer mean's count, not the metric's)."""
    rng = np.random.default_rng(0)
    prev = rng.normal(size=(len(STEPS), len(LAYERS)))
    prev[0, :] = np.nan
    table = table_of(
        {"relative_update_norm_previous": prev, "a": rng.normal(size=prev.shape), "b": rng.normal(size=prev.shape)}
    )
    _, loadings, notes = pca_explained_variance(table)
    about = [n for n in notes if "relative_update_norm_previous" in n]
    assert about, notes
    assert not any("6 of 6" in n for n in about), about
    mean_note = next(n for n in about if "layer_mean" in n)
    assert "at 1 of 6 step(s)" in mean_note and "left out of this matrix" in mean_note
    layer_notes = [n for n in about if "layer_metric" in n]
    assert len(layer_notes) == 3 and all("at 1 of 6 step(s)" in n for n in layer_notes)
    assert set(loadings[loadings.matrix == "layer_mean"]["column"]) == {"a", "b"}
    _, corr_notes = correlation_matrix(table)
    about = [n for n in corr_notes if "relative_update_norm_previous" in n]
    assert about and not any("6 of 6" in n for n in about) and "at 1 of 6 step(s)" in about[0]
