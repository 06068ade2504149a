"""Metric trajectories: every metric of a tidy table, per layer, over training; one PNG per metric.

A metric with one value per layer gets ``trajectory_{metric}.png``: one line per layer, one panel
per run. A multi-valued metric (rows named ``<metric>.<suffix>``: the rotary sweep's
``qk_ov_rotary_sweep.k1_r0`` … ``.zscore_r24``, ``activation_pca_evr.pc1`` … ``.pc5``) gets ONE
figure ``trajectory_{metric}.png`` with one panel per value (small multiples, shared x axis);
beyond :data:`MAX_VALUE_PANELS` panels, evenly chosen values are drawn and the figure says how many
of how many. Every figure stays within :data:`ckptlens.plots._style.MAX_PIXELS`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import layout
from ..store.layers import layer_order
from ..store.tidy import TIDY_COLUMNS

#: Up to this many layers a figure gets a legend naming each layer; beyond it a colorbar.
MAX_LEGEND_LAYERS = 10
#: At most this many panels (values × runs) in the figure of a multi-valued metric.
MAX_VALUE_PANELS = 24
#: At most this many runs (panels) in the figure of a single-valued metric, and at most this many
#: runs side by side (columns) in that of a multi-valued one.
MAX_RUN_PANELS, MAX_RUN_COLUMNS = 12, 4
#: At most this many layers (lines) per panel, evenly chosen in depth order beyond it.
MAX_LAYER_LINES = 160
#: Where the values left out of a figure are.
TABLE_NAME = "metrics.parquet"
_DIGITS = re.compile(r"(\d+)")


def plot_metric_trajectories(
    table: pd.DataFrame, out_dir: str | os.PathLike, events: pd.DataFrame | None = None
) -> list[Path]:
    """One PNG per metric, ``trajectory_{metric}.png``: the metric of every layer vs step.

    One line per layer, coloured by depth with the sequential viridis map (see
    ``_layer_styles``: colour = the layer's depth index, :func:`ckptlens.store.layers.layer_index`;
    line style = sublayer kind when a few kinds share the indices). Up to 10 layers get a legend,
    more a colorbar (plus a small line-style legend). Several runs in the table give one
    panel per run, sharing the y axis. NaN values and missing steps are gaps in the line.
    The y axis is logarithmic when all values are positive and span more than a factor 100.

    A multi-valued metric (``<metric>.<suffix>`` rows) is ONE figure ``trajectory_{metric}.png``
    with a panel per value (per value and run with several runs), at most
    :data:`MAX_VALUE_PANELS`, evenly chosen beyond (the title says what was left out).

    ``events`` (optional, the table of :func:`ckptlens.analysis.dynamics.detect_dynamics`: run,
    metric, layer, kind, step, …) marks each layer's change points as a short vertical dashed tick
    in the layer's colour and its convergence step as an open circle on the line.

    An empty table writes ``trajectory_no_data.png``; a metric without a finite value gets a
    "no data" figure under its own name. Returns the paths written, in metric order.
    """
    from . import _style

    out_dir = Path(out_dir)
    if table is None or len(table) == 0:
        empty = out_dir / layout.trajectory_name("no_data")
        return [_style.no_data(empty, "metric trajectories", "the metrics table is empty")]
    df = _typed(table)
    marks = _typed_events(events)
    rows_of = df.groupby("metric", observed=True, sort=False).indices  # one grouping, no copies
    paths: list[Path] = []
    used: set[str] = set()
    for base, members in metric_groups(rows_of).items():
        # Distinct metrics can sanitize to the same file name ("a/b", "a b"): never overwrite.
        stem, n = _style.sanitize(base), 2
        name = stem
        while name in used:
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        path = out_dir / layout.trajectory_name(name)
        sub = _rows(df, [rows_of[m] for m in members])
        finite = _style.finite(sub["value"].to_numpy())
        if finite.size == 0:
            what = f"{base} per layer" if members == [base] else f"{base} (every value) per layer"
            paths.append(_style.no_data(path, what, "no finite value in the table"))
            continue
        ev = None if marks is None else marks[marks["metric"].isin(members)]
        if members == [base]:
            fig = _figure_metric(sub, base, ev)
        else:
            fig = _figure_values(sub, base, members, ev)
        paths.append(_style.save(fig, path))
    return paths


def metric_groups(metrics) -> dict[str, list[str]]:
    """Metric name -> the names drawn in its figure, by figure, sorted by name: a plain metric
    alone, the values ``<metric>.<suffix>`` of a multi-valued metric together (natural order of the
    suffixes: ``pc2`` before ``pc10``) under ``<metric>``."""
    groups: dict[str, list[str]] = {}
    for m in sorted(str(x) for x in metrics):
        groups.setdefault(m.partition(".")[0], []).append(m)
    return {
        base: sorted(ms, key=lambda m: (m != base, _natural(m.partition(".")[2])))
        for base, ms in sorted(groups.items())
    }


def _natural(text: str) -> tuple:
    parts = _DIGITS.split(text)
    return tuple((0, int(p), "") if i % 2 else (1, 0, p) for i, p in enumerate(parts))


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    """One typed copy of the tidy columns: run/layer/metric as categories (a 750k-row table then
    costs a few MB per column, not an object per cell), value as float."""
    n = len(table)
    out = {}
    for c in TIDY_COLUMNS:
        if c == "value":
            out[c] = pd.to_numeric(table[c], errors="coerce").astype(float).to_numpy()
        elif c == "step":
            out[c] = table[c].to_numpy()
        else:
            col = table[c] if c in table.columns else pd.Series([""] * n, index=table.index)
            out[c] = pd.Categorical(col.astype(str))
    return pd.DataFrame(out)


def _typed_events(events: pd.DataFrame | None) -> pd.DataFrame | None:
    need = {"run", "metric", "layer", "kind", "step"}
    if events is None or len(events) == 0 or not need <= set(events.columns):
        return None
    ev = events[list(need)].copy()
    for c in ("run", "metric", "layer", "kind"):
        ev[c] = ev[c].astype(str)
    ev["step"] = pd.to_numeric(ev["step"], errors="coerce")
    return ev


def _rows(df: pd.DataFrame, positions: Sequence[np.ndarray]) -> pd.DataFrame:
    """The rows of one figure, with plain string labels (small: one metric's rows)."""
    sub = df.take(np.sort(np.concatenate(positions)))
    return sub.assign(**{c: sub[c].astype(str) for c in ("run", "layer", "metric")})


# --------------------------------------------------------------------------------------------
# styles and marks
# --------------------------------------------------------------------------------------------


def _layer_styles(layers: Sequence[str]) -> tuple[dict, dict, str, dict]:
    """Colour value, linestyle and labels for each layer.

    If every layer name holds an integer (its depth index), at most 4 distinct "kinds" share
    the indices (e.g. attention.dense, mlp.dense_4h_to_h) and (index, kind) is unique, the
    colour encodes the index and the linestyle the kind: a block's sublayers then share a
    colour, which is what "depth" means. Otherwise the colour encodes the rank in depth order
    and all lines are solid.

    Returns (colour value per layer, linestyle per layer, colour-scale label, {kind: linestyle}).
    """
    from ._style import LINESTYLES, depth_template

    parsed = {layer: depth_template(layer) for layer in layers}
    if all(i is not None for i, _ in parsed.values()):
        kinds = sorted({k for _, k in parsed.values()})
        if len(kinds) <= len(LINESTYLES) and len(set(parsed.values())) == len(layers):
            style = {k: LINESTYLES[i] if len(kinds) > 1 else "-" for i, k in enumerate(kinds)}
            colour = {layer: float(idx) for layer, (idx, _) in parsed.items()}
            linestyle = {layer: style[kind] for layer, (_, kind) in parsed.items()}
            return colour, linestyle, "layer index (depth)", style if len(kinds) > 1 else {}
    colour = {layer: float(rank) for rank, layer in enumerate(layers)}
    return colour, {layer: "-" for layer in layers}, "layer (depth order)", {}


def _mark_events(ax, marks: pd.DataFrame, run: str, layer: str, steps, values, color) -> int:
    """Change points (dashed vertical tick spanning the layer's jump) and the convergence step
    (open circle) of one layer's line; returns how many were drawn."""
    rows = marks[(marks["run"] == run) & (marks["layer"] == layer)]
    drawn = 0
    known = set(steps)
    for kind, step in zip(rows["kind"], rows["step"]):
        if not np.isfinite(step) or step not in known:
            continue
        i = int(np.searchsorted(steps, step))
        if kind == "change_point":
            lo, hi = values[max(i - 1, 0)], values[i]
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot(
                    [step, step], [lo, hi], color=color, linestyle=(0, (2, 1.5)), linewidth=1.6, alpha=0.9, zorder=4
                )
                ax.axvline(step, color=color, linestyle=":", linewidth=0.8, alpha=0.6, zorder=1)
                drawn += 1
        elif kind == "converged" and np.isfinite(values[i]):
            ax.plot(
                [step],
                [values[i]],
                marker="o",
                markersize=6,
                markerfacecolor="none",
                markeredgecolor=color,
                markeredgewidth=1.2,
                linestyle="none",
                zorder=5,
            )
            drawn += 1
    return drawn


class _Lines:
    """The layers of one figure and how each is drawn (colour, line style, label)."""

    def __init__(self, layers: Sequence[str]):
        import matplotlib
        from matplotlib.colors import Normalize

        from ._style import common_prefix, even_pick

        self.all = layer_order(layers)
        self.layers = even_pick(self.all, MAX_LAYER_LINES)
        self.colour, self.linestyle, self.scale_label, self.kind_style = _layer_styles(self.layers)
        cvals = np.array(list(self.colour.values()))
        self.norm = Normalize(vmin=cvals.min(), vmax=max(cvals.max(), cvals.min() + 1))
        self.cmap = matplotlib.colormaps["viridis"]
        self.prefix = common_prefix(self.layers)

    def note(self) -> str:
        if len(self.layers) == len(self.all):
            return ""
        return f"{len(self.layers)} of {len(self.all)} layers drawn, evenly spaced in depth"

    def rgba(self, layer: str):
        return self.cmap(self.norm(self.colour[layer]))

    def draw(self, ax, one: pd.DataFrame, marks: pd.DataFrame | None, run: str, marker) -> int:
        """One run's lines of one metric in ``ax``; returns the number of event marks drawn."""
        steps = np.sort(one["step"].unique())
        # Reindex on all of the run's steps so that a missing row is a gap, like a NaN,
        # instead of a straight line drawn across it.
        wide = one.groupby(["step", "layer"])["value"].mean().unstack("layer").reindex(steps)
        n_marks = 0
        for layer in self.layers:
            if layer not in wide.columns:
                continue
            values = wide[layer].to_numpy(dtype=float)
            ax.plot(
                steps,
                values,
                color=self.rgba(layer),
                linestyle=self.linestyle[layer],
                linewidth=1.1,
                alpha=0.9,
                marker=marker,
                markersize=2.2,
                label=layer[len(self.prefix) :],
            )
            if marks is not None and len(marks):
                n_marks += _mark_events(ax, marks, run, layer, steps, values, self.rgba(layer))
        return n_marks

    def legend(self, fig, visible: list, n_marks: int) -> None:
        """A legend naming the layers (few), else a colorbar of depth and a line-style legend;
        plus the event marks' entries when some were drawn."""
        from matplotlib.cm import ScalarMappable
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator

        from ._style import common_prefix

        event_handles = []
        if n_marks:
            event_handles = [
                Line2D([], [], color="0.3", linestyle=(0, (2, 1.5)), linewidth=1.6, label="change point"),
                Line2D(
                    [],
                    [],
                    color="0.3",
                    marker="o",
                    markerfacecolor="none",
                    linestyle="none",
                    label="settles (converged)",
                ),
            ]
        if len(self.layers) <= MAX_LEGEND_LAYERS:
            handles, labels = visible[0].get_legend_handles_labels()
            if not handles:  # the first panel may lack a layer the others have
                handles = [
                    Line2D([], [], color=self.rgba(x), linestyle=self.linestyle[x], linewidth=1.1) for x in self.layers
                ]
                labels = [x[len(self.prefix) :] for x in self.layers]
            handles += event_handles
            labels += [h.get_label() for h in event_handles]
            fig.legend(
                handles, labels, loc="outside right upper", title=f"layer ({self.prefix}…)" if self.prefix else "layer"
            )
            return
        cbar = fig.colorbar(ScalarMappable(norm=self.norm, cmap=self.cmap), ax=visible, shrink=0.9, pad=0.02, aspect=30)
        cbar.set_label(self.scale_label)
        cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        # one legend below the panels (above them it would run into the title)
        handles, labels, title = [], [], None
        if self.kind_style:
            handles = [Line2D([], [], color="0.3", linestyle=ls, linewidth=1.3) for ls in self.kind_style.values()]
            labels = [k.replace("{i}", "i") for k in self.kind_style]
            labels = [lb[len(common_prefix(labels)) :] or lb for lb in labels]
            title = "sublayer (line style)"
        handles += event_handles
        labels += [h.get_label() for h in event_handles]
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), title=title, frameon=False)


# --------------------------------------------------------------------------------------------
# a single-valued metric: one panel per run
# --------------------------------------------------------------------------------------------


def _figure_metric(sub: pd.DataFrame, metric: str, marks: pd.DataFrame | None = None):
    """The Figure of one single-valued metric (rows of that metric only)."""
    import matplotlib

    from . import _style
    from .labels import axis_label

    all_runs = sorted(sub["run"].unique())
    runs = all_runs[:MAX_RUN_PANELS]
    sub = sub[sub["run"].isin(runs)] if len(runs) < len(all_runs) else sub
    lines = _Lines(sub["layer"].unique())
    finite = _style.finite(sub["value"].to_numpy())
    log_y = _style.wants_log(finite)
    marker = "o" if sub["step"].nunique() <= 60 else None  # markers show isolated points between gaps
    notes = [lines.note()]
    if len(runs) < len(all_runs):
        notes.append(f"{len(runs)} of {len(all_runs)} runs shown; all in {TABLE_NAME}")

    with matplotlib.rc_context(_style.RC):
        ncols = min(len(runs), 3)
        nrows = int(np.ceil(len(runs) / ncols))
        fig = _style.new_figure(5.2 * ncols + 1.8, 3.8 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax in axes[len(runs) :]:
            ax.set_visible(False)
        n_marks = 0
        for ax, (run, one) in zip(axes, sub.groupby("run", sort=True)):
            ax.set_label(run or metric)
            n_marks += lines.draw(ax, one, marks, run, marker)
            _style.step_axis(ax, np.sort(one["step"].unique()))
            if log_y:
                _style.log_y(ax, finite)
            if len(runs) > 1 or run:
                ax.set_title(run)
        for ax in axes[: len(runs)]:
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel(axis_label(metric, log_y))
        fig.suptitle(_style.with_notes(f"{metric} per layer over training", notes))
        lines.legend(fig, list(axes[: len(runs)]), n_marks)
        return fig


# --------------------------------------------------------------------------------------------
# a multi-valued metric: one panel per value (small multiples)
# --------------------------------------------------------------------------------------------


def _figure_values(sub: pd.DataFrame, base: str, values: Sequence[str], marks: pd.DataFrame | None = None):
    """The Figure of a multi-valued metric: one panel per value (× run), shared x axis, each
    panel its own y range (the values of one metric can differ in scale: a cosine and a z-score)."""
    import matplotlib

    from . import _style
    from .labels import axis_label

    all_runs = sorted(sub["run"].unique())
    runs = all_runs[:MAX_RUN_COLUMNS]
    shown = _style.even_pick(list(values), max(1, MAX_VALUE_PANELS // len(runs)))
    sub = sub[sub["metric"].isin(shown) & sub["run"].isin(runs)]
    panels = [(v, r) for v in shown for r in runs]
    lines = _Lines(sub["layer"].unique())
    marker = "o" if sub["step"].nunique() <= 60 else None
    steps = np.sort(sub["step"].unique())
    notes = []
    if len(shown) < len(values):
        notes.append(f"{len(shown)} of {len(values)} values shown, evenly spaced; all in {TABLE_NAME}")
    if len(runs) < len(all_runs):
        notes.append(f"{len(runs)} of {len(all_runs)} runs shown")
    notes.append(lines.note())
    cells = dict(iter(sub.groupby(["metric", "run"], sort=False)))

    with matplotlib.rc_context(_style.RC):
        # one run: at most 4 columns, rows as full as possible (5 panels: 3 + 2, not 4 + 1)
        ncols = len(runs) if len(runs) > 1 else math.ceil(len(panels) / math.ceil(len(panels) / 4))
        nrows = math.ceil(len(panels) / ncols)
        fig = _style.new_figure(3.3 * ncols + 1.8, 2.4 * nrows + 1.0)
        axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).ravel()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        n_marks = 0
        for i, (ax, (value, run)) in enumerate(zip(axes, panels)):
            ax.set_label(value if len(runs) == 1 else f"{value}|{run}")
            suffix = value.partition(".")[2] or value
            one = cells.get((value, run))
            log = False
            if one is not None:
                # a panel shows one value: only that value's change points and convergence step
                own = None if marks is None else marks[marks["metric"] == value]
                n_marks += lines.draw(ax, one, own, run, marker)
                finite = _style.finite(one["value"].to_numpy())
                log = _style.wants_log(finite)
                if log:
                    _style.log_y(ax, finite)
            else:
                ax.text(0.5, 0.5, "no rows", ha="center", va="center", color="0.4", transform=ax.transAxes)
            ax.set_title(
                suffix + (f" — {run}" if len(runs) > 1 and run else "") + (" (log)" if log else ""), fontsize=9
            )
            _style.step_axis(ax, steps)
            if i + ncols < len(panels):  # a panel below says it
                ax.set_xlabel("")
            else:  # the last panel of its column: its tick labels too (sharex hides all but the last row's)
                ax.xaxis.set_tick_params(labelbottom=True)
        fig.supylabel(axis_label(base, width=60), fontsize=9)
        head = f"{base} per layer over training: {len(values)} values"
        fig.suptitle(_style.with_notes(head, notes, fig.get_figwidth()))
        lines.legend(fig, [ax for ax in axes[: len(panels)]], n_marks)
        return fig
