"""Metric correlations (ckptlens.analysis.correlation) against scipy and numpy.polyfit."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ckptlens.analysis import (
    CORRELATION_COLUMNS,
    metric_correlations,
)
from ckptlens.analysis.correlation import MEAN_TRAJECTORY_LAYER
from ckptlens.store.layers import layer_order
from tests.analysis.helpers import LAYERS, STEPS, make_table

# ------------------------------------------------------------------------------ correlations


def test_correlations_match_scipy_and_polyfit(synthetic):
    table, base = synthetic
    corr, notes = metric_correlations(table, [("a", "c")])
    assert list(corr.columns) == CORRELATION_COLUMNS
    per_layer = corr[corr.layer != "mean"]
    assert per_layer.layer.tolist() == layer_order(LAYERS)
    for j, layer in enumerate(LAYERS):
        x, y = base["a"][:, j], base["c"][:, j]
        row = per_layer[per_layer.layer == layer].iloc[0]
        assert row.pearson_r == pytest.approx(stats.pearsonr(x, y)[0], rel=1e-10)
        slope, intercept = np.polyfit(x, y, 1)
        ss_res = np.sum((y - (slope * x + intercept)) ** 2)
        ss_tot = np.sum((y - y.mean()) ** 2)
        assert row.r_squared == pytest.approx(1 - ss_res / ss_tot, rel=1e-10)
        assert row.r_squared == pytest.approx(row.pearson_r**2, rel=1e-9)
        assert row.slope == pytest.approx(slope, rel=1e-9)
        assert row.intercept == pytest.approx(intercept, rel=1e-9, abs=1e-12)
        assert row.n_steps == len(STEPS)


def test_correlation_mean_row_is_mean_over_layers(synthetic):
    table, _ = synthetic
    corr, _ = metric_correlations(table, [("a", "b"), ("b", "c")])
    for (x, y), group in corr.groupby(["x_metric", "y_metric"]):
        assert group.layer.iloc[-1] == "mean"  # last row of each pair
        layers = group[group.layer != "mean"]
        mean = group[group.layer == "mean"].iloc[0]
        assert mean.pearson_r == pytest.approx(layers.pearson_r.mean(), rel=1e-12)
        assert mean.r_squared == pytest.approx(layers.r_squared.mean(), rel=1e-12)
        assert pd.isna(mean.n_steps) and np.isnan(mean.slope)


def test_correlations_pairs_none_enumerates_all_unordered_pairs(synthetic):
    table, _ = synthetic
    corr, _ = metric_correlations(table, None)
    metrics = sorted(table.metric.unique())
    expected = set(itertools.combinations(metrics, 2))
    got = set(zip(corr.x_metric, corr.y_metric))
    assert got == expected
    assert len(corr) == len(expected) * (len(LAYERS) + 1)


def test_correlations_degenerate_layers_are_nan_with_note(synthetic):
    table, _ = synthetic
    corr, notes = metric_correlations(table, [("a", "const"), ("hasnan", "a")])
    const = corr[(corr.y_metric == "const") & (corr.layer != "mean")]
    assert const.pearson_r.isna().all() and const.r_squared.isna().all()
    assert any("const" in n and "constant" in n for n in notes)
    # NaN steps are left out pairwise, not the whole layer
    nanpair = corr[(corr.x_metric == "hasnan") & (corr.layer != "mean")]
    assert (nanpair.n_steps == len(STEPS) - 1).all() and nanpair.pearson_r.notna().all()

    short = make_table({"a": np.array([[1.0], [2.0]]), "b": np.array([[2.0], [5.0]])}, layers=["l.0"], steps=[0, 1])
    corr, notes = metric_correlations(short, [("a", "b")])
    row = corr[corr.layer == "l.0"].iloc[0]
    assert np.isnan(row.pearson_r) and np.isnan(row.r_squared) and row.n_steps == 2
    assert any("< 3" in n for n in notes)


def test_correlations_disjoint_layers_and_unknown_metric_give_notes():
    rng = np.random.default_rng(3)
    acts = make_table({"act_norm": rng.normal(size=(len(STEPS), 2))}, layers=["blocks.0", "blocks.1"])
    weights = make_table({"w_norm": rng.normal(size=(len(STEPS), 2))}, layers=["blocks.0.attn.q_proj", "blocks.1"])
    table = pd.concat([acts, weights], ignore_index=True)
    corr, notes = metric_correlations(table, [("act_norm", "w_norm"), ("act_norm", "nope")])
    # exact-name matching: only "blocks.1" is shared
    assert corr[corr.layer != "mean"].layer.tolist() == ["blocks.1"]
    assert any("nope" in n for n in notes)

    valued = make_table(
        {"evr.pc1": rng.normal(size=(len(STEPS), 2)), "evr.pc2": rng.normal(size=(len(STEPS), 2))},
        layers=["blocks.0", "blocks.1"],
    )
    _, notes = metric_correlations(pd.concat([acts, valued]), [("act_norm", "evr")])
    assert any("['evr'] not in the table (multi-valued: name one of ['evr.pc1', 'evr.pc2'])" in n for n in notes)

    only_disjoint = pd.concat([acts, weights[weights.layer != "blocks.1"]], ignore_index=True)
    corr, notes = metric_correlations(only_disjoint, None)
    assert list(corr.columns) == CORRELATION_COLUMNS
    assert any("share no layer" in n and "mean-over-layers" in n for n in notes)
    # no shared layer: one row correlating the two metrics' mean-over-layers trajectories
    assert corr.layer.tolist() == ["layer_mean"]
    x = only_disjoint.query("metric == 'act_norm'").groupby("step").value.mean()
    y = only_disjoint.query("metric == 'w_norm'").groupby("step").value.mean()
    want = stats.linregress(x.to_numpy(), y.to_numpy())
    row = corr.iloc[0]
    assert row.pearson_r == pytest.approx(want.rvalue, abs=1e-12)
    assert row.r_squared == pytest.approx(want.rvalue**2, abs=1e-12)
    assert row.slope == pytest.approx(want.slope, abs=1e-12) and row.n_steps == len(STEPS)


def test_mean_trajectory_leaves_out_layers_not_finite_at_every_step():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(len(STEPS), 2))
    b = rng.normal(size=(len(STEPS), 3))
    b[5, 2] = np.nan  # head 2 drops out at one step: left out of the mean at every step
    table = pd.concat(
        [
            make_table({"cka": a}, layers=["blocks.0", "blocks.1"]),
            make_table({"overlap": b}, layers=["h0~h1", "h0~h2", "h1~h2"]),
        ],
        ignore_index=True,
    )
    corr, _ = metric_correlations(table, [("cka", "overlap")])
    want = np.corrcoef(a.mean(axis=1), b[:, :2].mean(axis=1))[0, 1]
    assert corr.layer.tolist() == ["layer_mean"]
    assert corr.pearson_r.item() == pytest.approx(want, abs=1e-12)


def test_without_pairs_every_pair_of_layer_mean_trajectories_clustered_and_bounded():
    """75 metrics × 20 layers: the summary has one row per pair of metrics (not per layer), their
    layer-mean trajectories' Pearson r; the per-layer table has every pair on every layer."""
    from ckptlens.analysis.correlation import clustered_order, correlation_matrix, layer_correlations

    rng = np.random.default_rng(0)
    steps = np.arange(30)
    trend = np.cumsum(rng.standard_normal(30))
    metrics = {f"m{i:02d}": trend * (1 if i < 10 else 0) + rng.standard_normal((30, 20)).T for i in range(75)}
    rows = [
        {"run": "r", "step": int(s), "layer": f"blocks.{j}", "metric": m, "value": float(v[j][k])}
        for m, v in metrics.items()
        for j in range(20)
        for k, s in enumerate(steps)
    ]
    table = pd.DataFrame(rows)
    corr, notes = correlation_matrix(table)
    assert len(corr) == 75 * 74 // 2 and set(corr["layer"]) == {MEAN_TRAJECTORY_LAYER}
    mean = table.groupby(["metric", "step"])["value"].mean().unstack(0)
    row = corr[(corr.x_metric + corr.y_metric).isin(["m00m11", "m11m00"])].iloc[0]
    assert row.pearson_r == pytest.approx(stats.pearsonr(mean["m00"], mean["m11"])[0], abs=1e-12)
    slope = np.polyfit(mean[row.x_metric], mean[row.y_metric], 1)[0]
    assert row.slope == pytest.approx(slope, rel=1e-9) and row.r_squared == pytest.approx(row.pearson_r**2)
    # the ten metrics sharing a trend sit together in the clustered order
    order = list(dict.fromkeys(list(corr["x_metric"]) + list(corr["y_metric"])))
    assert order == clustered_order(mean[order])
    together = sorted(order.index(f"m{i:02d}") for i in range(10))
    assert together[-1] - together[0] == 9
    per_layer, _ = layer_correlations(table)
    assert len(per_layer) == 20 * 75 * 74 // 2
    one = per_layer[(per_layer.layer == "blocks.3") & (per_layer.x_metric == "m00") & (per_layer.y_metric == "m01")]
    wide = table[table.layer == "blocks.3"].pivot(index="step", columns="metric", values="value")
    assert one.pearson_r.item() == pytest.approx(np.corrcoef(wide["m00"], wide["m01"])[0, 1], abs=1e-12)
