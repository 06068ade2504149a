"""Metric trajectories: every metric of a tidy table, per layer, over training; one PNG per metric.

A metric with one value per layer gets ``trajectory_{metric}.png``: a panel per kind of module
(attention output, per-head OV, per-head QK, MLP output, block output, embedding, other:
:func:`ckptlens.store.kinds.layer_kind`) and run; a panel of more than :data:`MAX_LINES` series is
a layer × step heatmap (per-head pieces as (block, head) rows, its own colour scale), one of fewer
a line per layer; series of very different sizes are divided by their own median (said on the
axis). A multi-valued metric (rows named ``<metric>.<suffix>``: the rotary sweep's
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
from ..store.layers import layer_key, layer_order
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
            # as many columns as fit the figure's width (one row of long sublayer names was cut
            # at both edges: "ttention.dense")
            longest = max(len(lb) for lb in labels)
            fit = max(1, int(fig.get_figwidth() / (0.35 + 0.065 * longest)))
            fig.legend(
                handles, labels, loc="outside lower center", ncol=min(len(handles), fit), title=title, frameon=False
            )


# --------------------------------------------------------------------------------------------
# a single-valued metric: one panel per run
# --------------------------------------------------------------------------------------------


def _figure_metric(sub: pd.DataFrame, metric: str, marks: pd.DataFrame | None = None):
    """The Figure of one single-valued metric (rows of that metric only): a panel per kind of
    module (:func:`ckptlens.store.kinds.layer_kind`) and run. A panel with more than
    :data:`MAX_LINES` series is a layer × step heatmap (depth down, steps across, its own colour
    scale; per-head pieces as (block, head) rows), one with fewer draws lines. Where the layers of
    a kind differ in size (all values positive, per-layer medians more than
    :data:`SIZE_RATIO` apart) each series is divided by its own median, and the axis says so."""
    import matplotlib

    from ..store.kinds import KINDS, layer_kind
    from . import _style

    all_runs = sorted(sub["run"].unique())
    layers = list(sub["layer"].unique())
    kind_of = {x: layer_kind(x) for x in layers}
    kinds = [k for k in KINDS if k in set(kind_of.values())]
    runs = all_runs[: (MAX_RUN_PANELS if len(kinds) == 1 else MAX_RUN_COLUMNS)]
    sub = sub[sub["run"].isin(runs)] if len(runs) < len(all_runs) else sub
    notes = []
    if len(runs) < len(all_runs):
        notes.append(f"{len(runs)} of {len(all_runs)} runs shown; all in {TABLE_NAME}")
    panels = [(k, r) for k in kinds for r in runs]
    ncols = len(runs) if len(kinds) > 1 else min(len(runs), 3)
    nrows = math.ceil(len(panels) / ncols)
    # rows of the grid: a heatmap of many rows gets more height (within the size limit)
    n_series = {k: sum(1 for x in layers if kind_of[x] == k) for k in kinds}
    heights = [_panel_height(n_series[k]) for k in kinds] if len(kinds) > 1 else [3.8] * nrows
    scale = min(1.0, (_style.MAX_INCHES - 1.0) / sum(heights))
    heights = [h * scale for h in heights]
    marker = "o" if sub["step"].nunique() <= 60 else None
    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(5.6 * ncols + 2.2, sum(heights) + 1.0)
        grid = fig.add_gridspec(nrows, ncols, height_ratios=heights)
        kind_col = sub["layer"].map(kind_of)
        # per kind, for all its runs alike: whether sizes differ (normalised), the heatmaps' grids
        # and their one colour scale, so that runs side by side compare
        ratio = {k: size_ratio(sub[kind_col.eq(k)]) for k in kinds}
        grids, limits = {}, {}
        for k in kinds:
            if n_series[k] <= MAX_LINES:
                continue
            for run in runs:
                one = sub[(sub["run"] == run) & kind_col.eq(k)]
                if len(one):
                    grids[k, run] = _heatmap_grid(one, k, ratio[k])
                    notes += grids[k, run][4]
            limits[k] = colour_limits(np.concatenate([g[0].ravel() for (kk, _), g in grids.items() if kk == k] or [[]]))
        first_of: dict = {}
        for i, (kind, run) in enumerate(panels):
            ax = fig.add_subplot(grid[i // ncols, i % ncols])
            label = (run or metric) if len(kinds) == 1 else (f"{kind}|{run}" if len(runs) > 1 else kind)
            ax.set_label(label)
            one = sub[(sub["run"] == run) & kind_col.eq(kind)]
            if one.empty:
                ax.text(0.5, 0.5, "no rows", ha="center", va="center", color="0.4", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            own = None if marks is None else marks[marks["run"] == run]
            last_col = i % ncols == ncols - 1 or i == len(panels) - 1
            if (kind, run) in grids:
                _draw_heatmap(fig, ax, metric, kind, grids[kind, run], limits[kind], own)
            else:
                if kind in first_of:  # the runs of a kind share the y axis
                    ax.sharey(first_of[kind])
                first_of.setdefault(kind, ax)
                _draw_lines(ax, one, metric, own, marker, legend=last_col, ratio=ratio[kind])
            title = kind if len(kinds) > 1 else ""
            if len(runs) > 1 or run:
                title = f"{title} — {run}" if title else run
            ax.set_title(title, fontsize=9)
        head = f"{metric} per layer over training"
        if len(kinds) > 1:
            head += f", by kind of module ({', '.join(f'{k}: {n_series[k]}' for k in kinds)})"
        fig.suptitle(_style.with_notes(head, dict.fromkeys(notes), fig.get_figwidth()))
        return fig


#: Up to this many series a panel draws lines; more make a layer × step heatmap.
MAX_LINES = 12
#: At most this many rows (series) in one heatmap panel, evenly chosen in depth order beyond it.
MAX_HEATMAP_ROWS = 400
#: At most this many steps (columns) in one heatmap panel, evenly chosen beyond it.
MAX_HEATMAP_STEPS = 400
#: Series whose per-layer medians differ by more than this factor are each divided by their median.
SIZE_RATIO = 10.0


def _panel_height(n_series: int) -> float:
    return 2.8 if n_series <= MAX_LINES else float(np.clip(0.02 * min(n_series, MAX_HEATMAP_ROWS), 2.8, 6.0))


def _series_order(layers) -> list[str]:
    """Depth order; per-head pieces by (block, head)."""
    from ..store.kinds import block_and_head

    def key(x):
        b, h = block_and_head(x)
        return (b if b is not None else -1, h if h is not None else -1, *layer_key(x))

    return sorted(layers, key=key)


def size_ratio(rows: pd.DataFrame) -> float | None:
    """How much the series of ``rows`` (one kind, every run shown) differ in size: the ratio of the
    largest to the smallest per-layer median, where every value is positive and it exceeds
    :data:`SIZE_RATIO` (an effective rank of 20 beside one of 350) while a typical series moves
    less than a tenth of that spread; None otherwise (a signed metric, sizes alike, or series that
    move across the spread): the series are then drawn as they are."""
    v = rows["value"].to_numpy(dtype=float)
    fin = v[np.isfinite(v)]
    if not fin.size or fin.min() <= 0:
        return None
    by_layer = rows.groupby("layer")["value"]
    med = by_layer.median()
    med = med[np.isfinite(med) & (med > 0)]
    if med.size < 2 or med.max() / med.min() <= SIZE_RATIO:
        return None
    # ... and each series moves little against that spread (a CKA from 0.05 to 1 moves across it:
    # it is drawn as it is)
    moves = (by_layer.max() - by_layer.min()).median()
    if not moves < (med.max() - med.min()) / SIZE_RATIO:
        return None
    return float(med.max() / med.min())


def _normalised(wide: pd.DataFrame, ratio: float | None) -> tuple[pd.DataFrame, str]:
    """``wide`` (steps × layers) divided column by column by each layer's median when ``ratio``
    (:func:`size_ratio`) says the sizes differ; and the axis suffix that says so ("" otherwise)."""
    if not ratio:
        return wide, ""
    return wide / wide.median(axis=0, skipna=True), f"\n÷ each layer's median (sizes differ {ratio:.0f}×)"


def _short_labels(layers: Sequence[str]) -> dict[str, str]:
    from ._style import common_prefix

    prefix = common_prefix(list(layers))
    return {x: x[len(prefix) :] for x in layers}


def _draw_lines(ax, one: pd.DataFrame, metric: str, marks, marker, *, legend: bool, ratio: float | None = None) -> None:
    """One line per series, coloured by depth, with a legend beside the panel (kept inside the
    figure by the constrained layout: nothing cut at the edges)."""
    import matplotlib

    from . import _style
    from .labels import axis_label

    steps = np.sort(one["step"].unique())
    wide = one.groupby(["step", "layer"])["value"].mean().unstack("layer").reindex(steps)
    order = _series_order(list(wide.columns))
    wide, norm_note = _normalised(wide[order], ratio)
    labels = _short_labels(order)
    cmap = matplotlib.colormaps["viridis"]
    n_marks = 0
    for j, layer in enumerate(order):
        values = wide[layer].to_numpy(dtype=float)
        colour = cmap(j / max(len(order) - 1, 1) * 0.9)
        ax.plot(
            steps, values, color=colour, linewidth=1.1, alpha=0.9, marker=marker, markersize=2.2, label=labels[layer]
        )
        if marks is not None and len(marks):
            n_marks += _mark_events(ax, marks, str(one["run"].iat[0]), layer, steps, values, colour)
    _style.step_axis(ax, steps)
    finite = _style.finite(wide.to_numpy(dtype=float).ravel())
    log = _style.wants_log(finite)
    if log:
        _style.log_y(ax, finite)
    ax.set_ylabel(axis_label(metric, log, width=40) + norm_note, fontsize=8)
    if legend:
        from matplotlib.lines import Line2D

        handles, texts = ax.get_legend_handles_labels()
        if n_marks:
            handles += [
                Line2D([], [], color="0.3", linestyle=(0, (2, 1.5)), linewidth=1.6),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none"),
            ]
            texts += ["change point", "settles"]
        ax.legend(handles, texts, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)


def _step_label(step: float) -> str:
    step = float(step)
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(step) >= div:
            return f"{step / div:g}{suffix}"
    return f"{step:g}"


def _heatmap_grid(one: pd.DataFrame, kind: str, ratio: float | None):
    """``(data, series shown, steps shown, axis suffix, notes)`` of one kind of one run: rows in
    depth order ((block, head) for per-head pieces), at most :data:`MAX_HEATMAP_ROWS` rows and
    :data:`MAX_HEATMAP_STEPS` columns (evenly chosen beyond; the notes say so)."""
    from . import _style

    notes = []
    steps = np.sort(one["step"].unique())
    wide = one.groupby(["step", "layer"])["value"].mean().unstack("layer").reindex(steps)
    order = _series_order(list(wide.columns))
    shown = _style.even_pick(order, MAX_HEATMAP_ROWS)
    if len(shown) < len(order):
        notes.append(f"{kind}: {len(shown)} of {len(order)} series shown, evenly spaced in depth; all in {TABLE_NAME}")
    cols = _style.even_pick(list(steps), MAX_HEATMAP_STEPS)
    if len(cols) < len(steps):
        notes.append(f"{kind}: {len(cols)} of {len(steps)} checkpoints shown")
    wide, norm_note = _normalised(wide.loc[cols, shown], ratio)
    return wide.to_numpy(dtype=float).T, shown, cols, norm_note, notes


def colour_limits(values: np.ndarray) -> tuple[float, float]:
    """The colour scale of a heatmap: the 2nd..98th percentile of its finite values (one outlier
    does not flatten the rest), widened where they are all equal."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
    return lo, hi if hi > lo else lo + (abs(lo) * 1e-6 or 1e-12)


def _draw_heatmap(fig, ax, metric: str, kind: str, grid, limits, marks) -> None:
    """A series × step heatmap of one kind (:func:`_heatmap_grid`): columns the run's checkpoints
    (evenly spaced by index: log-spaced steps read as well as even ones), the colour scale
    ``limits`` (shared by the runs of a kind), NaN grey, change points as white ticks."""
    import matplotlib

    from ..store.kinds import PER_HEAD, block_and_head
    from . import _style
    from .labels import axis_label

    data, shown, cols, norm_note, _ = grid
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    lo, hi = limits
    log = not norm_note and lo > 0 and _style.wants_log(np.array([lo, hi]))
    norm = matplotlib.colors.LogNorm(lo, hi) if log and lo > 0 else matplotlib.colors.Normalize(lo, hi)
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", interpolation="nearest", cmap=cmap, norm=norm)
    ax.grid(False)
    # x: checkpoints by index, labelled with their steps
    ticks = _style.even_pick(list(range(len(cols))), 8)
    ax.set_xticks(ticks, [_step_label(cols[i]) for i in ticks])
    ax.set_xlabel("training step (one column per checkpoint)")
    # y: series in depth order
    if kind in PER_HEAD:
        blocks = [block_and_head(x)[0] for x in shown]
        starts = [i for i, b in enumerate(blocks) if i == 0 or b != blocks[i - 1]]
        keep = _style.even_pick(starts, 24)
        ax.set_yticks(keep, [f"block {blocks[i]}" for i in keep])
        for i in starts[1:]:
            ax.axhline(i - 0.5, color="white", linewidth=0.4, alpha=0.7)
        ax.set_ylabel("(block, head), heads in order within a block", fontsize=8)
    else:
        labels = _short_labels(shown)
        keep = _style.even_pick(list(range(len(shown))), 30)
        ax.set_yticks(keep, [labels[shown[i]] for i in keep])
        ax.set_ylabel("layer (depth order)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    # change points of the shown series
    if marks is not None and len(marks):
        row = {x: i for i, x in enumerate(shown)}
        col = {s: i for i, s in enumerate(cols)}
        cps = marks[(marks["kind"] == "change_point") & marks["layer"].isin(row) & marks["step"].isin(col)]
        if len(cps):
            ax.scatter(
                [col[s] - 0.5 for s in cps["step"]],
                [row[x] for x in cps["layer"]],
                marker="|",
                s=30,
                color="white",
                linewidths=1.2,
                label="change point",
            )
    cbar = fig.colorbar(im, ax=ax, pad=0.01, aspect=25)
    cbar.set_label(axis_label(metric, log, width=30) + norm_note, fontsize=7)
    cbar.ax.tick_params(labelsize=7)


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
