"""The training log against the metrics: values from scipy's pearsonr and a hand interpolation."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ckptlens.analysis.correlation import MEAN_TRAJECTORY_LAYER
from ckptlens.analysis.training_log import TRAIN_LOSS, log_correlations, logged_at_steps, logged_quantities


def _table(steps, layers):
    rng = np.random.default_rng(0)
    rows = []
    for layer_i, layer in enumerate(layers):
        for s in steps:
            rows.append(("r", s, layer, "cka_to_final", 1 - np.exp(-s / 40) + 0.01 * rng.standard_normal() + layer_i))
            # undefined at the first step, as every *_to_previous metric is
            prev = np.nan if s == steps[0] else float(np.sin(s / 17.0) + layer_i)
            rows.append(("r", s, layer, "cka_to_previous", prev))
    return pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])


def _log():
    # a Trainer's log: train rows every 5 steps, eval rows every 20 (separate rows at the same step)
    train = pd.DataFrame({"step": np.arange(5, 105, 5), "loss": 3.0 * np.exp(-np.arange(5, 105, 5) / 30)})
    train["learning_rate"] = 1e-3
    train["epoch"] = train["step"] / 100
    evals = pd.DataFrame({"step": np.arange(20, 120, 20), "eval_accuracy": np.linspace(0.2, 0.9, 5)})
    return pd.concat([train, evals], ignore_index=True)


def test_logged_quantities_leave_out_bookkeeping():
    log = _log()
    log["train_runtime"] = 1.0
    log["eval_samples_per_second"] = 3.0
    log["seconds"] = np.arange(len(log)) * 0.1  # ckptlens' own training log: wall-clock time, not a quantity
    assert logged_quantities(log) == ["loss", "eval_accuracy"]


def test_a_logged_quantity_is_interpolated_between_logged_steps_and_never_extrapolated():
    log = _log()
    steps = np.array([0, 10, 12, 50, 100, 110])
    got = logged_at_steps(log, steps)
    assert list(got.columns) == [TRAIN_LOSS, "eval_accuracy"]
    loss = 3.0 * np.exp(-np.array([10, 10, 15, 50, 100]) / 30)
    # step 12 lies between the logged steps 10 and 15: 3/5 of the way
    want = [np.nan, loss[0], loss[1] + 0.4 * (loss[2] - loss[1]), loss[3], loss[4], np.nan]
    np.testing.assert_allclose(got[TRAIN_LOSS].to_numpy(), want, rtol=1e-12)
    # eval rows at 20..100: step 110 is past the last (NaN), step 50 is halfway from 40 to 60
    np.testing.assert_allclose(got["eval_accuracy"].to_numpy()[[3, 4]], [0.375 + 0.5 * 0.175, 0.9])
    assert np.isnan(got["eval_accuracy"].to_numpy()[[0, 1, 2, 5]]).all()


def test_every_metric_is_correlated_with_the_loss_as_scipy_does_it():
    steps = np.arange(0, 101, 10)
    table = _table(steps, ["l.0", "l.1"])
    summary, per_layer, notes = log_correlations(table, _log())
    loss = logged_at_steps(_log(), steps)[TRAIN_LOSS].to_numpy()
    ok = np.isfinite(loss)  # step 0 is before the first logged step
    assert any("1 of 11 checkpoint step(s)" in n and TRAIN_LOSS in n for n in notes), notes

    for layer in ("l.0", "l.1"):
        x = table[(table.layer == layer) & (table.metric == "cka_to_final")].sort_values("step")["value"].to_numpy()
        row = per_layer[
            (per_layer.layer == layer) & (per_layer.x_metric == "cka_to_final") & (per_layer.y_metric == TRAIN_LOSS)
        ]
        assert len(row) == 1
        assert row["pearson_r"].iloc[0] == pytest.approx(stats.pearsonr(x[ok], loss[ok]).statistic, abs=1e-12)
        assert row["n_steps"].iloc[0] == ok.sum()

    # the summary uses the mean over layers; *_to_previous keeps its layers though step 0 is NaN
    prev = table[table.metric == "cka_to_previous"].pivot(index="step", columns="layer", values="value")
    mean = prev.mean(axis=1).to_numpy()
    both = ok & np.isfinite(mean)
    row = summary[(summary.x_metric == "cka_to_previous") & (summary.y_metric == TRAIN_LOSS)]
    assert row["layer"].iloc[0] == MEAN_TRAJECTORY_LAYER
    assert row["pearson_r"].iloc[0] == pytest.approx(stats.pearsonr(mean[both], loss[both]).statistic, abs=1e-12)
    lin = stats.linregress(mean[both], loss[both])
    assert row["slope"].iloc[0] == pytest.approx(lin.slope, rel=1e-10)
    assert row["r_squared"].iloc[0] == pytest.approx(lin.rvalue**2, rel=1e-10)
    assert set(summary["y_metric"]) == {TRAIN_LOSS, "eval_accuracy"}


def test_no_log_or_a_log_without_quantities_gives_nothing_and_says_so():
    table = _table(np.arange(0, 50, 10), ["l.0"])
    summary, per_layer, notes = log_correlations(table, None)
    assert summary.empty and per_layer.empty and notes == []
    summary, per_layer, notes = log_correlations(table, pd.DataFrame({"step": [1, 2], "epoch": [0.1, 0.2]}))
    assert summary.empty and "no logged quantity" in notes[0]
