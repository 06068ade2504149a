"""The analysis on the real Pythia table, where it is present."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ckptlens.analysis import (
    metric_correlations,
    pca_explained_variance,
)

# ../shared beside the checkout (CI clones elsewhere than /work)
PYTHIA_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"


# --------------------------------------------------------------------------- real Pythia data


@pytest.mark.skipif(not PYTHIA_CSV.exists(), reason="Pythia CSV not available")
def test_real_pythia_table():
    model, layer_type = "pythia-70m-deduped", "attention.dense"
    df = pd.read_csv(PYTHIA_CSV).rename(columns={"model": "run"})
    one = df[(df.run == model) & df.layer.str.endswith(layer_type)]

    explained, loadings, _ = pca_explained_variance(one)
    assert set(explained.matrix) == {"layer_mean", "layer_metric"}
    for _, e in explained.groupby("matrix"):
        ratio = e.explained_variance_ratio.to_numpy()
        assert np.isfinite(ratio).all() and (ratio >= 0).all()
        assert ratio.sum() <= 1 + 1e-9
        assert np.all(np.diff(ratio) <= 1e-12)  # descending
    assert np.isfinite(loadings.loading).all()

    corr, _ = metric_correlations(one, None)
    r = corr.pearson_r.dropna()
    assert len(r) > 0 and ((r >= -1) & (r <= 1)).all()

    # one value checked against scipy on the raw CSV numbers, read without pandas
    layer = "gpt_neox.layers.2.attention.dense"
    raw: dict[str, dict[int, float]] = {"grad_sim": {}, "cka_scores": {}}
    with PYTHIA_CSV.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            if rec["model"] == model and rec["layer"] == layer and rec["metric"] in raw:
                raw[rec["metric"]][int(rec["step"])] = float(rec["value"])
    steps = sorted(raw["grad_sim"])
    x = [raw["grad_sim"][s] for s in steps]
    y = [raw["cka_scores"][s] for s in steps]
    expected = stats.pearsonr(x, y)[0]
    # pairs=None orders each pair alphabetically: (cka_scores, grad_sim); r is symmetric
    row = corr[(corr.x_metric == "cka_scores") & (corr.y_metric == "grad_sim") & (corr.layer == layer)]
    assert row.pearson_r.iloc[0] == pytest.approx(expected, rel=1e-10)
    assert row.n_steps.iloc[0] == len(steps) == 27
