"""Paper figures of the example studies: several panels, several runs, one PNG per figure.

:mod:`ckptlens.plots` draws one kind of result per figure (a metric's trajectories, the training
curves, a PCA, a correlation heatmap). The functions here put the results of one *study* side by
side, as a paper would show them:

* :func:`plot_induction_study` — training curves and K-composition circuit metrics of the
  induction task, one row per subspace rank k, runs (data settings) coloured alike everywhere;
* :func:`plot_rotary_sweep` — the QK–OV matching as a function of the relative position r;
* :func:`plot_linearity_study` — linearity between consecutive layers and per-sample spreads;
* :func:`plot_gradient_pca_study` — gradient PCA of the two outputs of the multi-task MLP;
* :func:`plot_model_size_study` — PCA and correlation summaries against model size;
* :func:`plot_run_comparison` — one metric, several runs, one panel per layer;
* :func:`plot_study_figure` — one of the above from a figure spec of the config's ``figures``
  section (what ``scripts/plot_study_figure.py`` calls).

Inputs are tidy tables (columns ``run, step, layer, metric, value``; multi-valued metrics as
``"name.suffix"`` metric names), training logs (``step, loss, id_error, ood_error, seconds``) and
the outputs of :mod:`ckptlens.analysis`. Conventions are those of :mod:`ckptlens.plots`: Figure
objects on the Agg canvas (never pyplot), atomic PNG writes, a "no data" figure for empty input,
symlog step axes for log-spaced checkpoints. Each public function is a thin wrapper around a
``_figure_*`` function that returns the Figure (tests read the drawn data back from it) or raises
:class:`_NoData`.

Events (``events`` arguments) are the rows of a change-point / convergence table with columns
``run, metric, layer, kind, step, value, score``; only ``kind == "change_point"`` rows are drawn,
as thin dashed vertical lines in the colour of their run, and only in panels showing the same run
and the same metric and layer (training-log panels: ``metric == "loss"``, ``layer == "model"``).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize, SymLogNorm
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

from .labels import SUMMARY_ROW_LABELS, parse_model_size
from .plots import (
    _MATRIX_TITLES,
    _RC,
    _common_prefix,
    _layer_sort_key,
    _log_y,
    _new_figure,
    _no_data,
    _save,
    axis_label,
    is_log_spaced,
    step_axis,
)

__all__ = [
    "plot_induction_study",
    "plot_rotary_sweep",
    "plot_linearity_study",
    "plot_gradient_pca_study",
    "plot_model_size_study",
    "plot_run_comparison",
    "plot_study_figure",
]

#: Style of a change-point line (thin, dashed, in the colour of its run).
EVENT_STYLE = {"linestyle": (0, (4, 3)), "linewidth": 0.9, "alpha": 0.85}
#: Style of a random-baseline line.
BASELINE_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.1}
#: At most this many layer pairs (small multiples) per quantile row of the linearity figure.
MAX_BAND_PAIRS = 6
#: Up to this many layers (pairs) are named in a legend; beyond it a colorbar shows depth.
MAX_LEGEND_LAYERS = 8
#: Checkpoints drawn per panel of the rotary sweep by default.
SWEEP_STEPS = 8
_DEPTH_CMAP = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.88, 256)), "viridis_dark")
_FIRST_INT = re.compile(r"\d+")


class _NoData(Exception):
    """Raised by a ``_figure_*`` function when there is nothing to draw (the message says why)."""


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _tidy(table: pd.DataFrame | None) -> pd.DataFrame:
    """A clean copy of a tidy metrics table (typed columns, no row without a step); empty if
    ``table`` is None, empty or lacks a column."""
    cols = ["run", "step", "layer", "metric", "value"]
    if table is None or len(table) == 0 or not {"step", "layer", "metric", "value"} <= set(table.columns):
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("run", "layer", "metric") else float)
                             for c in cols})
    df = table.copy()
    if "run" not in df.columns:
        df["run"] = ""
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df = df[np.isfinite(df["step"].to_numpy(dtype=float))]
    steps = df["step"].to_numpy(dtype=float)
    if steps.size and np.all(steps == np.round(steps)):
        df["step"] = steps.astype(np.int64)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    for c in ("run", "layer", "metric"):
        df[c] = df[c].astype(str)
    return df


def _training_log(log: pd.DataFrame | None) -> pd.DataFrame:
    """A clean, step-sorted copy of a training log (missing columns become NaN)."""
    if log is None or len(log) == 0 or "step" not in log.columns:
        return pd.DataFrame(columns=["step", "loss", "id_error", "ood_error"], dtype=float)
    df = log.copy()
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df = df[np.isfinite(df["step"].to_numpy(dtype=float))].sort_values("step")
    for col in ("loss", "id_error", "ood_error"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df.columns else np.nan
    return df


def _reduce(sub: pd.DataFrame, how: str = "max") -> pd.Series:
    """Values of ``sub`` (one metric of one run) per step, reduced over its layers by ``how``
    ("max", "min" or "mean"), NaN ignored (all-NaN gives NaN). Index: the sorted steps."""
    if sub.empty:
        return pd.Series(dtype=float)
    steps = np.sort(sub["step"].unique())
    wide = sub.pivot_table(index="step", columns="layer", values="value", aggfunc="mean",
                           dropna=False).reindex(steps)
    arr = wide.to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as wanted
        values = {"max": np.nanmax, "min": np.nanmin, "mean": np.nanmean}[how](arr, axis=1)
    return pd.Series(values, index=steps)


def _run_colours(runs: Sequence[str]) -> dict[str, tuple]:
    """Qualitative colours, one per run, in the given order (tab10; tab20 beyond 10 runs)."""
    cmap = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {run: cmap(i % cmap.N) for i, run in enumerate(runs)}


def _change_points(events: pd.DataFrame | None, run: str, metric: str, layers: Iterable[str]) -> np.ndarray:
    """Steps of the ``change_point`` events of ``run`` for ``metric`` at one of ``layers``."""
    if events is None or len(events) == 0 or not {"run", "metric", "layer", "kind", "step"} <= set(events.columns):
        return np.array([])
    mask = ((events["run"].astype(str) == str(run)) & (events["metric"].astype(str) == metric)
            & events["layer"].astype(str).isin([str(x) for x in layers])
            & (events["kind"].astype(str) == "change_point"))
    steps = pd.to_numeric(events.loc[mask, "step"], errors="coerce").to_numpy(dtype=float)
    return np.unique(steps[np.isfinite(steps)])


def _draw_events(ax, steps: np.ndarray, colour) -> int:
    for s in steps:
        ax.axvline(s, color=colour, gid="change_point", label="_change point", **EVENT_STYLE)
    return len(steps)


def _event_handle(label: str, colours: Sequence | None = None):
    """Legend entry of change points: a dashed segment in each run's colour (grey if none given)
    and its handler map, for ``legend(handles=..., handler_map=...)``."""
    colours = list(colours or ["0.25"])
    handle = tuple(Line2D([], [], color=c, **EVENT_STYLE) for c in colours)
    return handle, label


def _legend_parts(entries) -> tuple[list, list, dict]:
    """(handles, labels, handler_map) from a list of Artists and (tuple, label) pairs."""
    handles, labels = [], []
    for e in entries:
        if isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], tuple):
            handles.append(e[0])
            labels.append(e[1])
        else:
            handles.append(e)
            labels.append(e.get_label())
    return handles, labels, {tuple: HandlerTuple(ndivide=None, pad=0.0)}


def _step_x(ax, decide: Iterable[float], extent: Iterable[float]) -> str:
    """:func:`step_axis` with the scale decided by ``decide`` (the checkpoint steps) and the
    limits covering ``extent`` (every step drawn in the panel, e.g. a denser training log)."""
    decide = np.asarray(list(decide), dtype=float)
    ext = np.asarray(list(extent), dtype=float)
    ext = ext[np.isfinite(ext)]
    scale = step_axis(ax, decide if decide.size else ext)
    if ext.size:
        lo, hi = float(ext.min()), float(ext.max())
        if scale == "symlog":
            ax.set_xlim(lo, hi * 1.15 if hi > 0 else 1.0)
        else:
            pad = 0.02 * (hi - lo) if hi > lo else 1.0
            ax.set_xlim(lo - pad, hi + pad)
    return scale


def _note(ax, text: str) -> None:
    """A grey note in the middle of an empty panel ("not computed", "no training log")."""
    ax.text(0.5, 0.5, text, ha="center", va="center", color="0.4", fontsize=9,
            transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _markers(n_steps: int) -> dict:
    """Markers show isolated points between gaps; only while they do not crowd the line."""
    return {"marker": "o", "markersize": 2.5} if n_steps <= 60 else {}


def _depth(layer: str) -> float:
    m = _FIRST_INT.search(layer)
    return float(m.group()) if m else -1.0


def _fmt_step(v: float, _pos=None) -> str:
    """143000 -> "143k", 512 -> "512" (colorbar ticks of training steps)."""
    v = float(v)
    if abs(v) >= 10_000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def _fmt_size(n: float, _pos=None) -> str:
    """Number of parameters as "70M", "1.4B", "12B"."""
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _even_pick(items: Sequence, n: int) -> list:
    """At most ``n`` items evenly spaced by position, first and last included."""
    if len(items) <= n:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def _pair_note(n: int, how: str = "max") -> str:
    return "" if n <= 1 else f"\n({how} over {n} head pairs)"


def _wrap(text: str, width: float) -> str:
    """Break ``text`` at " / ", ", " or " " so that no line is much longer than ``width`` chars."""
    words, lines, line = text.split(" "), [], ""
    for w in words:
        if line and len(line) + 1 + len(w) > width:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# 1. induction study
# --------------------------------------------------------------------------------------------

INDUCTION_TITLE = "induction task: training curves and K-composition circuit formation"
_QK_OV_K = re.compile(r"(?:qk_ov|embed_ov)_overlap_max\.k(\d+)$")


def _is_qk_ov(layer: str) -> bool:
    return "~" in layer and not layer.startswith("embed~")


def _is_embed_ov(layer: str) -> bool:
    return layer.startswith("embed~")


def _figure_induction_study(
    tables: Mapping[str, pd.DataFrame],
    logs: Mapping[str, pd.DataFrame],
    *,
    ks: Sequence[int] | None = None,
    events: pd.DataFrame | None = None,
    title: str | None = None,
) -> Figure:
    tables = {str(run): _tidy(t) for run, t in (tables or {}).items()}
    logs = {str(run): _training_log(lg) for run, lg in (logs or {}).items()}
    runs = list(dict.fromkeys([*tables, *logs]))
    has_metrics = any(len(t) for t in tables.values())
    has_logs = any(len(lg) for lg in logs.values())
    if not runs or not (has_metrics or has_logs):
        raise _NoData("neither a metrics table nor a training log has rows")
    colours = _run_colours(runs)
    metrics = set()
    for t in tables.values():
        metrics |= set(t["metric"].unique())
    if ks is None:
        ks = sorted({int(m.group(1)) for name in metrics if (m := _QK_OV_K.match(name))})
    ks = [int(k) for k in ks]

    ckpt_steps = np.unique(np.concatenate([t["step"].to_numpy(dtype=float) for t in tables.values()]
                                          + [np.array([])]))
    log_steps = np.unique(np.concatenate([lg["step"].to_numpy(dtype=float) for lg in logs.values()]
                                         + [np.array([])]))
    decide = ckpt_steps if ckpt_steps.size else log_steps

    def mode(base: str) -> str:
        if any(f"{base}.k{k}" in metrics for k in ks):
            return "per_k"
        return "full" if base in metrics else "absent"

    z_mode, mm_mode = mode("qk_ov_token_diag_zscore"), mode("qk_ov_token_mismatch")
    n_k = len(ks)
    drawn = {"baseline": False, "loss_events": False, "metric_events": False}

    with matplotlib.rc_context(_RC):
        fig = _new_figure(15.0, 3.1 * (1 + n_k) + 0.5)
        gs = fig.add_gridspec(1 + n_k, 4)

        # ---- top row: training curves
        top = [fig.add_subplot(gs[0, i], label=name)
               for i, name in enumerate(("loss", "id_error", "ood_error"))]
        titles = ("training loss", "in-distribution error", "out-of-distribution error")
        ylabels = ("loss (log scale)", "error rate (fraction wrong)", "error rate (fraction wrong)")
        for ax, col, panel_title, ylabel in zip(top, ("loss", "id_error", "ood_error"), titles, ylabels):
            ax.set_title(panel_title)
            values = np.concatenate([lg[col].to_numpy(dtype=float) for lg in logs.values()] + [np.array([])])
            if not np.isfinite(values).any():
                _note(ax, "no training log" if not has_logs else f"no {col} in the training logs")
                continue
            for run in runs:
                lg = logs.get(run)
                if lg is None or lg.empty:
                    continue
                ax.plot(lg["step"].to_numpy(dtype=float), lg[col].to_numpy(dtype=float),
                        color=colours[run], linewidth=1.2, label=run)
                cps = _change_points(events, run, "loss", ["model"])
                drawn["loss_events"] |= _draw_events(ax, cps, colours[run]) > 0
            if col == "loss":
                if (values[np.isfinite(values)] > 0).any():
                    _log_y(ax, values)
                else:
                    ylabel = "loss"
            else:
                ax.set_ylim(-0.02, 1.02)
            ax.set_ylabel(ylabel)
            _step_x(ax, decide, np.union1d(log_steps, ckpt_steps) if ckpt_steps.size else log_steps)

        # ---- one row per k
        def metric_panel(ax, metric: str, pick, how: str, baseline: str | None = None) -> int:
            """Draw ``metric`` (reduced over the layers selected by ``pick``) for every run;
            returns the largest number of layers reduced over (0: nothing drawn)."""
            n_layers, steps_here = 0, []
            base_series: list[pd.Series] = []
            for run in runs:
                t = tables.get(run)
                if t is None or t.empty:
                    continue
                sub = t[t["metric"] == metric]
                sub = sub[sub["layer"].map(pick)]
                if sub.empty:
                    continue
                layers = sorted(sub["layer"].unique(), key=_layer_sort_key)
                n_layers = max(n_layers, len(layers))
                s = _reduce(sub, how)
                steps_here.extend(s.index)
                ax.plot(s.index.to_numpy(dtype=float), s.to_numpy(), color=colours[run],
                        linewidth=1.4, label=run, **_markers(len(s)))
                drawn["metric_events"] |= _draw_events(
                    ax, _change_points(events, run, metric, layers), colours[run]) > 0
                if baseline is not None:
                    b = t[(t["metric"] == baseline) & t["layer"].map(pick)]
                    if not b.empty:
                        base_series.append(_reduce(b, "mean"))
            # The random baseline depends only on (d, k): one line unless the runs differ in d.
            shown: list[pd.Series] = []
            for b in base_series:
                if any(len(b) == len(o) and np.allclose(b.to_numpy(), o.to_numpy(), equal_nan=True)
                       and np.array_equal(b.index, o.index) for o in shown):
                    continue
                ax.plot(b.index.to_numpy(dtype=float), b.to_numpy(), gid="random",
                        label="random subspaces" if not shown else "_random subspaces", **BASELINE_STYLE)
                shown.append(b)
                drawn["baseline"] = True
            if n_layers == 0:
                _note(ax, f"{metric}\nnot computed")
            else:
                _step_x(ax, decide, steps_here)
            return n_layers

        def overlap_axes_style(ax, n: int, title: str) -> None:
            ax.set_title(title)
            if n:
                ax.set_ylim(-0.02, 1.02)
                ax.set_ylabel("max cos of principal angles" + _pair_note(n))

        wide_ab = z_mode == "absent" and mm_mode == "absent"
        for i, k in enumerate(ks):
            row = 1 + i
            ax_a = fig.add_subplot(gs[row, 0:2] if wide_ab else gs[row, 0], label=f"qk_ov.k{k}")
            n = metric_panel(ax_a, f"qk_ov_overlap_max.k{k}", _is_qk_ov, "max", f"qk_ov_overlap_max.k{k}_random")
            overlap_axes_style(ax_a, n, f"QK–OV subspace matching, rank k = {k}")
            ax_b = fig.add_subplot(gs[row, 2:4] if wide_ab else gs[row, 1], label=f"embed_ov.k{k}")
            n = metric_panel(ax_b, f"embed_ov_overlap_max.k{k}", _is_embed_ov, "max",
                             f"embed_ov_overlap_max.k{k}_random")
            overlap_axes_style(ax_b, n, f"embedding–OV matching, rank k = {k}")

        token_panels = [("qk_ov_token_diag_zscore", z_mode, "token_zscore", "token-space diagonal z-score",
                         "z-score of diag(E·QK·OV·Eᵀ)", "max"),
                        ("qk_ov_token_mismatch", mm_mode, "token_mismatch", "token mismatch ratio",
                         "share of tokens not matched", "min")]
        non_per_k = [p for p in token_panels if p[1] != "per_k"]
        for col, (base, mode_, name, panel_title, ylabel, how) in zip((2, 3), token_panels):
            if wide_ab or n_k == 0:
                break
            if mode_ == "per_k":
                specs = [(gs[1 + i, col], k) for i, k in enumerate(ks)]
            elif len(non_per_k) == 2 and n_k > 1:
                # both full rank: stacked wide panels in the right half of the k rows
                half = math.ceil(n_k / 2)
                specs = [(gs[1:1 + half, 2:4] if col == 2 else gs[1 + half:1 + n_k, 2:4], None)]
            else:
                specs = [(gs[1:1 + n_k, col], None)]
            for spec, k in specs:
                ax = fig.add_subplot(spec, label=f"{name}.k{k}" if k is not None else name)
                metric = f"{base}.k{k}" if k is not None else base
                n = metric_panel(ax, metric, _is_qk_ov, how)
                ax.set_title(f"{panel_title}, rank k = {k}" if k is not None else f"{panel_title} (full rank)")
                if n:
                    ax.set_ylabel(ylabel + _pair_note(n, "max" if how == "max" else "best: min"))
                    if base == "qk_ov_token_mismatch":
                        ax.set_ylim(-0.02, 1.02)

        # ---- legend in the free cell of the top row
        ax_leg = fig.add_subplot(gs[0, 3], label="legend")
        ax_leg.set_axis_off()
        handles = [Line2D([], [], color=colours[r], linewidth=1.6, label=r) for r in runs]
        if drawn["baseline"]:
            handles.append(Line2D([], [], label="random subspaces\n(expected max cos)", **BASELINE_STYLE))
        run_cols = [colours[r] for r in runs]
        if drawn["loss_events"]:
            handles.append(_event_handle("change point of the loss", run_cols))
        if drawn["metric_events"]:
            handles.append(_event_handle("change point of the\npanel's metric", run_cols))
        h, lab, hmap = _legend_parts(handles)
        ax_leg.legend(h, lab, handler_map=hmap, loc="center left", title="data setting (run)", frameon=False,
                      fontsize=9, title_fontsize=9, handlelength=3.0)
        fig.suptitle((title or INDUCTION_TITLE) + ("" if n_k == 0 else " (one row per subspace rank k; "
                                                                        "multiple head pairs: best pair)"))
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
    every k of ``qk_ov_overlap_max.k{k}`` / ``embed_ov_overlap_max.k{k}``): QK–OV matching
    ``qk_ov_overlap_max.k{k}`` and embedding–OV matching ``embed_ov_overlap_max.k{k}``, each with
    its ``_random`` baseline (grey dashed, "random subspaces"); then the token-space diagonal
    z-score and the token mismatch ratio, per k (``.k{k}`` names) or, when only the unsuffixed
    (full-rank) metric exists, once as a larger panel titled "(full rank)". With several head pairs
    a panel shows the best pair at each step: the max over pairs, and for the mismatch ratio (where
    lower is better) the min; the y label says so. ``events``: change points drawn as dashed lines
    (loss change points on the training panels; a metric's own in its panel).
    """
    try:
        fig = _figure_induction_study(tables, logs, ks=ks, events=events, title=title)
    except _NoData as exc:
        return _no_data(path, title or INDUCTION_TITLE, str(exc))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 2. rotary sweep
# --------------------------------------------------------------------------------------------

ROTARY_TITLE = "QK–OV matching vs relative position r under rotary embeddings"
_SWEEP = re.compile(r"^qk_ov_rotary_sweep\.(?:k(?P<k>\d+)|(?P<z>zscore))_r(?P<r>-?\d+(?:\.\d+)?)$")


def _offset_axis(ax, offsets: np.ndarray) -> None:
    """x axis of relative positions: symlog with a tick per offset when they are geometric
    (0, 1, 2, 4, 8, 16), linear otherwise."""
    pos = offsets[offsets > 0]
    geometric = pos.size >= 3 and pos.max() / pos.min() >= 8 and np.mean(pos < np.sqrt(pos.min() * pos.max())) >= 0.2
    label = "key offset r = query pos. − key pos."
    if geometric:
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(float(offsets.min()) - 0.1, float(offsets.max()) * 1.15)
        label += " (symlog scale)"
    if offsets.size <= 12:
        ax.xaxis.set_major_locator(FixedLocator(offsets))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(label)


def _figure_rotary_sweep(
    tables: Mapping[str, pd.DataFrame],
    *,
    ks: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    title: str | None = None,
) -> Figure:
    parsed: dict[str, pd.DataFrame] = {}
    baselines: dict[str, pd.DataFrame] = {}
    for run, t in (tables or {}).items():
        df = _tidy(t)
        m = df["metric"].str.extract(_SWEEP)
        sw = df[m["r"].notna()].assign(k=m.loc[m["r"].notna(), "k"], r=m.loc[m["r"].notna(), "r"].astype(float))
        if not sw.empty:
            sw["kind"] = np.where(sw["k"].isna(), "zscore", "k" + sw["k"].fillna("").astype(str))
            parsed[str(run)] = sw
            baselines[str(run)] = df[df["metric"].str.match(r"qk_ov_overlap_max\.k\d+_random$")]
    if not parsed:
        raise _NoData("no qk_ov_rotary_sweep.* metric in the tables")
    runs = list(parsed)
    found_k = sorted({int(k) for sw in parsed.values() for k in sw["k"].dropna().unique()})
    ks = found_k if ks is None else [int(k) for k in ks]
    kinds = [f"k{k}" for k in ks] + (["zscore"] if any((sw["kind"] == "zscore").any() for sw in parsed.values()) else [])
    if not kinds:
        raise _NoData("none of the requested ranks k is in the tables")

    chosen: dict[str, list] = {}
    for run, sw in parsed.items():
        run_steps = np.sort(sw["step"].unique())
        chosen[run] = (_even_pick(list(run_steps), SWEEP_STEPS) if steps is None
                       else [s for s in run_steps if s in set(int(x) for x in steps)])
    every = np.unique(np.concatenate([np.asarray(v, dtype=float) for v in chosen.values()] + [np.array([])]))
    all_steps = np.unique(np.concatenate([sw["step"].to_numpy(dtype=float) for sw in parsed.values()]))
    if every.size == 0:
        raise _NoData("none of the requested steps is in the tables")
    lo, hi = float(every.min()), float(every.max())
    if is_log_spaced(all_steps):
        norm = SymLogNorm(linthresh=1, vmin=lo, vmax=max(hi, lo + 1), base=10)
    else:
        norm = Normalize(vmin=lo, vmax=max(hi, lo + 1))
    cmap = _DEPTH_CMAP
    offsets = np.unique(np.concatenate([sw["r"].to_numpy(dtype=float) for sw in parsed.values()]))

    with matplotlib.rc_context(_RC):
        fig = _new_figure(3.7 * len(kinds) + 1.3, 2.9 * len(runs) + 0.7)
        axes = fig.subplots(len(runs), len(kinds), squeeze=False, sharey="col")
        drawn_baseline = False
        for i, run in enumerate(runs):
            sw = parsed[run]
            for j, kind in enumerate(kinds):
                ax = axes[i, j]
                ax.set_label(f"{run}|{kind}")
                sub = sw[sw["kind"] == kind]
                what = f"rank k = {kind[1:]}" if kind != "zscore" else "token-space z-score (full rank)"
                ax.set_title(f"{run}: {what}")
                if sub.empty:
                    _note(ax, "not computed")
                    continue
                n_pairs = sub["layer"].nunique()
                for s in chosen[run]:
                    one = sub[sub["step"] == s]
                    if one.empty:
                        continue
                    wide = one.pivot_table(index="r", columns="layer", values="value", aggfunc="mean",
                                           dropna=False).sort_index()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        y = np.nanmax(wide.to_numpy(dtype=float), axis=1)
                    ax.plot(wide.index.to_numpy(dtype=float), y, color=cmap(norm(float(s))), linewidth=1.3,
                            marker="o", markersize=3, label=f"step {s}", gid=f"step={s}")
                if kind != "zscore":
                    b = baselines[run]
                    b = b[b["metric"] == f"qk_ov_overlap_max.{kind}_random"]["value"].to_numpy(dtype=float)
                    b = b[np.isfinite(b)]
                    if b.size:
                        ax.axhline(float(np.mean(b)), gid="random", label="random subspaces", **BASELINE_STYLE)
                        drawn_baseline = True
                    ax.set_ylim(-0.02, 1.02)
                    ax.set_ylabel("max cos of principal angles" + _pair_note(n_pairs))
                else:
                    ax.set_ylabel("diagonal z-score" + _pair_note(n_pairs))
                _offset_axis(ax, offsets)
                if i < len(runs) - 1:
                    ax.set_xlabel("")
        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), pad=0.02,
                            aspect=max(20, 12 * len(runs)), shrink=min(1.0, 0.55 + 0.15 * len(runs)))
        cbar.set_label("training step")
        if every.size <= 10:
            cbar.set_ticks(every)
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(_fmt_step))
        cbar.ax.yaxis.set_minor_locator(NullLocator())
        if drawn_baseline:
            fig.legend(handles=[Line2D([], [], label="random subspaces (expected max cos)", **BASELINE_STYLE)],
                       loc="outside lower center", frameon=False)
        fig.suptitle((title or ROTARY_TITLE) + " (one line per checkpoint; max over head pairs)")
        return fig


def plot_rotary_sweep(
    tables: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    *,
    ks: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """``qk_ov_rotary_sweep.k{k}_r{r}`` (and ``.zscore_r{r}``) against the offset r.

    One row per run, one panel per rank k (default: every k found) plus one for the z-score when
    present. One line per checkpoint, coloured by step (sequential colormap, colorbar "training
    step"); ``steps`` default: 8 checkpoints evenly chosen by position, first and last included.
    Values are the max over head pairs. Panels of k show the ``qk_ov_overlap_max.k{k}_random``
    baseline of the same table (it does not depend on r) when present.
    """
    try:
        fig = _figure_rotary_sweep(tables, ks=ks, steps=steps, title=title)
    except _NoData as exc:
        return _no_data(path, title or ROTARY_TITLE, str(exc))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 3. linearity study
# --------------------------------------------------------------------------------------------

LINEARITY_TITLE = "linearity of consecutive layers over training"
_QUANTILE_SUFFIXES = ("p5", "p25", "p50", "p75", "p95", "mean")


def _pair_label(pair: str, prefix: str) -> str:
    """"blocks.0~blocks.1" with prefix "blocks." -> "0 → 1"."""
    parts = pair.split("~")
    return " → ".join(p[len(prefix):] if p.startswith(prefix) and len(p) > len(prefix) else p for p in parts)


def _figure_linearity_study(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    df = _tidy(table)
    if df.empty:
        raise _NoData("the metrics table is empty")
    metrics = set(df["metric"].unique())
    panels = []
    if {"linearity_score", "linearity_score_no_residual"} & metrics:
        panels.append("score")
    for base in ("linearity_per_sample", "consecutive_cosine"):
        if any(f"{base}.{s}" in metrics for s in _QUANTILE_SUFFIXES):
            panels.append(base)
    if "activation_norm" in metrics:
        panels.append("activation_norm")
    if not panels:
        raise _NoData("no linearity_score, linearity_per_sample, consecutive_cosine or activation_norm")

    pair_metrics = df["metric"].str.match(r"^(linearity_|consecutive_cosine)")
    pairs = sorted({l for l in df.loc[pair_metrics, "layer"].unique()}, key=lambda p: tuple(_layer_sort_key(m) for m in p.split("~")))
    layers = sorted(df.loc[df["metric"] == "activation_norm", "layer"].unique(), key=_layer_sort_key)
    members = sorted({p for pair in pairs for p in pair.split("~")} | set(layers), key=_layer_sort_key)
    prefix = _common_prefix(members)
    depths = [_depth(x) for x in members] or [0.0]
    norm = Normalize(vmin=min(depths), vmax=max(max(depths), min(depths) + 1))
    colour = {x: _DEPTH_CMAP(norm(_depth(x.split("~")[0]))) for x in pairs + layers}
    steps = np.sort(df["step"].unique()).astype(float)
    run = ", ".join(sorted(set(df["run"]) - {""}))

    # Layout: the one-axes panels side by side on top; each quantile panel a full-width row of
    # small multiples (one per layer pair: overlapping bands of several pairs are unreadable).
    top = [p for p in ("score", "activation_norm") if p in panels]
    bands = [p for p in ("linearity_per_sample", "consecutive_cosine") if p in panels]
    letters = iter("abcd")
    title_size = _RC["axes.titlesize"]
    with matplotlib.rc_context(_RC):
        heights = ([3.6] if top else []) + [2.9] * len(bands)
        fig = _new_figure(13.0, sum(heights) + 0.5 + 0.3 * len(heights))
        sfigs = fig.subfigures(len(heights), 1, squeeze=False, height_ratios=heights).ravel()
        if top:
            axes = sfigs[0].subplots(1, len(top), squeeze=False)[0]
            for ax, panel in zip(axes, top):
                ax.set_label(panel)
                letter = next(letters)
                if panel == "score":
                    _linearity_score_panel(ax, df, pairs, colour, prefix, metrics)
                    ax.set_title(f"({letter}) linearity score per layer pair")
                else:
                    _activation_norm_panel(ax, df, layers, colour, prefix)
                    ax.set_title(f"({letter}) activation norm per layer")
                _step_x(ax, steps, steps)
        for sf, panel in zip(sfigs[1:] if top else sfigs, bands):
            sub = df[df["metric"].str.startswith(panel + ".")]
            have = [p for p in pairs if (sub["layer"] == p).any()]
            shown = _even_pick(have, MAX_BAND_PAIRS)
            axes = sf.subplots(1, len(shown), squeeze=False, sharey=True)[0]
            for i, (ax, pair) in enumerate(zip(axes, shown)):
                ax.set_label(f"{panel}|{pair}")
                _quantile_bands(ax, sub[sub["layer"] == pair], panel, colour[pair], _pair_label(pair, prefix))
                ax.set_title(_pair_label(pair, prefix).replace(" → ", "\n→ "), color=colour[pair], fontsize=8)
                _step_x(ax, steps, steps)
                if i == 0:
                    ax.set_ylabel("per-sample linearity score" if panel == "linearity_per_sample"
                                  else "cosine per sample")
                else:
                    ax.tick_params(labelleft=False)
            what = ("per-sample linearity score" if panel == "linearity_per_sample"
                    else "per-sample cosine between consecutive layers' outputs")
            cut = f", {len(shown)} of {len(have)} layer pairs (evenly spaced)" if len(shown) < len(have) else ""
            sf.suptitle(f"({next(letters)}) {what}: median and quantile bands{cut}", fontsize=title_size)
            band = [Line2D([], [], color="0.3", linewidth=1.5, label="median"),
                    Patch(facecolor="0.3", alpha=0.45, label="p25–p75"),
                    Patch(facecolor="0.3", alpha=0.2, label="p5–p95")]
            sf.legend(handles=band, loc="outside right upper", frameon=False, fontsize=8)
        head = title or LINEARITY_TITLE + (f": {run}" if run else "")
        fig.suptitle(head + (f"\n(layer names without the prefix {prefix!r})" if prefix else ""))
        return fig


def _linearity_score_panel(ax, df, pairs, colour, prefix, metrics) -> None:
    for pair in pairs:
        for metric, ls in (("linearity_score", "-"), ("linearity_score_no_residual", "--")):
            sub = df[(df["metric"] == metric) & (df["layer"] == pair)]
            if sub.empty:
                continue
            s = _reduce(sub, "mean")
            ax.plot(s.index.to_numpy(dtype=float), s.to_numpy(), color=colour[pair], linestyle=ls,
                    linewidth=1.3, label=f"{_pair_label(pair, prefix)}|{metric}", **_markers(len(s)))
    ax.set_ylabel("linearity score (1 − Procrustes residual)")
    styles = [Line2D([], [], color="0.3", linestyle="-", label="with residual stream"),
              Line2D([], [], color="0.3", linestyle="--", label="without (Y − X)")]
    styles = [h for h, m in zip(styles, ("linearity_score", "linearity_score_no_residual")) if m in metrics]
    ax.legend(handles=_pair_handles(pairs, colour, prefix) + styles, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), frameon=False, title="layer pair", fontsize=7)


def _activation_norm_panel(ax, df, layers, colour, prefix) -> None:
    values = df.loc[df["metric"] == "activation_norm", "value"].to_numpy(dtype=float)
    for layer in layers:
        s = _reduce(df[(df["metric"] == "activation_norm") & (df["layer"] == layer)], "mean")
        ax.plot(s.index.to_numpy(dtype=float), s.to_numpy(), color=colour[layer], linewidth=1.3,
                label=layer[len(prefix):] if prefix else layer, **_markers(len(s)))
    finite = values[np.isfinite(values)]
    log = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
    if log:
        _log_y(ax, values)
    ax.set_ylabel("mean activation norm" + (" (log scale)" if log else ""))
    shown = _even_pick(layers, MAX_LEGEND_LAYERS + 4)
    handles = [Line2D([], [], color=colour[x], linewidth=1.5, label=x[len(prefix):] if prefix else x) for x in shown]
    cut = f"\n({len(shown)} of {len(layers)})" if len(shown) < len(layers) else ""
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              title="layer" + cut, fontsize=7)


def _pair_handles(pairs: Sequence[str], colour: Mapping[str, tuple], prefix: str) -> list[Line2D]:
    """Legend entries for layer pairs; many pairs: only evenly chosen ones (the colour is depth)."""
    shown = _even_pick(list(pairs), MAX_LEGEND_LAYERS + 4)
    return [Line2D([], [], color=colour[p], linewidth=1.5, label=_pair_label(p, prefix)) for p in shown]


def _quantile_bands(ax, sub: pd.DataFrame, base: str, colour, label: str) -> None:
    """Median line (``.p50``, else ``.mean``), p25–p75 band and lighter p5–p95 band."""
    wide = sub.pivot_table(index="step", columns="metric", values="value", aggfunc="mean", dropna=False)
    wide = wide.reindex(np.sort(sub["step"].unique()))
    x = wide.index.to_numpy(dtype=float)

    def col(q):
        name = f"{base}.{q}"
        return wide[name].to_numpy(dtype=float) if name in wide.columns else None

    for lo, hi, alpha, gid in (("p5", "p95", 0.2, "band_p5_p95"), ("p25", "p75", 0.45, "band_p25_p75")):
        a, b = col(lo), col(hi)
        if a is not None and b is not None:
            ax.fill_between(x, a, b, color=colour, alpha=alpha, linewidth=0, gid=gid)
    mid = col("p50") if col("p50") is not None else col("mean")
    if mid is not None:
        ax.plot(x, mid, color=colour, linewidth=1.5, label=label, gid="median", **_markers(len(x)))


def plot_linearity_study(table: pd.DataFrame, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """One run's consecutive-layer metrics (labels ``"blocks.0~blocks.1"``) vs step.

    Top row: (a) ``linearity_score`` (solid) and ``linearity_score_no_residual`` (dashed) per
    layer pair, (b) ``activation_norm`` per layer. Then one full-width row of small multiples
    (one panel per layer pair, at most 6 evenly chosen by depth; the row title says so) for each
    per-sample distribution: (c) ``linearity_per_sample``, (d) ``consecutive_cosine``: median
    line (``.p50``, else ``.mean``), p25–p75 band and lighter p5–p95 band. A panel whose metrics
    are missing is left out (the letters follow the panels drawn). A pair takes the colour of its
    first layer's depth, the same in every panel.
    """
    try:
        fig = _figure_linearity_study(table, title=title)
    except _NoData as exc:
        return _no_data(path, title or LINEARITY_TITLE, str(exc))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 4. gradient PCA study
# --------------------------------------------------------------------------------------------

GRADIENT_PCA_TITLE = "per-sample gradient PCA of the task outputs, per hidden layer"
_EVR = re.compile(r"^gradient_pca_evr\.pc(\d+)$")
_COS = re.compile(r"^gradient_pca_cosine\.pc(\d+)$")


def expected_abs_cosine(d: int) -> float:
    """E|cos| between two independent uniformly random unit vectors in R^d:
    Γ(d/2) / (√π·Γ((d+1)/2)) (≈ √(2/(π·d)) for large d)."""
    d = int(d)
    if d < 1:
        raise ValueError("d must be positive")
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def _display_layer(label: str) -> str:
    """A layer label for a panel title: a pair "a~b" of a model-scope metric reads "a vs b", and
    "blocks.0.linear|out0~blocks.0.linear|out1" reads "blocks.0.linear: out0 vs out1"."""
    a, sep, b = label.partition("~")  # metrics._common.PAIR_SEP (not imported: no metric code here)
    if not sep:
        return label
    (layer_a, out_a), (layer_b, out_b) = _split_output(a), _split_output(b)
    if out_a and out_b and layer_a == layer_b:
        return f"{layer_a}: {out_a} vs {out_b}"
    return f"{a} vs {b}"


def _split_output(label: str) -> tuple[str, str]:
    """"blocks.0.linear|out0" -> ("blocks.0.linear", "out0"); no "|": (label, "")."""
    layer, sep, output = label.rpartition("|")
    return (layer, output) if sep else (label, "")


def _figure_gradient_pca_study(table: pd.DataFrame, *, dims: Mapping[str, int] | int | None = None,
                               title: str | None = None) -> Figure:
    df = _tidy(table)
    evr = df[df["metric"].str.match(_EVR.pattern)].copy()
    cos = df[df["metric"].str.match(_COS.pattern)].copy()
    if evr.empty and cos.empty:
        raise _NoData("no gradient_pca_evr.pc* or gradient_pca_cosine.pc* metric")
    evr = evr.assign(pc=[int(_EVR.match(m).group(1)) for m in evr["metric"]],
                     hidden=[_split_output(x)[0] for x in evr["layer"]],
                     output=[_split_output(x)[1] for x in evr["layer"]])
    # "<layer>|<a>~<layer>|<b>": the hidden layer of side a, the pair "a vs b"
    sides = [(_split_output(x.split("~", 1)[0]), _split_output(x.split("~", 1)[-1])) for x in cos["layer"]]
    cos = cos.assign(pc=[int(_COS.match(m).group(1)) for m in cos["metric"]],
                     hidden=[a[0] for a, _ in sides], pair=[f"{a[1]} vs {b[1]}" for a, b in sides])
    hidden = sorted(set(evr["hidden"]) | set(cos["hidden"]), key=_layer_sort_key)
    outputs = sorted(evr["output"].unique())
    out_pairs = sorted(cos["pair"].unique())
    n_pc = int(max([*evr["pc"], *cos["pc"], 1]))
    pc_colour = {i: matplotlib.colormaps["tab10"]((i - 1) % 10) for i in range(1, n_pc + 1)}
    style = {o: ["-", "--", ":", "-."][i % 4] for i, o in enumerate(outputs)}
    pair_style = {p: ["-", "--", ":", "-."][i % 4] for i, p in enumerate(out_pairs)}
    steps = np.sort(df["step"].unique()).astype(float)
    dim_of = (lambda h: dims) if isinstance(dims, (int, np.integer)) else (lambda h: (dims or {}).get(h))
    ref_drawn = False

    with matplotlib.rc_context(_RC):
        fig = _new_figure(11.8, 3.2 * len(hidden) + 0.6)
        axes = fig.subplots(len(hidden), 2, squeeze=False)
        for row, h in enumerate(hidden):
            ax_e, ax_c = axes[row]
            ax_e.set_label(f"{h}|evr")
            ax_c.set_label(f"{h}|cosine")
            sub = evr[evr["hidden"] == h]
            for (pc, out), one in sub.groupby(["pc", "output"], sort=True):
                s = _reduce(one, "mean")
                ax_e.plot(s.index.to_numpy(dtype=float), s.to_numpy(), color=pc_colour[pc], linestyle=style[out],
                          linewidth=1.3, label=f"PC{pc}|{out}", **_markers(len(s)))
            ax_e.set_title(f"{h}: explained variance of gradient PCs")
            ax_e.set_ylabel("explained variance ratio")
            ax_e.set_ylim(-0.02, 1.02)
            if sub.empty:
                _note(ax_e, "gradient_pca_evr not computed")
            sub = cos[cos["hidden"] == h]
            for (pc, pair), one in sub.groupby(["pc", "pair"], sort=True):
                s = _reduce(one, "mean")
                ax_c.plot(s.index.to_numpy(dtype=float), s.to_numpy(), color=pc_colour[pc],
                          linestyle=pair_style[pair], linewidth=1.3, label=f"PC{pc}|{pair}", **_markers(len(s)))
            d = dim_of(h)
            if d:
                ax_c.axhline(expected_abs_cosine(d), color="0.35", linestyle=":", linewidth=1.2, gid="random",
                             label=f"random unit vectors (d = {d})")
                ax_c.text(0.01, expected_abs_cosine(d), f" random, d = {int(d)}", transform=ax_c.get_yaxis_transform(),
                          ha="left", va="bottom", fontsize=7, color="0.35")
                ref_drawn = True
            pair_txt = out_pairs[0] if len(out_pairs) == 1 else "the two outputs"
            ax_c.set_title(f"{h}: alignment of the i-th PCs ({pair_txt})")
            ax_c.set_ylabel("|cos| between the outputs' i-th PCs")
            ax_c.set_ylim(-0.02, 1.02)
            if sub.empty:
                _note(ax_c, "gradient_pca_cosine not computed")
            for ax in (ax_e, ax_c):
                if ax.lines:
                    _step_x(ax, steps, steps)
                if row < len(hidden) - 1:
                    ax.set_xlabel("")
        handles = [Line2D([], [], color=pc_colour[i], linewidth=1.8, label=f"PC{i}") for i in range(1, n_pc + 1)]
        if len(outputs) > 1:
            handles += [Line2D([], [], color="0.3", linestyle=style[o], label=f"output {o}") for o in outputs]
        if len(out_pairs) > 1:
            handles += [Line2D([], [], color="0.3", linestyle=pair_style[p], label=p) for p in out_pairs]
        if ref_drawn:
            handles.append(Line2D([], [], color="0.35", linestyle=":", linewidth=1.2,
                                  label="E|cos| of random\nunit vectors"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False, title="colour: component\n"
                   "line style: output")
        fig.suptitle(title or GRADIENT_PCA_TITLE)
        return fig


def plot_gradient_pca_study(table: pd.DataFrame, path: str | os.PathLike, *,
                            dims: Mapping[str, int] | int | None = None, title: str | None = None) -> Path:
    """Gradient PCA of the multi-task MLP: one row per hidden layer.

    Left: ``gradient_pca_evr.pc{i}`` (layer ``"<layer>|<output>"``) vs step, colour = component,
    line style = output. Right: ``gradient_pca_cosine.pc{i}`` (layer ``"<layer>|<a>~<layer>|<b>"``),
    the |cos| between the two outputs' i-th components, with a dotted reference line at the
    expected |cos| of two random unit vectors in R^d when ``dims`` gives the layer's width d
    (``{"blocks.0.linear": 32}``, or one int for every layer); without it the line is left out.
    """
    try:
        fig = _figure_gradient_pca_study(table, dims=dims, title=title)
    except _NoData as exc:
        return _no_data(path, title or GRADIENT_PCA_TITLE, str(exc))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 5. model size study
# --------------------------------------------------------------------------------------------

MODEL_SIZE_TITLE = "training-dynamics summaries across model sizes"


def components_for(explained: pd.DataFrame, threshold: float = 0.9) -> float:
    """Smallest component number whose ``cumulative`` reaches ``threshold`` (NaN if none does)."""
    one = explained.sort_values("component")
    reached = one[pd.to_numeric(one["cumulative"], errors="coerce") >= threshold - 1e-9]
    return float(reached["component"].iloc[0]) if len(reached) else math.nan


def _size_axis(ax, sizes: Sequence[float]) -> None:
    ax.set_xscale("log")
    sizes = np.unique(np.asarray(sizes, dtype=float))
    rotate = {"rotation": 40, "ha": "right", "rotation_mode": "anchor"} if sizes.size > 5 else {}
    ax.set_xticks(sizes, [_fmt_size(v) for v in sizes], **rotate)
    ax.xaxis.set_minor_locator(NullLocator())
    if sizes.size:
        span = sizes.max() / sizes.min()
        pad = max(span, 10) ** 0.06
        ax.set_xlim(sizes.min() / pad, sizes.max() * pad)
    ax.set_xlabel("model size (parameters, log scale)")


def _figure_model_size_study(explained: pd.DataFrame, correlation: pd.DataFrame,
                             sizes: Mapping[str, float], *, title: str | None = None) -> Figure:
    sizes = {str(r): float(v) for r, v in (sizes or {}).items()
             if v is not None and np.isfinite(float(v)) and float(v) > 0}
    ex = explained.copy() if explained is not None and len(explained) else pd.DataFrame(columns=["run"])
    co = correlation.copy() if correlation is not None and len(correlation) else pd.DataFrame(columns=["run"])
    if not sizes:
        raise _NoData("no model size given")
    for df in (ex, co):
        df["run"] = df["run"].astype(str) if "run" in df.columns else ""
    unsized = sorted((set(ex["run"]) | set(co["run"])) - set(sizes))
    ex = ex[ex["run"].isin(sizes)] if {"matrix", "component", "explained_variance_ratio", "cumulative"} <= set(ex.columns) else ex.iloc[0:0]
    co = co[co["run"].isin(sizes)] if {"x_metric", "y_metric", "layer", "pearson_r"} <= set(co.columns) else co.iloc[0:0]
    if ex.empty and co.empty:
        raise _NoData("no PCA or correlation rows for a run with a model size")
    runs_sized = sorted(set(ex["run"]) | set(co["run"]), key=lambda r: sizes[r])
    xs = [sizes[r] for r in runs_sized]
    for c in ("component", "explained_variance_ratio", "cumulative"):
        if c in ex.columns:
            ex[c] = pd.to_numeric(ex[c], errors="coerce")
    for c in ("pearson_r", "r_squared"):
        if c in co.columns:
            co[c] = pd.to_numeric(co[c], errors="coerce")
    if "r_squared" not in co.columns:
        co["r_squared"] = co["pearson_r"] ** 2 if "pearson_r" in co.columns else np.nan
    if not co.empty:
        co["pair"] = co["x_metric"].astype(str) + " vs " + co["y_metric"].astype(str)
        co["layer"] = co["layer"].astype(str)
    pairs = list(dict.fromkeys(co["pair"])) if not co.empty else []
    pair_colour = _run_colours(pairs)
    known = [m for m in _MATRIX_TITLES if not ex.empty and m in set(ex["matrix"])]
    matrices = known + (sorted(set(ex["matrix"].astype(str)) - set(known)) if not ex.empty else [])
    m_style = {m: (["-", "--", ":"][i % 3], ["o", "s", "^"][i % 3], ["tab:blue", "tab:orange", "tab:green"][i % 3])
               for i, m in enumerate(matrices)}
    not_reached = []

    with matplotlib.rc_context(_RC):
        fig = _new_figure(11.5, 8.2)
        axes = fig.subplots(2, 2, squeeze=False).ravel()
        for ax, name in zip(axes, ("pc1", "n90", "pearson_r", "r_squared")):
            ax.set_label(name)
        ax_pc1, ax_n90, ax_r, ax_r2 = axes
        for m in matrices:
            ls, mk, c = m_style[m]
            one = ex[ex["matrix"].astype(str) == m]
            x, pc1, n90 = [], [], []
            for run in runs_sized:
                r = one[one["run"] == run]
                if r.empty:
                    continue
                x.append(sizes[run])
                first = r[r["component"] == r["component"].min()]["explained_variance_ratio"]
                pc1.append(float(first.iloc[0]) if len(first) else math.nan)
                n90.append(components_for(r))
                if not np.isfinite(n90[-1]):
                    not_reached.append(f"{run} ({m})")
            label = _MATRIX_TITLES.get(m, m)
            ax_pc1.plot(x, pc1, color=c, linestyle=ls, marker=mk, markersize=5, linewidth=1.4, label=label)
            ax_n90.plot(x, n90, color=c, linestyle=ls, marker=mk, markersize=5, linewidth=1.4, label=label)
        ax_pc1.set_title("(a) variance explained by the first principal component")
        ax_pc1.set_ylabel("PC1 explained variance ratio")
        ax_pc1.set_ylim(0, 1.02)
        ax_n90.set_title("(b) components needed for 90 % of the variance"
                         + ("\n(not reached: " + ", ".join(not_reached) + ")" if not_reached else ""))
        ax_n90.set_ylabel("number of components")
        ax_n90.yaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in (ax_pc1, ax_n90):
            if matrices:
                ax.legend(loc="best", title="PCA matrix", fontsize=7)
            else:
                _note(ax, "no PCA result")

        for ax, col, panel_title, ylabel in ((ax_r, "pearson_r", "(c) correlation of metric pairs over training",
                                        "Pearson r"),
                                       (ax_r2, "r_squared", "(d) variance of y explained by x (linear fit)",
                                        "R²")):
            for j, pair in enumerate(pairs):
                one = co[co["pair"] == pair]
                # a small sideways offset per pair so that points of different pairs do not hide
                shift = 10 ** (0.015 * (j - (len(pairs) - 1) / 2))
                summary = one["layer"].isin(list(SUMMARY_ROW_LABELS))
                mean = one[summary].assign(size=lambda d: d["run"].map(sizes)).sort_values("size")
                layer = one[~summary]
                ax.scatter(layer["run"].map(sizes).to_numpy(dtype=float) * shift, layer[col].to_numpy(dtype=float),
                           s=9, color=pair_colour[pair], alpha=0.45, linewidths=0, gid=f"layers|{pair}")
                ax.plot(mean["size"].to_numpy(dtype=float) * shift, mean[col].to_numpy(dtype=float),
                        color=pair_colour[pair], marker="o", markersize=5, linewidth=1.4, label=pair,
                        gid=f"mean|{pair}")
            ax.set_title(panel_title)
            ax.set_ylabel(ylabel)
            if col == "pearson_r":
                ax.set_ylim(-1.05, 1.05)
                ax.axhline(0, color="0.5", linewidth=0.8)
            else:
                ax.set_ylim(-0.02, 1.02)
            if not pairs:
                _note(ax, "no correlation result")
        for ax in axes:
            _size_axis(ax, xs)
        if pairs:
            handles = [Line2D([], [], color=pair_colour[p], marker="o", markersize=5, linewidth=1.4, label=p)
                       for p in pairs]
            handles += [Line2D([], [], color="0.3", marker="o", markersize=5, linewidth=1.4, label="mean over layers"),
                        Line2D([], [], color="0.3", marker="o", markersize=3.5, linewidth=0, alpha=0.5,
                               label="single layer")]
            fig.legend(handles=handles, loc="outside lower center", ncol=min(3, len(handles)), frameon=False,
                       title="metric pair (x vs y)")
        fig.suptitle((title or MODEL_SIZE_TITLE)
                     + (f"\n(left out, no model size: {', '.join(unsized)})" if unsized else ""))
        return fig


def plot_model_size_study(explained: pd.DataFrame, correlation: pd.DataFrame, sizes: Mapping[str, float],
                          path: str | os.PathLike, *, title: str | None = None) -> Path:
    """PCA and correlation summaries of several models against their size (log x axis, ticks
    like "70M", "1.4B"): (a) PC1 explained variance ratio of both PCA matrices; (b) the number
    of components needed for 90 % of the variance; (c) Pearson r per metric pair, the
    ``layer == "mean"`` row as line + markers and the single layers as small points; (d) R² the
    same. ``explained``/``correlation`` are the outputs of :mod:`ckptlens.analysis` with a ``run``
    column; ``sizes``: run -> number of parameters (runs without a size are left out, named in
    the title).
    """
    try:
        fig = _figure_model_size_study(explained, correlation, sizes, title=title)
    except _NoData as exc:
        return _no_data(path, title or MODEL_SIZE_TITLE, str(exc))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# 6. run comparison
# --------------------------------------------------------------------------------------------


def _figure_run_comparison(
    table: pd.DataFrame,
    metric: str,
    *,
    runs: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    events: pd.DataFrame | None = None,
    max_panels: int = 12,
    title: str | None = None,
) -> Figure:
    df = _tidy(table)
    df = df[df["metric"] == metric]
    if df.empty:
        raise _NoData(f"no rows of {metric}")
    present = list(dict.fromkeys(df["run"]))
    run_list = [str(r) for r in runs if str(r) in present] if runs is not None else sorted(present)
    if not run_list:
        raise _NoData("none of the requested runs has rows of this metric")
    df = df[df["run"].isin(run_list)]
    per_run = [set(df.loc[df["run"] == r, "layer"]) for r in run_list]
    common = set.intersection(*per_run)
    note = ""
    if layers is not None:
        wanted = [str(x) for x in layers if str(x) in set.union(*per_run)]
    else:
        if not common:
            common, note = set.union(*per_run), "; layers differ between runs"
        wanted = sorted(common, key=_layer_sort_key)
    if not wanted:
        raise _NoData("none of the requested layers has rows")
    shown = _even_pick(wanted, max(1, int(max_panels)))
    if len(shown) < len(wanted):
        note += f"; {len(shown)} of {len(wanted)} layers, evenly spaced in depth"
    colours = _run_colours(run_list)
    values = df["value"].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    log = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
    steps = np.sort(df["step"].unique()).astype(float)
    display = {layer: _display_layer(layer) for layer in shown}
    prefix = _common_prefix(list(display.values()))
    long_names = max(len(x) for x in display.values()) > 28
    n = len(shown)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    any_event = False

    with matplotlib.rc_context(_RC):
        fig = _new_figure(3.5 * ncols + 1.8, 2.7 * nrows + 0.7)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
        for ax in axes[n:]:
            ax.set_visible(False)
        for i, (ax, layer) in enumerate(zip(axes, shown)):
            ax.set_label(layer)
            for run in run_list:
                sub = df[(df["run"] == run) & (df["layer"] == layer)]
                if sub.empty:
                    continue
                s = _reduce(sub, "mean")
                ax.plot(s.index.to_numpy(dtype=float), s.to_numpy(), color=colours[run], linewidth=1.3,
                        label=run, **_markers(len(s)))
                any_event |= _draw_events(ax, _change_points(events, run, metric, [layer]), colours[run]) > 0
            ax.set_title(_wrap(display[layer][len(prefix):] if long_names and prefix else display[layer], 44))
            _step_x(ax, steps, steps)
            if log:
                _log_y(ax, finite)
            if i % ncols == 0:
                ax.set_ylabel(axis_label(metric, log))
            else:
                ax.tick_params(labelleft=False)
            if i + ncols < n:  # another panel below: its x axis says it
                ax.set_xlabel("")
        handles = [Line2D([], [], color=colours[r], linewidth=1.6, label=r) for r in run_list]
        if any_event:
            handles.append(_event_handle("change point", [colours[r] for r in run_list]))
        h, lab, hmap = _legend_parts(handles)
        fig.legend(h, lab, handler_map=hmap, loc="outside right upper", frameon=False, title="run",
                   handlelength=3.0)
        details = [d for d in ([f"layer names after {prefix!r}"] if long_names and prefix else [])
                   + [x.strip() for x in note.split(";") if x.strip()]]
        head = title or f"{metric} per layer: {len(run_list)} runs compared"
        fig.suptitle(_wrap(head + (f" ({'; '.join(details)})" if details else ""), 120))
        return fig


def plot_run_comparison(
    table: pd.DataFrame,
    metric: str,
    path: str | os.PathLike,
    *,
    runs: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    events: pd.DataFrame | None = None,
    max_panels: int = 12,
    title: str | None = None,
) -> Path:
    """One metric of several runs: one panel per layer, one line per run, shared y axis.

    Layers: ``layers`` if given, else those common to all runs (all layers if none is), in depth
    order; beyond ``max_panels``, evenly spaced ones (the title says how many of how many). Runs in
    the order of ``runs`` (default: sorted), qualitative colours, one legend for the figure.
    ``events``: change points of the same run, metric and layer as dashed lines.
    """
    try:
        fig = _figure_run_comparison(table, metric, runs=runs, layers=layers, events=events,
                                     max_panels=max_panels, title=title)
    except _NoData as exc:
        return _no_data(path, title or f"{metric}: run comparison", str(exc))
    return _save(fig, path)


# --------------------------------------------------------------------------------------------
# dispatch from the workflow's figure spec
# --------------------------------------------------------------------------------------------

FIGURE_KINDS = ("compare", "induction", "rotary_sweep", "linearity", "gradient_pca", "model_size")


def plot_study_figure(
    spec: Mapping,
    path: str | os.PathLike,
    *,
    tables: Mapping[str, pd.DataFrame] | None = None,
    dynamics: Mapping[str, pd.DataFrame] | None = None,
    logs: Mapping[str, pd.DataFrame] | None = None,
    pca: Mapping[str, pd.DataFrame] | None = None,
    correlation: Mapping[str, pd.DataFrame] | None = None,
) -> Path:
    """One figure of the config's ``figures`` section: ``spec`` = ``{kind, runs, labels?, title?,
    metric?, layers?, ks?, sizes?}`` (as normalised by :func:`ckptlens.config.figures`: ``runs`` a
    list, ``labels`` run -> legend label; a ``runs`` mapping is read as the labels too).

    The per-run inputs are keyed by run: ``tables`` (tidy metrics), ``dynamics`` (the events of
    :func:`ckptlens.dynamics.detect_dynamics`), ``logs`` (training logs), ``pca`` /
    ``correlation`` (:mod:`ckptlens.analysis` outputs). Runs are shown under their labels, in
    the order of ``runs``. ``linearity`` and ``gradient_pca`` show one run: the first that has a
    table. ``layers`` (compare) are module patterns (``*`` within a dotted component, ``**``
    across). ``model_size`` sizes come from ``sizes``, else from the run name ("70m", "1.4b").
    """
    kind = spec.get("kind")
    runs_spec = spec.get("runs") or []
    labels = dict(spec.get("labels") or (runs_spec if isinstance(runs_spec, Mapping) else {}))
    runs = [str(r) for r in runs_spec]
    labels = {r: str(labels.get(r, r)) for r in runs}
    title = spec.get("title")

    def relabel(per_run):
        return {labels[r]: per_run[r] for r in runs if per_run and per_run.get(r) is not None}

    frames = [d.assign(run=labels[r]) for r, d in _for_runs(dynamics, runs).items() if len(d)]
    events = pd.concat(frames, ignore_index=True) if frames else None

    if kind == "induction":
        return plot_induction_study(relabel(tables), relabel(logs), path, ks=spec.get("ks"), events=events,
                                    title=title)
    if kind == "rotary_sweep":
        return plot_rotary_sweep(relabel(tables), path, ks=spec.get("ks"), title=title)
    if kind in ("linearity", "gradient_pca"):
        first = next((r for r in runs if tables and tables.get(r) is not None and len(tables[r])), None)
        draw = plot_linearity_study if kind == "linearity" else plot_gradient_pca_study
        default = LINEARITY_TITLE if kind == "linearity" else GRADIENT_PCA_TITLE
        if first is None:
            return _no_data(path, title or default, "no metrics table for the figure's runs")
        extra = {"dims": spec["dims"]} if kind == "gradient_pca" and spec.get("dims") else {}
        return draw(tables[first], path, title=title or f"{default}: {labels[first]}", **extra)
    if kind == "model_size":
        sizes = {}
        for r in runs:
            given = (spec.get("sizes") or {}).get(r)
            size = given if given else parse_model_size(r)
            if size:
                sizes[r] = float(size)
        ex = [d.assign(run=r) for r, d in _for_runs(pca, runs).items() if len(d)]
        co = [d.assign(run=r) for r, d in _for_runs(correlation, runs).items() if len(d)]
        return plot_model_size_study(pd.concat(ex, ignore_index=True) if ex else None,
                                     pd.concat(co, ignore_index=True) if co else None, sizes, path, title=title)
    if kind == "compare":
        metric = str(spec.get("metric", ""))
        parts = [d.assign(run=labels[r]) for r, d in _for_runs(tables, runs).items() if len(d)]
        table = pd.concat(parts, ignore_index=True) if parts else None
        layers = None
        if spec.get("layers") and table is not None:
            from .patterns import select

            names = sorted(table.loc[table["metric"].astype(str) == metric, "layer"].astype(str).unique(),
                           key=_layer_sort_key)
            layers = select(spec["layers"], names)
            if not layers:
                return _no_data(path, title or f"{metric}: run comparison",
                                f"no layer of {metric} matches {list(spec['layers'])}")
        return plot_run_comparison(table, metric, path, runs=[labels[r] for r in runs], layers=layers,
                                   events=events, title=title)
    return _no_data(path, title or "study figure", f"unknown figure kind {kind!r}")


def _for_runs(per_run: Mapping[str, pd.DataFrame] | None, runs: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The entries of ``per_run`` for ``runs`` (in that order) that are not None."""
    return {r: per_run[r] for r in runs if per_run and per_run.get(r) is not None}
