"""The induction study figure (ckptlens.plots.studies.induction) draws the table values, keeps run
colours, and stays readable; so do the other study figures (one test file each).

The figures are checked through the ``_figure_*`` functions, which return the Figure: lines'
data are compared with the table, panels counted, colours and scales read back. The public
wrappers are checked for an atomic PNG write and the "no data" figure on empty input.
``helpers.render_all`` draws every figure from realistic synthetic data (``python -m
tests.plots.studies.helpers`` writes them to /tmp/study_plots for a look).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba

from ckptlens.plots.studies import _common, induction
from tests.plots.studies.helpers import (
    RUNS,
    assert_png,
    assert_readable,
    axes_by_label,
    data_lines,
    event_steps,
    induction_data,
    line_of,
)

# --------------------------------------------------------------------------------------------
# 1. induction study
# --------------------------------------------------------------------------------------------


def small_induction(**kw):
    kw.setdefault("steps", [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 1000])
    kw.setdefault("ks", (1, 2))
    return induction_data(**kw)


def test_induction_values_baseline_colours_and_scale():
    tables, logs, events = small_induction()
    fig = induction._figure_induction_study(tables, logs, events=events)
    axes = axes_by_label(fig)
    # top row (3) + legend + per k: 2 overlap panels; 2 full-rank token panels
    assert set(axes) == {
        "loss",
        "id_error",
        "ood_error",
        "legend",
        "qk_ov.k1",
        "embed_ov.k1",
        "qk_ov.k2",
        "embed_ov.k2",
        "token_zscore",
        "token_mismatch",
    }
    assert axes["token_zscore"].get_title().endswith("(full rank)")
    run = "pool 4096"
    t = tables[run]
    # the max over the 4 head pairs, per step
    want = t[t["metric"] == "qk_ov_overlap_max.k2"].groupby("step")["value"].max()
    ln = line_of(axes["qk_ov.k2"], run)
    np.testing.assert_array_equal(ln.get_xdata(), want.index.to_numpy(dtype=float))
    np.testing.assert_allclose(ln.get_ydata(), want.to_numpy())
    assert "max over 4 head pairs" in axes["qk_ov.k2"].get_ylabel()
    # embed panel: only the embed~ labels
    t_e = t[(t["metric"] == "embed_ov_overlap_max.k1")]
    assert set(t_e["layer"]) == {"embed~blocks.0.attn.head0.ov", "embed~blocks.0.attn.head1.ov"}
    np.testing.assert_allclose(
        line_of(axes["embed_ov.k1"], run).get_ydata(), t_e.groupby("step")["value"].max().to_numpy()
    )
    # mismatch: lower is better -> best pair = min
    t_m = t[t["metric"] == "qk_ov_token_mismatch"]
    np.testing.assert_allclose(
        line_of(axes["token_mismatch"], run).get_ydata(), t_m.groupby("step")["value"].min().to_numpy()
    )
    # baseline: one grey dashed line (same d for every run), at the _random values
    base = [ln for ln in axes["qk_ov.k1"].get_lines() if ln.get_gid() == "random"]
    assert len(base) == 1 and base[0].get_label() == "random subspaces" and base[0].get_linestyle() == "--"
    np.testing.assert_allclose(base[0].get_ydata(), 0.11)
    # training log values
    np.testing.assert_allclose(line_of(axes["ood_error"], run).get_ydata(), logs[run]["ood_error"].to_numpy())
    assert axes["loss"].get_yscale() == "log" and "log scale" in axes["loss"].get_ylabel()
    # one colour per run in every panel; three distinct colours
    colours = {}
    for name, ax in axes.items():
        for ln in data_lines(ax):
            colours.setdefault(ln.get_label(), set()).add(to_rgba(ln.get_color()))
    assert set(colours) == set(tables)
    assert all(len(c) == 1 for c in colours.values()) and len({next(iter(c)) for c in colours.values()}) == 3
    # log-spaced checkpoints: symlog on every step axis, also for the training curves
    for name in ("loss", "ood_error", "qk_ov.k1", "token_mismatch"):
        assert axes[name].get_xscale() == "symlog", name
    assert axes["loss"].get_xlim()[1] >= 8000  # the dense log reaches beyond the last checkpoint
    legend_texts = [t.get_text() for t in axes["legend"].get_legend().get_texts()]
    assert legend_texts[:3] == list(RUNS) and any("random" in x for x in legend_texts)
    assert any("change point of the loss" in x for x in legend_texts)


def test_induction_events_only_where_relevant():
    tables, logs, events = small_induction()
    fig = induction._figure_induction_study(tables, logs, events=events)
    axes = axes_by_label(fig)
    loss_cps = sorted(events[(events["kind"] == "change_point") & (events["metric"] == "loss")]["step"])
    for name in ("loss", "id_error", "ood_error"):
        assert event_steps(axes[name]) == loss_cps  # "converged" rows are not drawn
    # the k1 overlap change points in the k1 panel only, in the run's colour
    metric_cps = sorted(events[events["metric"] == "qk_ov_overlap_max.k1"]["step"])
    assert event_steps(axes["qk_ov.k1"]) == metric_cps
    for name in ("qk_ov.k2", "embed_ov.k1", "token_zscore"):
        assert event_steps(axes[name]) == []
    ev = [ln for ln in axes["qk_ov.k1"].get_lines() if ln.get_gid() == "change_point"]
    run_of = {float(r.step): r.run for r in events[events["metric"] == "qk_ov_overlap_max.k1"].itertuples()}
    for ln in ev:
        run = run_of[float(ln.get_xdata()[0])]
        assert to_rgba(ln.get_color()) == to_rgba(line_of(axes["qk_ov.k1"], run).get_color())
        assert ln.get_linestyle() == "--"
    # an event of another layer of the same metric is not drawn
    other = events.assign(layer="blocks.9.attn.head0.qk~blocks.8.attn.head0.ov")
    fig = induction._figure_induction_study(tables, logs, events=other)
    assert event_steps(axes_by_label(fig)["qk_ov.k1"]) == []


def test_induction_per_k_token_metrics_and_layout():
    tables, logs, events = small_induction(ks=(1, 2, 4), token_ks=True)
    fig = induction._figure_induction_study(tables, logs, ks=[1, 4], events=events)
    axes = axes_by_label(fig)
    assert {"qk_ov.k1", "qk_ov.k4", "token_zscore.k1", "token_zscore.k4", "token_mismatch.k4"} <= set(axes)
    assert "qk_ov.k2" not in axes
    assert sum(1 for ax in fig.axes if ax.get_label() != "legend") == 3 + 2 * 4
    assert "rank k = 4" in axes["token_zscore.k4"].get_title()
    t = tables["unbounded"]
    want = t[t["metric"] == "qk_ov_token_diag_zscore.k4"].groupby("step")["value"].max()
    np.testing.assert_allclose(line_of(axes["token_zscore.k4"], "unbounded").get_ydata(), want.to_numpy())
    assert_readable(fig)


def test_induction_missing_metrics_and_logs_tolerated(tmp_path, no_data_calls):
    tables, logs, _ = small_induction()
    # no token metrics, no embed metrics, one run without a log
    stripped = {r: t[t["metric"].str.startswith("qk_ov_overlap")] for r, t in tables.items()}
    logs = {r: lg for r, lg in logs.items() if r != "unbounded"}
    fig = induction._figure_induction_study(stripped, logs)
    axes = axes_by_label(fig)
    assert "token_zscore" not in axes and not data_lines(axes["embed_ov.k1"])
    assert "not computed" in axes["embed_ov.k1"].texts[0].get_text()
    assert len(data_lines(axes["loss"])) == 2 and len(data_lines(axes["qk_ov.k1"])) == 3
    # only logs, no metrics table
    fig = induction._figure_induction_study({}, logs)
    assert set(axes_by_label(fig)) == {"loss", "id_error", "ood_error", "legend"}
    assert axes_by_label(fig)["loss"].get_xscale() == "linear"  # steps every 10: not log-spaced
    # empty input: "no data" PNG
    p = induction.plot_induction_study({}, {}, tmp_path / "none.png")
    assert_png(p) is not None and no_data_calls == [p]
    with pytest.raises(_common.NoData):
        induction._figure_induction_study({"a": pd.DataFrame()}, {"a": pd.DataFrame()})


def test_induction_nan_values_are_gaps_and_odd_inputs_tolerated():
    tables, logs, events = small_induction()
    tables = {r: d.drop(columns="run").assign(step=d["step"].astype(float)) for r, d in tables.items()}
    t = tables["pool 4096"]
    t.loc[(t["metric"] == "qk_ov_overlap_max.k1") & (t["step"] == 4), "value"] = np.nan  # all pairs: a gap
    t.loc[(t["metric"] == "qk_ov_overlap_max.k1") & (t["step"] == 8) & t["layer"].str.contains("head1.ov"), "value"] = (
        np.nan
    )  # some pairs: the max of the others
    tables["pool 256"].loc[tables["pool 256"]["metric"] == "qk_ov_overlap_max.k2", "value"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from all-NaN reductions, no layout warning
        fig = induction._figure_induction_study(
            tables, {**logs, "extra": None}, events=events[["run", "metric", "layer", "kind", "step"]]
        )
    axes = axes_by_label(fig)
    y = dict(
        zip(line_of(axes["qk_ov.k1"], "pool 4096").get_xdata(), line_of(axes["qk_ov.k1"], "pool 4096").get_ydata())
    )
    assert np.isnan(y[4.0])
    keep = t[(t["metric"] == "qk_ov_overlap_max.k1") & (t["step"] == 8)]["value"]
    assert y[8.0] == keep.max()
    assert np.isnan(line_of(axes["qk_ov.k2"], "pool 256").get_ydata()).all()
    assert event_steps(axes["loss"]) == sorted(
        events[(events["kind"] == "change_point") & (events["metric"] == "loss")]["step"]
    )
