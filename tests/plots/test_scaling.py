"""Figures that scale: a multi-valued metric is one figure of small multiples, and every figure stays
within the size limit (at most MAX_PIXELS on either side) however large its input, saying in the
figure what it left out."""

from __future__ import annotations

import itertools
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from ckptlens.plots import _style, correlation, plot_correlation, plot_metric_trajectories, trajectories
from ckptlens.plots.studies import compare, gradient_pca, induction, model_size, rotary_sweep

STEPS = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2000, 4000]


def tidy(metrics, layers=3, runs=("r",), steps=STEPS, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    names = [f"blocks.{i}" for i in range(layers)] if isinstance(layers, int) else list(layers)
    rows = list(itertools.product(runs, steps, names, metrics))
    df = pd.DataFrame(rows, columns=["run", "step", "layer", "metric"])
    df["value"] = rng.uniform(0.1, 1.0, len(df))
    return df


@pytest.fixture
def saved(monkeypatch) -> dict:
    """path name -> Figure of every figure saved (the figures are not written)."""
    figs = {}

    def save(fig, path):
        figs[Path(path).name] = fig
        return Path(path)

    monkeypatch.setattr(_style, "save", save)
    return figs


def panels(fig) -> list:
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() and ax.get_label() != "<colorbar>"]


def png_size(path) -> tuple[int, int]:
    h, w = mpimg.imread(path).shape[:2]
    return w, h


def assert_bounded(path) -> None:
    w, h = png_size(path)
    assert w <= _style.MAX_PIXELS and h <= _style.MAX_PIXELS, (path, w, h)


# --------------------------------------------------------------------------------------------
# trajectories of a multi-valued metric
# --------------------------------------------------------------------------------------------


def test_multi_valued_metric_is_one_figure_with_a_panel_per_value(tmp_path, saved):
    values = [f"activation_pca_evr.pc{k}" for k in (1, 2, 3, 4, 10)]
    table = tidy(values + ["weight_norm"])
    paths = plot_metric_trajectories(table, tmp_path)
    assert [p.name for p in paths] == ["trajectory_activation_pca_evr.png", "trajectory_weight_norm.png"]
    fig = saved["trajectory_activation_pca_evr.png"]
    axes = panels(fig)
    assert [ax.get_label() for ax in axes] == values  # natural order: pc10 after pc4
    assert [ax.get_title() for ax in axes] == ["pc1", "pc2", "pc3", "pc4", "pc10"]
    ax = axes[2]
    want = table[(table["metric"] == "activation_pca_evr.pc3") & (table["layer"] == "blocks.1")]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "blocks.1"[len("blocks.") :])
    np.testing.assert_allclose(line.get_ydata(), want.sort_values("step")["value"])
    assert axes[0].get_shared_x_axes().joined(axes[0], axes[4])  # shared x
    assert "\n" not in fig._suptitle.get_text()  # nothing left out: no note
    assert len(panels(saved["trajectory_weight_norm.png"])) == 1


def test_each_panel_of_a_multi_valued_metric_marks_only_its_own_value(saved, tmp_path):
    values = ["m.a", "m.b", "m.c"]
    table = tidy(values, layers=["blocks.0"])
    events = pd.DataFrame(
        [
            {"run": "r", "metric": "m.a", "layer": "blocks.0", "kind": "converged", "step": 64},
            {"run": "r", "metric": "m.b", "layer": "blocks.0", "kind": "converged", "step": 512},
            {"run": "r", "metric": "m.b", "layer": "blocks.0", "kind": "change_point", "step": 8},
        ]
    )
    plot_metric_trajectories(table, tmp_path, events=events)
    axes = {ax.get_label(): ax for ax in panels(saved["trajectory_m.png"])}

    def circles(ax):
        return [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_marker() == "o" and ln.get_linestyle() == "None"]

    def ticks(ax):  # the change point: a dashed tick and a dotted guide line at its step
        xs = [ln.get_xdata() for ln in ax.get_lines() if len(ln.get_xdata()) == 2]
        return sorted({float(x[0]) for x in xs if x[0] == x[1]})

    assert circles(axes["m.a"]) == [64] and ticks(axes["m.a"]) == []
    assert circles(axes["m.b"]) == [512] and ticks(axes["m.b"]) == [8]
    assert circles(axes["m.c"]) == [] and ticks(axes["m.c"]) == []


def test_rotary_sweep_values_capped_with_a_note(tmp_path):
    values = [f"qk_ov_rotary_sweep.k{k}_r{r}" for k in (1, 2, 4, 8, 16) for r in range(7)]
    values += [f"qk_ov_rotary_sweep.zscore_r{r}" for r in range(5)]
    table = tidy(values, layers=["blocks.1.attn.head0.qk~blocks.0.attn.head1.ov"])
    rows = trajectories._rows(trajectories._typed(table), [np.arange(len(table))])
    fig = trajectories._figure_values(
        rows, "qk_ov_rotary_sweep", trajectories.metric_groups(values)["qk_ov_rotary_sweep"]
    )
    axes = panels(fig)
    assert len(axes) == trajectories.MAX_VALUE_PANELS == 24
    assert axes[0].get_label() == "qk_ov_rotary_sweep.k1_r0" and axes[-1].get_label() == "qk_ov_rotary_sweep.zscore_r4"
    assert "24 of 40 values shown" in fig._suptitle.get_text() and "metrics.parquet" in fig._suptitle.get_text()
    # written: one PNG, within the size limit
    (path,) = plot_metric_trajectories(table, tmp_path)
    assert path.name == "trajectory_qk_ov_rotary_sweep.png"
    assert_bounded(path)


def test_multi_valued_metric_of_several_runs_and_many_layers(saved, tmp_path):
    values = [f"m.v{i}" for i in range(10)]
    table = tidy(values, layers=200, runs=("a", "b", "c", "d", "e"), steps=[0, 10, 20])
    plot_metric_trajectories(table, tmp_path)
    fig = saved["trajectory_m.png"]
    axes = panels(fig)
    # 4 runs side by side (columns), 6 values each: 24 panels
    assert len(axes) == 24 and axes[0].get_label() == "m.v0|a" and axes[3].get_label() == "m.v0|d"
    text = fig._suptitle.get_text()
    assert "6 of 10 values shown" in text and "4 of 5 runs shown" in text
    assert f"{trajectories.MAX_LAYER_LINES} of 200 layers drawn" in text
    assert len(axes[0].get_lines()) == trajectories.MAX_LAYER_LINES


def test_single_valued_metric_many_runs_capped(saved, tmp_path):
    table = tidy(["weight_norm"], layers=2, runs=[f"run{i:02d}" for i in range(15)], steps=[0, 10])
    plot_metric_trajectories(table, tmp_path)
    fig = saved["trajectory_weight_norm.png"]
    assert len(panels(fig)) == trajectories.MAX_RUN_PANELS
    assert "12 of 15 runs shown" in fig._suptitle.get_text()


def test_huge_trajectory_figures_are_bounded(tmp_path):
    values = [f"qk_ov_rotary_sweep.k{k}_r{r}" for k in range(1, 9) for r in range(10)]
    table = tidy(values + ["weight_norm"], layers=8, runs=[f"r{i}" for i in range(13)], steps=[0, 100, 200])
    for path in plot_metric_trajectories(table, tmp_path):
        assert_bounded(path)


# --------------------------------------------------------------------------------------------
# correlation heatmaps
# --------------------------------------------------------------------------------------------


def all_pairs(n_metrics, layers=("layer_mean",), seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    metrics = [f"metric_{i:02d}" for i in range(n_metrics)]
    rows = [("r", x, y, layer, rng.uniform(-1, 1)) for x, y in itertools.combinations(metrics, 2) for layer in layers]
    return pd.DataFrame(rows, columns=["run", "x_metric", "y_metric", "layer", "pearson_r"])


def test_per_layer_heatmap_of_many_pairs_and_layers_is_bounded(tmp_path, saved):
    corr = all_pairs(75, layers=[f"gpt_neox.layers.{i}" for i in range(100)] + ["mean"])  # 2,775 pairs
    assert corr[["x_metric", "y_metric"]].drop_duplicates().shape[0] == 2775
    plot_correlation(corr, tmp_path / "c.png")
    fig = saved["c.png"]
    text = fig._suptitle.get_text()
    ax = fig.axes[0]
    n_cols = len(ax.get_xticks())
    assert 1 <= n_cols < 2775 and f"the first {n_cols} of 2775 metric pairs shown" in text
    assert f"{correlation.MAX_LAYER_ROWS} of 100 layers shown" in text and "correlation.csv" in text
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == correlation.MAX_LAYER_ROWS + 1 and labels[-1] == "mean over layers"
    assert labels[0] == "0" and labels[-2] == "99"  # the first and the deepest layer kept


def test_per_layer_heatmap_png_size(tmp_path):
    corr = all_pairs(75, layers=[f"gpt_neox.layers.{i}" for i in range(20)])
    path = plot_correlation(corr, tmp_path / "c.png")
    assert_bounded(path)


def test_all_pairs_layer_mean_table_is_a_square_metric_matrix(saved, tmp_path):
    # clustered order = order of first appearance; here a permutation of the names
    order = [f"metric_{i:02d}" for i in (3, 1, 4, 0, 5, 9, 2, 6, 8, 7)]
    rank = {m: i for i, m in enumerate(order)}
    rng = np.random.default_rng(1)
    rows = [
        (x, y) if k % 2 == 0 else (y, x)  # the table may name a pair either way round
        for k, (x, y) in enumerate(itertools.combinations(order, 2))
    ]
    corr = pd.DataFrame(
        [("r", x, y, "layer_mean", rng.uniform(-1, 1)) for x, y in rows],
        columns=["run", "x_metric", "y_metric", "layer", "pearson_r"],
    )
    assert correlation.metric_order(corr) == order
    plot_correlation(corr, tmp_path / "s.png")
    fig = saved["s.png"]
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == order
    assert [t.get_text() for t in ax.get_xticklabels()] == order
    grid = ax.images[0].get_array()
    assert grid.shape == (10, 10) and np.allclose(np.diag(grid), 1.0) and np.allclose(grid, grid.T)
    row = corr.iloc[7]
    assert grid[rank[row.x_metric], rank[row.y_metric]] == pytest.approx(row.pearson_r)
    assert len(ax.texts) == 100  # few metrics: values written in the cells
    assert "\n" not in fig._suptitle.get_text()


def test_square_matrix_capped_at_forty_metrics(saved, tmp_path):
    corr = all_pairs(75)
    plot_correlation(corr, tmp_path / "s.png")
    ax = saved["s.png"].axes[0]
    assert len(ax.get_yticklabels()) == correlation.MAX_SQUARE_METRICS == 40
    assert "40 of 75 metrics shown" in saved["s.png"]._suptitle.get_text()


def test_square_matrix_png_size(tmp_path):
    assert_bounded(plot_correlation(all_pairs(75), tmp_path / "s.png"))


def test_not_all_pairs_keeps_the_pair_columns(saved, tmp_path):
    corr = all_pairs(5).iloc[:-1]  # one pair missing: not an all-pairs table
    plot_correlation(corr, tmp_path / "c.png")
    assert [t.get_text() for t in saved["c.png"].axes[0].get_yticklabels()] == ["layer-mean trajectories"]


# --------------------------------------------------------------------------------------------
# the other figures
# --------------------------------------------------------------------------------------------


def test_pca_many_runs_and_components_bounded(tmp_path):
    from ckptlens.plots.pca import _figure_pca

    rows = [
        (f"run{r}", m, c, 1 / 50, c / 50)
        for r in range(10)
        for m in ("layer_mean", "layer_metric")
        for c in range(1, 51)
    ]
    ex = pd.DataFrame(rows, columns=["run", "matrix", "component", "explained_variance_ratio", "cumulative"])
    fig = _figure_pca(ex)
    assert "7 of 10 runs shown" in fig._suptitle.get_text()
    assert_bounded(_style.save(fig, tmp_path / "p.png"))


def test_training_curves_many_runs_bounded(tmp_path):
    from ckptlens.plots import plot_training_curves

    log = pd.DataFrame(
        [(f"run{r:02d}", s, 1.0 / (1 + s + r)) for r in range(30) for s in range(0, 100, 10)],
        columns=["run", "step", "loss"],
    )
    assert_bounded(plot_training_curves(log, tmp_path / "t.png"))


def test_compare_many_runs_and_panels_bounded(tmp_path):
    table = tidy(["weight_norm"], layers=40, runs=[f"seed {i:02d}" for i in range(25)], steps=[0, 10, 100])
    fig = compare._figure_run_comparison(table, "weight_norm", max_panels=100)
    assert len([ax for ax in fig.axes if ax.get_visible()]) == compare.MAX_PANELS
    text = fig._suptitle.get_text()
    assert "24 of 40 layers" in text and "20 of 25 runs" in text
    assert_bounded(_style.save(fig, tmp_path / "c.png"))


def test_induction_many_ks_bounded(tmp_path):
    metrics = [f"qk_ov_overlap_max.k{k}" for k in range(1, 11)]
    table = tidy(metrics, layers=["blocks.1.attn.head0.qk~blocks.0.attn.head0.ov"])
    fig = induction._figure_induction_study({"a": table}, {})
    assert "qk_ov.k7" in {ax.get_label() for ax in fig.axes} and "qk_ov.k8" not in {ax.get_label() for ax in fig.axes}
    assert "of 10 shown" in fig._suptitle.get_text()
    assert_bounded(_style.save(fig, tmp_path / "i.png"))


def test_rotary_sweep_many_runs_and_ranks_bounded(tmp_path):
    metrics = [f"qk_ov_rotary_sweep.k{k}_r{r}" for k in range(1, 9) for r in (0, 1, 2)]
    tables = {f"run{i}": tidy(metrics, layers=["blocks.1~blocks.0"], steps=[0, 10]) for i in range(9)}
    fig = rotary_sweep._figure_rotary_sweep(tables)
    text = fig._suptitle.get_text()
    assert "8 of 9 runs shown" in text and "6 of 8 panels per run shown" in text
    assert_bounded(_style.save(fig, tmp_path / "r.png"))


def test_gradient_pca_many_hidden_layers_bounded(tmp_path):
    layers = [f"blocks.{i}.linear|out{o}" for i in range(12) for o in (0, 1)]
    table = tidy(["gradient_pca_evr.pc1", "gradient_pca_evr.pc2"], layers=layers, steps=[0, 10, 100])
    fig = gradient_pca._figure_gradient_pca_study(table)
    assert len(fig.axes) == 2 * gradient_pca.MAX_HIDDEN_ROWS
    assert "8 of 12 hidden layers shown" in fig._suptitle.get_text()
    assert_bounded(_style.save(fig, tmp_path / "g.png"))


def test_model_size_many_pairs_bounded(tmp_path):
    corr = pd.concat([all_pairs(12).assign(run=r) for r in ("pythia-70m", "pythia-160m")], ignore_index=True)
    sizes = {"pythia-70m": 70e6, "pythia-160m": 160e6}
    fig = model_size._figure_model_size_study(None, corr, sizes)
    assert len(fig.legends[0].get_texts()) == model_size.MAX_PAIRS + 2
    assert "the first 10 of 66 metric pairs shown" in fig._suptitle.get_text()
    assert_bounded(_style.save(fig, tmp_path / "m.png"))
