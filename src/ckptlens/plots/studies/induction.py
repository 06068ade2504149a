"""The ``induction`` figure: training curves and K-composition circuit metrics of the induction
task, one row per subspace rank k, runs (data settings) coloured alike everywhere."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...store.layers import split_pair
from . import FigureKind, RunFacts, register
from ._common import (
    BASELINE_STYLE,
    KS_OPTION,
    NoData,
    capped_runs,
    change_points,
    draw_events,
    event_handle,
    events_of,
    legend_parts,
    markers,
    metric_names,
    note,
    pair_note,
    reduce_layers,
    relabelled,
    run_colours,
    step_x,
    tidy,
    training_log,
)

INDUCTION_TITLE = "induction task: training curves and K-composition circuit formation"
#: At most this many ranks k (rows of panels) per figure.
MAX_K_ROWS = 7
_QK_OV_K = re.compile(r"(?:qk_ov|embed_ov)_overlap_max\.k(\d+)$")
_EMBED = "embed"
#: The metrics the figure draws (and copies out of the tables): these names and their values.
_DRAWN = ("qk_ov_overlap_max", "embed_ov_overlap_max", "qk_ov_token_diag_zscore", "qk_ov_token_mismatch")


def _drawn(name: str) -> bool:
    return name.partition(".")[0] in _DRAWN


def _is_qk_ov(layer: str) -> bool:
    pair = split_pair(layer)
    return pair is not None and pair[0] != _EMBED


def _is_embed_ov(layer: str) -> bool:
    pair = split_pair(layer)
    return pair is not None and pair[0] == _EMBED


@dataclass
class _Study:
    """The cleaned inputs of one induction figure and what was drawn (for the legend)."""

    tables: dict[str, pd.DataFrame]
    logs: dict[str, pd.DataFrame]
    runs: list[str]
    ks: list[int]
    metrics: set[str]
    events: pd.DataFrame | None
    notes: list[str] = field(default_factory=list)
    drawn: dict[str, bool] = field(
        default_factory=lambda: {"baseline": False, "loss_events": False, "metric_events": False}
    )

    def __post_init__(self):
        self.colours = run_colours(self.runs)
        self.has_logs = any(len(lg) for lg in self.logs.values())
        self.ckpt_steps = np.unique(
            np.concatenate([t["step"].to_numpy(dtype=float) for t in self.tables.values()] + [np.array([])])
        )
        self.log_steps = np.unique(
            np.concatenate([lg["step"].to_numpy(dtype=float) for lg in self.logs.values()] + [np.array([])])
        )
        self.decide = self.ckpt_steps if self.ckpt_steps.size else self.log_steps

    def mode(self, base: str) -> str:
        """ "per_k" (``<base>.k{k}`` rows), "full" (``<base>`` rows) or "absent"."""
        if any(f"{base}.k{k}" in self.metrics for k in self.ks):
            return "per_k"
        return "full" if base in self.metrics else "absent"


def _has_rows(table) -> bool:
    """Whether ``table`` is a tidy table with a row that has a step (what :func:`tidy` keeps)."""
    if table is None or not len(table) or not {"step", "layer", "metric", "value"} <= set(table.columns):
        return False
    return bool(np.isfinite(pd.to_numeric(table["step"], errors="coerce").to_numpy(dtype=float)).any())


def _study(tables, logs, ks, events) -> _Study:
    has_rows = any(_has_rows(t) for t in (tables or {}).values())
    tables = {str(run): tidy(t, metric_names(t, _drawn)) for run, t in (tables or {}).items()}
    logs = {str(run): training_log(lg) for run, lg in (logs or {}).items()}
    runs = list(dict.fromkeys([*tables, *logs]))
    if not runs or not (has_rows or any(len(lg) for lg in logs.values())):
        raise NoData("neither a metrics table nor a training log has rows")
    runs, run_note = capped_runs(runs)
    metrics = set()
    for t in tables.values():
        metrics |= set(t["metric"].unique())
    if ks is None:
        ks = sorted({int(m.group(1)) for name in metrics if (m := _QK_OV_K.match(name))})
    ks = [int(k) for k in ks]
    notes = [run_note]
    if len(ks) > MAX_K_ROWS:
        notes.append(f"ranks k = {', '.join(map(str, ks[:MAX_K_ROWS]))} of {len(ks)} shown")
        ks = ks[:MAX_K_ROWS]
    return _Study(
        {r: t for r, t in tables.items() if r in runs},
        {r: lg for r, lg in logs.items() if r in runs},
        runs,
        ks,
        metrics,
        events,
        notes,
    )


def _training_row(fig, gs, st: _Study) -> None:
    """Loss, in- and out-of-distribution error vs step, one line per run."""
    from .. import _style

    cols = ("loss", "id_error", "ood_error")
    titles = ("training loss", "in-distribution error", "out-of-distribution error")
    ylabels = ("loss (log scale)", "error rate (fraction wrong)", "error rate (fraction wrong)")
    for i, (col, panel_title, ylabel) in enumerate(zip(cols, titles, ylabels)):
        ax = fig.add_subplot(gs[0, i], label=col)
        ax.set_title(panel_title)
        values = np.concatenate([lg[col].to_numpy(dtype=float) for lg in st.logs.values()] + [np.array([])])
        if not np.isfinite(values).any():
            note(ax, "no training log" if not st.has_logs else f"no {col} in the training logs")
            continue
        for run in st.runs:
            lg = st.logs.get(run)
            if lg is None or lg.empty:
                continue
            ax.plot(
                lg["step"].to_numpy(dtype=float),
                lg[col].to_numpy(dtype=float),
                color=st.colours[run],
                linewidth=1.2,
                label=run,
            )
            cps = change_points(st.events, run, "loss", ["model"])
            st.drawn["loss_events"] |= draw_events(ax, cps, st.colours[run]) > 0
        if col == "loss":
            if (values[np.isfinite(values)] > 0).any():
                _style.log_y(ax, values)
            else:
                ylabel = "loss"
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel(ylabel)
        step_x(ax, st.decide, np.union1d(st.log_steps, st.ckpt_steps) if st.ckpt_steps.size else st.log_steps)


def _metric_panel(ax, st: _Study, metric: str, pick, how: str, baseline: str | None = None) -> int:
    """Draw ``metric`` (reduced over the layers selected by ``pick``) for every run; returns the
    largest number of layers reduced over (0: nothing drawn)."""
    n_layers, steps_here = 0, []
    base_series: list[pd.Series] = []
    for run in st.runs:
        t = st.tables.get(run)
        if t is None or t.empty:
            continue
        sub = t[t["metric"] == metric]
        sub = sub[sub["layer"].map(pick)]
        if sub.empty:
            continue
        layers = sub["layer"].unique()
        n_layers = max(n_layers, len(layers))
        s = reduce_layers(sub, how)
        steps_here.extend(s.index)
        ax.plot(
            s.index.to_numpy(dtype=float),
            s.to_numpy(),
            color=st.colours[run],
            linewidth=1.4,
            label=run,
            **markers(len(s)),
        )
        st.drawn["metric_events"] |= draw_events(ax, change_points(st.events, run, metric, layers), st.colours[run]) > 0
        if baseline is not None:
            b = t[(t["metric"] == baseline) & t["layer"].map(pick)]
            if not b.empty:
                base_series.append(reduce_layers(b, "mean"))
    # The random baseline depends only on (d, k): one line unless the runs differ in d.
    shown: list[pd.Series] = []
    for b in base_series:
        if any(
            len(b) == len(o)
            and np.allclose(b.to_numpy(), o.to_numpy(), equal_nan=True)
            and np.array_equal(b.index, o.index)
            for o in shown
        ):
            continue
        ax.plot(
            b.index.to_numpy(dtype=float),
            b.to_numpy(),
            gid="random",
            label="random subspaces" if not shown else "_random subspaces",
            **BASELINE_STYLE,
        )
        shown.append(b)
        st.drawn["baseline"] = True
    if n_layers == 0:
        note(ax, f"{metric}\nnot computed")
    else:
        step_x(ax, st.decide, steps_here)
    return n_layers


def _overlap_rows(fig, gs, st: _Study, wide: bool) -> None:
    """Per rank k: QK–OV matching and embedding–OV matching, each with its random baseline."""
    for i, k in enumerate(st.ks):
        row = 1 + i
        for cell, wide_cell, name, pick, panel_title in (
            (gs[row, 0], gs[row, 0:2], "qk_ov", _is_qk_ov, f"QK–OV subspace matching, rank k = {k}"),
            (gs[row, 1], gs[row, 2:4], "embed_ov", _is_embed_ov, f"embedding–OV matching, rank k = {k}"),
        ):
            ax = fig.add_subplot(wide_cell if wide else cell, label=f"{name}.k{k}")
            metric = f"{name}_overlap_max.k{k}"
            n = _metric_panel(ax, st, metric, pick, "max", f"{metric}_random")
            ax.set_title(panel_title)
            if n:
                ax.set_ylim(-0.02, 1.02)
                ax.set_ylabel("max cos of principal angles" + pair_note(n))


_TOKEN_PANELS = (
    ("qk_ov_token_diag_zscore", "token_zscore", "token-space diagonal z-score", "z-score of diag(E·QK·OV·Eᵀ)", "max"),
    ("qk_ov_token_mismatch", "token_mismatch", "token mismatch ratio", "share of tokens not matched", "min"),
)


def _token_panels(fig, gs, st: _Study) -> None:
    """The token-space z-score and mismatch ratio: per k (``.k{k}`` metrics) or, full rank only,
    once as a larger panel (stacked when both are full rank)."""
    n_k = len(st.ks)
    modes = {base: st.mode(base) for base, *_ in _TOKEN_PANELS}
    non_per_k = [base for base, m in modes.items() if m != "per_k"]
    for col, (base, name, panel_title, ylabel, how) in zip((2, 3), _TOKEN_PANELS):
        if modes[base] == "per_k":
            cells = [(gs[1 + i, col], k) for i, k in enumerate(st.ks)]
        elif len(non_per_k) == 2 and n_k > 1:
            # both full rank: stacked wide panels in the right half of the k rows
            half = math.ceil(n_k / 2)
            cells = [(gs[1 : 1 + half, 2:4] if col == 2 else gs[1 + half : 1 + n_k, 2:4], None)]
        else:
            cells = [(gs[1 : 1 + n_k, col], None)]
        for cell, k in cells:
            ax = fig.add_subplot(cell, label=f"{name}.k{k}" if k is not None else name)
            metric = f"{base}.k{k}" if k is not None else base
            n = _metric_panel(ax, st, metric, _is_qk_ov, how)
            ax.set_title(f"{panel_title}, rank k = {k}" if k is not None else f"{panel_title} (full rank)")
            if n:
                ax.set_ylabel(ylabel + pair_note(n, "max" if how == "max" else "best: min"))
                if base == "qk_ov_token_mismatch":
                    ax.set_ylim(-0.02, 1.02)


def _legend_cell(fig, gs, st: _Study) -> None:
    """The legend, in the free cell of the top row."""
    from matplotlib.lines import Line2D

    ax = fig.add_subplot(gs[0, 3], label="legend")
    ax.set_axis_off()
    handles = [Line2D([], [], color=st.colours[r], linewidth=1.6, label=r) for r in st.runs]
    if st.drawn["baseline"]:
        handles.append(Line2D([], [], label="random subspaces\n(expected max cos)", **BASELINE_STYLE))
    run_cols = [st.colours[r] for r in st.runs]
    if st.drawn["loss_events"]:
        handles.append(event_handle("change point of the loss", run_cols))
    if st.drawn["metric_events"]:
        handles.append(event_handle("change point of the\npanel's metric", run_cols))
    h, lab, hmap = legend_parts(handles)
    ax.legend(
        h,
        lab,
        handler_map=hmap,
        loc="center left",
        title="data setting (run)",
        frameon=False,
        fontsize=9,
        title_fontsize=9,
        handlelength=3.0,
    )


def _figure_induction_study(
    tables: Mapping[str, pd.DataFrame],
    logs: Mapping[str, pd.DataFrame],
    *,
    ks: Sequence[int] | None = None,
    events: pd.DataFrame | None = None,
    title: str | None = None,
):
    import matplotlib

    from .. import _style

    st = _study(tables, logs, ks, events)
    n_k = len(st.ks)
    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(15.0, 3.1 * (1 + n_k) + 0.5)
        gs = fig.add_gridspec(1 + n_k, 4)
        _training_row(fig, gs, st)
        wide = st.mode("qk_ov_token_diag_zscore") == "absent" and st.mode("qk_ov_token_mismatch") == "absent"
        _overlap_rows(fig, gs, st, wide)
        if not wide and n_k:
            _token_panels(fig, gs, st)
        _legend_cell(fig, gs, st)
        head = (title or INDUCTION_TITLE) + (
            "" if n_k == 0 else " (one row per subspace rank k; multiple head pairs: best pair)"
        )
        fig.suptitle(_style.with_notes(head, st.notes))
        return fig


def plot_induction_study(
    tables: Mapping[str, pd.DataFrame],
    logs: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    *,
    ks: Sequence[int] | None = None,
    events: pd.DataFrame | None = None,
    title: str | None = None,
) -> Path:
    """Training curves and circuit metrics of the induction-task runs (data settings).

    ``tables``: run -> tidy metrics table; ``logs``: run -> training log. Runs keep one colour in
    every panel (order: the keys of ``tables``, then further keys of ``logs``). Top row: loss (log
    y), in- and out-of-distribution error vs step, and the legend. Then one row per rank k (default:
    every k of ``qk_ov_overlap_max.k{k}`` / ``embed_ov_overlap_max.k{k}``; at most
    :data:`MAX_K_ROWS`): QK–OV matching ``qk_ov_overlap_max.k{k}`` and embedding–OV matching
    ``embed_ov_overlap_max.k{k}``, each with its ``_random`` baseline (grey dashed, "random
    subspaces"); then the token-space diagonal z-score and the token mismatch ratio, per k
    (``.k{k}`` names) or, when only the unsuffixed (full-rank) metric exists, once as a larger
    panel titled "(full rank)". With several head pairs a panel shows the best pair at each step:
    the max over pairs, and for the mismatch ratio (where lower is better) the min; the y label says
    so. ``events``: change points drawn as dashed lines (loss change points on the training panels;
    a metric's own in its panel).
    """
    from .. import _style

    try:
        fig = _figure_induction_study(tables, logs, ks=ks, events=events, title=title)
    except NoData as exc:
        return _style.no_data(path, title or INDUCTION_TITLE, str(exc))
    return _style.save(fig, path)


# --------------------------------------------------------------------------------------------
# the registered kind
# --------------------------------------------------------------------------------------------


def draw(spec: Mapping, path: Path, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    return plot_induction_study(
        relabelled(spec, inputs.get("table")),
        relabelled(spec, inputs.get("log")),
        path,
        ks=spec.get("ks"),
        events=events_of(spec, inputs),
        title=spec.get("title"),
    )


def check(spec: Mapping, key: str, facts: RunFacts) -> None:
    for r in spec["runs"]:
        if facts.source_type(r) != "train_toy":
            raise ValueError(
                f"config key '{key}.runs': {r!r} is not a train_toy run (the induction figure reads its training log)"
            )


register(
    FigureKind(
        name="induction",
        description="induction task: circuit matching, z-score and token mismatch per rank k beside the training curves",
        reads=("table", "dynamics", "log"),
        options={"ks": KS_OPTION},
        draw=draw,
        check=check,
    )
)
