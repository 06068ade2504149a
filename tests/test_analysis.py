"""Values (not just shapes) of ckptlens.analysis, against independent plain computations."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from ckptlens.analysis import (
    CORRELATION_COLUMNS,
    EXPLAINED_COLUMNS,
    LOADINGS_COLUMNS,
    metric_correlations,
    missing_steps,
    pca_explained_variance,
)
from ckptlens.analysis.correlation import MEAN_TRAJECTORY_LAYER
from ckptlens.store.layers import layer_order

# ../shared beside the checkout (CI clones elsewhere than /work)
PYTHIA_CSV = Path(__file__).resolve().parents[2] / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"
LAYERS = ["blocks.0.attn", "blocks.1.attn", "blocks.2.attn", "blocks.10.attn"]
STEPS = list(range(0, 40, 2))


def make_table(metrics: dict[str, np.ndarray], layers=LAYERS, steps=STEPS, run="toy") -> pd.DataFrame:
    """Tidy table from {metric: array[step, layer]}."""
    rows = [
        {"run": run, "step": s, "layer": layer, "metric": m, "value": float(v[i, j])}
        for m, v in metrics.items()
        for i, s in enumerate(steps)
        for j, layer in enumerate(layers)
    ]
    return pd.DataFrame(rows)


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


def plain_ratios(x: np.ndarray) -> np.ndarray:
    """Explained variance ratios of a PCA on z-scored columns, written out plainly:
    eigenvalues of the correlation matrix, descending, normalized to sum 1."""
    corr = np.corrcoef(x, rowvar=False)
    eig = np.sort(np.linalg.eigvalsh(corr))[::-1]
    eig = np.clip(eig, 0, None)
    return eig / eig.sum()


# ------------------------------------------------------------------------------------ PCA


def test_pca_layer_mean_matches_correlation_eigenvalues(synthetic):
    table, base = synthetic
    explained, loadings, notes = pca_explained_variance(table)
    assert list(explained.columns) == EXPLAINED_COLUMNS
    assert list(loadings.columns) == LOADINGS_COLUMNS

    # matrix (a): mean over layers, one column per usable metric (alphabetical a, b, c)
    x = np.column_stack([base[m].mean(axis=1) for m in ("a", "b", "c")])
    got = explained[explained.matrix == "layer_mean"].sort_values("component")
    assert got.component.tolist() == [1, 2, 3]
    np.testing.assert_allclose(got.explained_variance_ratio, plain_ratios(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.cumulative, np.cumsum(plain_ratios(x)), rtol=1e-9)
    assert (got.run == "toy").all()

    # the first loading vector is the top eigenvector of the correlation matrix (up to sign)
    _, vecs = np.linalg.eigh(np.corrcoef(x, rowvar=False))
    top = vecs[:, -1]
    l1 = loadings[(loadings.matrix == "layer_mean") & (loadings.component == 1)]
    assert l1.column.tolist() == ["a", "b", "c"]
    assert abs(float(l1.loading.to_numpy() @ top)) == pytest.approx(1.0, abs=1e-9)
    # sign convention: the largest-magnitude loading is positive
    assert l1.loading.to_numpy()[np.argmax(np.abs(l1.loading.to_numpy()))] > 0


def test_pca_layer_metric_matches_correlation_eigenvalues(synthetic):
    table, base = synthetic
    explained, loadings, _ = pca_explained_variance(table)
    # matrix (b): columns (layer, metric) in depth order; PCA ratios don't depend on the order
    x = np.column_stack([base[m][:, j] for j in range(len(LAYERS)) for m in ("a", "b", "c")])
    got = explained[explained.matrix == "layer_metric"].sort_values("component")
    n = min(x.shape)
    assert len(got) == n
    np.testing.assert_allclose(got.explained_variance_ratio, plain_ratios(x)[:n], rtol=1e-7, atol=1e-12)
    # loadings only for the first 3 components, named "layer|metric", unit norm
    lb = loadings[loadings.matrix == "layer_metric"]
    assert sorted(lb.component.unique()) == [1, 2, 3]
    assert "blocks.10.attn|b" in set(lb.column)
    for _, comp in lb.groupby("component"):
        assert float((comp.loading**2).sum()) == pytest.approx(1.0)
    # depth order: blocks.2 before blocks.10 (not string order)
    cols = lb[lb.component == 1].column.tolist()
    assert cols.index("blocks.2.attn|a") < cols.index("blocks.10.attn|a")


def test_pca_drops_constant_and_nan_columns_with_notes(synthetic):
    table, _ = synthetic
    explained, loadings, notes = pca_explained_variance(table)
    text = "\n".join(notes)
    # matrix (a): both bad metrics are named with their reason
    assert any("layer_mean" in n and "'const'" in n and "constant" in n for n in notes), text
    assert any("layer_mean" in n and "'hasnan'" in n and "NaN" in n for n in notes), text
    # matrix (b): every one of their (layer, metric) columns too
    for layer in LAYERS:
        assert any(f"'{layer}|const'" in n for n in notes), text
        assert any(f"'{layer}|hasnan'" in n for n in notes), text
    assert not set(loadings.column) & {"const", "hasnan"}
    assert not any(c.endswith(("|const", "|hasnan")) for c in loadings.column)


def test_pca_too_few_columns_gives_no_rows_and_note():
    rng = np.random.default_rng(1)
    shape = (len(STEPS), 1)
    table = make_table({"a": rng.normal(size=shape), "flat": np.ones(shape)}, layers=["l.0"])
    explained, loadings, notes = pca_explained_variance(table)
    # one usable column in both matrices: nothing to decompose, no crash
    assert explained.empty and loadings.empty
    assert sum("no PCA" in n for n in notes) == 2


def test_pca_too_few_steps_and_empty_table():
    table = make_table({"a": np.array([[1.0, 2.0]]), "b": np.array([[3.0, 1.0]])}, layers=["l.0", "l.1"], steps=[5])
    explained, _, notes = pca_explained_variance(table)
    assert explained.empty and any("no PCA" in n for n in notes)
    explained, loadings, notes = pca_explained_variance(table.iloc[0:0])
    assert explained.empty and loadings.empty and notes


def test_pca_layer_mean_uses_layers_finite_at_every_step():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(len(STEPS), 3))
    b = rng.normal(size=(len(STEPS), 3))
    a_holed = a.copy()
    a_holed[3, 2] = np.nan  # layer 2 of "a" has one NaN: left out of a's layer mean everywhere
    table = make_table({"a": a_holed, "b": b}, layers=["l.0", "l.1", "l.2"])
    explained, _, notes = pca_explained_variance(table)
    x = np.column_stack([a[:, :2].mean(axis=1), b.mean(axis=1)])
    got = explained[explained.matrix == "layer_mean"].explained_variance_ratio
    np.testing.assert_allclose(got, plain_ratios(x), rtol=1e-9)
    assert any("'a'" in n and "l.2" in n and "layer mean" in n for n in notes)


def test_pca_layer_mean_note_counts_the_layers_nan_steps():
    """A metric undefined at the first step (no previous checkpoint) in every layer: the note says
    each layer is NaN at 1 of the steps, not only that the mean is NaN at all of them."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(len(STEPS), 3))
    a[0, :] = np.nan
    b = rng.normal(size=(len(STEPS), 3))
    table = make_table({"a": a, "b": b}, layers=["l.0", "l.1", "l.2"])
    _, _, notes = pca_explained_variance(table)
    note = next(n for n in notes if "layer_mean" in n and "'a'" in n and "no layer" in n)
    assert f"at 1 of {len(STEPS)} step(s)" in note and "3 layer(s)" in note


def test_pca_rejects_several_runs(synthetic):
    table, _ = synthetic
    two = pd.concat([table, table.assign(run="other")])
    with pytest.raises(ValueError, match="one run"):
        pca_explained_variance(two)


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


def test_missing_steps():
    table = make_table({"a": np.zeros((3, 1))}, layers=["l.0"], steps=[0, 2, 8])
    assert missing_steps(table, [0, 1, 2, 4, 8, 16]) == [1, 4, 16]
    assert missing_steps(table, [8, 0]) == []
    assert missing_steps(table.iloc[0:0], [3, 1]) == [1, 3]


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
