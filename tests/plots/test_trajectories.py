"""Metric trajectories (ckptlens.plots.trajectories): one PNG per metric, runs as panels."""

from __future__ import annotations

import numpy as np
import pytest

from ckptlens.plots import (
    plot_metric_trajectories,
)
from tests.plots.helpers import assert_no_leftovers, assert_png, tidy

# ------------------------------------------------------------------------------ each figure


def test_trajectories_one_png_per_metric_with_runs_as_panels(tmp_path, no_data_calls):
    out = tmp_path / "new" / "dir"  # parents are created
    paths = plot_metric_trajectories(tidy(runs=("run-a", "run-b")), out)
    names = sorted(p.name for p in paths)
    assert names == ["trajectory_grad_cos_sim.png", "trajectory_weight_norm.png"]
    for p in paths:
        assert_png(p)
    assert not no_data_calls
    assert sorted(p.name for p in out.iterdir()) == names
    assert_no_leftovers(tmp_path)


def test_trajectories_legend_for_few_layers_and_colorbar_for_many(tmp_path):
    few = plot_metric_trajectories(tidy(metrics=("m",), layers=2), tmp_path / "few")
    many = plot_metric_trajectories(tidy(metrics=("m",), layers=12, steps=range(0, 500, 25)), tmp_path / "many")
    assert_png(few[0])
    assert_png(many[0])
    assert_no_leftovers(tmp_path)


def test_all_nan_metric_gives_no_data_figure_under_its_name(tmp_path, no_data_calls):
    df = tidy(metrics=("ok", "broken"), layers=1)
    df.loc[df.metric == "broken", "value"] = np.nan
    paths = plot_metric_trajectories(df, tmp_path)
    assert sorted(p.name for p in paths) == ["trajectory_broken.png", "trajectory_ok.png"]
    assert no_data_calls == [tmp_path / "trajectory_broken.png"]


# ------------------------------------------------------------------------------ by kind of module


def model_table(blocks, heads, steps=range(0, 400, 50), runs=("r",), sizes=(20.0, 350.0), seed=0):
    """A MiniLM-shaped table: per block the attention output, the MLP output, the block output
    and heads × (OV, QK) pieces, each series at its own size."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = []
    for b in range(blocks):
        names += [f"encoder.layer.{b}.attention.output.dense", f"encoder.layer.{b}.output.dense", f"encoder.layer.{b}"]
        names += [f"encoder.layer.{b}.attention.head{h}.{p}" for h in range(heads) for p in ("ov", "qk")]
    size = dict(zip(names, rng.uniform(*sizes, len(names))))
    rows = [(r, s, n, "rank", size[n] * (1 + 0.01 * s / 400)) for r in runs for n in names for s in steps]
    return pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])


def saved_figures(monkeypatch):
    """path name -> Figure of every figure saved, written as PNG but kept (not cleared); and
    ``name:legends`` / ``name:figbox``, the laid-out extents of its legends and of the figure."""
    from ckptlens.plots import _style

    figs = {}

    def save(fig, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=_style.DPI)
        figs[path.name] = fig
        figs[path.name + ":legends"] = [lg.get_window_extent() for ax in fig.axes if (lg := ax.get_legend())]
        figs[path.name + ":figbox"] = fig.bbox
        return path

    monkeypatch.setattr(_style, "save", save)
    return figs


def test_a_panel_per_kind_heatmaps_beyond_twelve_series_lines_below(tmp_path, monkeypatch):
    import pandas as pd

    figs = saved_figures(monkeypatch)
    events = pd.DataFrame(
        [
            {
                "run": "r",
                "metric": "rank",
                "layer": "encoder.layer.1.attention.head2.ov",
                "kind": "change_point",
                "step": 150,
            }
        ]
    )
    (path,) = plot_metric_trajectories(model_table(blocks=6, heads=12), tmp_path, events=events)
    assert_png(path)
    fig = figs["trajectory_rank.png"]
    panels = {ax.get_label(): ax for ax in fig.axes if ax.get_label() and ax.get_label() != "<colorbar>"}
    assert list(panels) == ["attention output", "per-head OV", "per-head QK", "MLP output", "block output"]
    # 72 per-head pieces: a heatmap, rows (block, head) in order, columns the 8 checkpoints
    (image,) = panels["per-head OV"].get_images()
    assert image.get_array().shape == (72, 8)
    assert [t.get_text() for t in panels["per-head OV"].get_yticklabels()][:2] == ["block 0", "block 1"]
    # its change point: a tick at row (block 1, head 2) = 14, between the columns of steps 100 and 150
    (ticks,) = panels["per-head OV"].collections
    np.testing.assert_allclose(ticks.get_offsets(), [[2.5, 14]])
    assert not panels["per-head QK"].collections  # the change point is an OV piece's
    # 6 attention outputs: lines
    assert not panels["attention output"].get_images() and len(panels["attention output"].get_lines()) == 6
    # sizes 20 .. 350: each series divided by its median, and the axis says so
    assert "÷ each layer's median" in panels["attention output"].get_ylabel()
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(colorbars) == 2 and all("÷ each layer's median" in c.get_ylabel() for c in colorbars)
    # after normalisation, row b·12+h of the OV heatmap is that piece's values ÷ its median
    np.testing.assert_allclose(np.nanmedian(image.get_array(), axis=1), 1.0)
    # every legend lies inside the figure (nothing cut at its edges)
    box = figs["trajectory_rank.png:figbox"]
    for lg in figs["trajectory_rank.png:legends"]:
        assert lg.x0 >= box.x0 - 1 and lg.x1 <= box.x1 + 1 and lg.y0 >= box.y0 - 1 and lg.y1 <= box.y1 + 1


def test_pythia_160m_shaped_legend_is_not_cut(tmp_path, monkeypatch):
    """The issue's case: 36 series (three sublayers × 12 blocks), whose legend row was cut."""
    import pandas as pd

    figs = saved_figures(monkeypatch)
    rows = [
        ("p", s, f"gpt_neox.layers.{b}.{sl}", "cka", 0.5 + 0.01 * b + 0.001 * s)
        for b in range(12)
        for sl in ("attention.query_key_value", "attention.dense", "mlp.dense_4h_to_h")
        for s in range(0, 300, 20)
    ]
    events = pd.DataFrame(
        [
            {
                "run": "p",
                "metric": "cka",
                "layer": "gpt_neox.layers.3.attention.dense",
                "kind": "change_point",
                "step": 100,
            }
        ]
    )
    plot_metric_trajectories(pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"]), tmp_path, events)
    fig = figs["trajectory_cka.png"]
    labels = [ax.get_label() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert labels == ["attention output", "MLP output", "other"]
    box = figs["trajectory_cka.png:figbox"]
    legends = figs["trajectory_cka.png:legends"]
    assert len(legends) == 3
    for lg in legends:
        assert lg.x0 >= box.x0 - 1 and lg.x1 <= box.x1 + 1
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "3.attention.dense" in texts and "change point" in texts


def test_pythia_1_4b_shaped_metric_is_bounded_and_says_what_it_left_out(tmp_path, monkeypatch):
    """24 blocks × 16 heads: 384 OV and 384 QK pieces, two runs side by side; and 30 blocks ×
    16 heads (480 pieces per kind, more than MAX_HEATMAP_ROWS)."""
    from ckptlens.plots import trajectories

    figs = saved_figures(monkeypatch)
    (path,) = plot_metric_trajectories(model_table(24, 16, steps=range(0, 2700, 100), runs=("a", "b")), tmp_path / "a")
    assert_png(path)
    from tests.plots.test_scaling import assert_bounded

    assert_bounded(path)
    fig = figs["trajectory_rank.png"]
    assert "per-head OV|a" in [ax.get_label() for ax in fig.axes]
    (path,) = plot_metric_trajectories(model_table(30, 16, steps=range(0, 1000, 100)), tmp_path / "b")
    assert_bounded(path)
    text = figs["trajectory_rank.png"]._suptitle.get_text().replace("\n", " ")
    rows = trajectories.MAX_HEATMAP_ROWS
    assert f"per-head OV: {rows} of 480 series shown" in text and "metrics.parquet" in text


def test_runs_side_by_side_share_a_kinds_colour_scale_and_y_axis(tmp_path, monkeypatch):
    """Run comparison: runs as columns, kinds as rows; the heatmaps of a kind share one colour
    scale and its line panels one y axis, so that the runs compare."""
    figs = saved_figures(monkeypatch)
    table = model_table(blocks=2, heads=8, runs=("a", "b"), sizes=(1.0, 2.0))
    table.loc[table["run"] == "b", "value"] *= 3  # run b's values are three times run a's
    plot_metric_trajectories(table, tmp_path)
    fig = figs["trajectory_rank.png"]
    panels = {ax.get_label(): ax for ax in fig.axes if ax.get_label() and ax.get_label() != "<colorbar>"}
    assert list(panels)[:4] == ["attention output|a", "attention output|b", "per-head OV|a", "per-head OV|b"]
    (ia,), (ib,) = panels["per-head OV|a"].get_images(), panels["per-head OV|b"].get_images()
    assert ia.get_clim() == ib.get_clim()
    lo, hi = ia.get_clim()
    assert lo < 2.0 and hi > 3.0  # spans both runs: 1..2 and 3..6
    a, b = panels["attention output|a"], panels["attention output|b"]
    assert a.get_shared_y_axes().joined(a, b)
    assert "÷" not in a.get_ylabel()  # sizes alike: drawn as they are


def test_normalised_only_where_sizes_differ_and_series_move_little_against_them():
    import pandas as pd

    from ckptlens.plots.trajectories import size_ratio

    def rows(series):
        return pd.DataFrame([(f"l{i}", v) for i, vals in enumerate(series) for v in vals], columns=["layer", "value"])

    # effective ranks of 20 and 350 drifting by 2 %: normalised (ratio 17.5)
    assert size_ratio(rows([[20.0, 19.6], [350.0, 343.0]])) == pytest.approx(346.5 / 19.8)
    # a CKA from 0.05 to 1 beside one at 0.6 .. 1: it moves across the spread, drawn as it is
    assert size_ratio(rows([[0.02, 0.05, 0.9, 1.0], [0.6, 0.8, 1.0, 1.0]])) is None
    # sizes alike, or a signed metric: as it is
    assert size_ratio(rows([[1.0, 1.1], [2.0, 2.1]])) is None
    assert size_ratio(rows([[-1.0, 1.0], [20.0, 21.0]])) is None
