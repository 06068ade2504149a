"""Figures of a tidy metrics table and of the outputs of :mod:`ckptlens.analysis`.

Every function writes one PNG (or one per metric) and returns its path. Common behaviour:

* parent directories are created; the PNG is written to a temporary file in the same directory
  and moved into place with ``os.replace``, so no half-written PNG ever sits at the final path
  (a workflow engine must never take a truncated file for a result);
* an empty input gives a figure that says "no data" instead of an exception, because a
  report with one blank panel is more useful than a failed workflow;
* training steps go on a symlog x axis when they are log-spaced (see :func:`step_axis`), so
  that step 0 and the early, densely sampled checkpoints stay visible.

Figures are built as ``matplotlib.figure.Figure`` objects drawn with the Agg canvas, never
through ``pyplot``: there is no global figure registry to leak into or to close, and importing
this module does not switch the backend of a notebook that uses pyplot itself. Only numpy,
pandas and matplotlib are imported (no torch, no scikit-learn).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator

from .labels import SUMMARY_ROW_LABELS, metric_label

__all__ = [
    "DPI",
    "axis_label",
    "is_log_spaced",
    "step_axis",
    "plot_metric_trajectories",
    "plot_training_curves",
    "plot_pca",
    "plot_correlation",
]

DPI = 150
#: Up to this many layers a figure gets a legend naming each layer; beyond it a colorbar.
MAX_LEGEND_LAYERS = 10
#: Heatmap cells are annotated with their value up to this many rows x columns.
ANNOTATE_MAX_ROWS, ANNOTATE_MAX_COLS = 20, 8
#: At most this many principal components are drawn per PCA panel.
MAX_PCA_COMPONENTS = 30
_LINESTYLES = ["-", "--", ":", "-."]
_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "figure.titlesize": 11,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
}
_FIRST_INT = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on the Agg canvas, with constrained (tight) layout."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically: temporary file in the same directory, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target so that os.replace is an atomic rename (same filesystem);
    # a dot-name so that a glob on "*.png" never picks up a file still being written.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=DPI)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a figure is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        fig.clear()  # drop the artists now rather than whenever the GC gets to the figure
    return path


def _no_data(path: str | os.PathLike, title: str, detail: str = "") -> Path:
    """A small figure that says "no data" (and why), in place of a crash on empty input; the job's
    log says so too."""
    print(f"WARNING: {path}: no data for {title!r}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    with matplotlib.rc_context(_RC):
        fig = _new_figure(5.0, 3.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.55, "no data", ha="center", va="center", fontsize=16, color="0.35",
                transform=ax.transAxes)
        if detail:
            ax.text(0.5, 0.35, detail, ha="center", va="center", fontsize=8, color="0.45",
                    transform=ax.transAxes, wrap=True)
        return _save(fig, path)


def _layer_sort_key(layer: str) -> tuple[float, str]:
    """Depth order: first integer in the name, ties by name (same rule as ckptlens.analysis).

    Kept as a copy here, not imported, because analysis imports scikit-learn and this module
    must not.
    """
    match = _FIRST_INT.search(layer)
    if match is not None:
        return (float(match.group()), layer)
    return (-1.0 if "emb" in layer.lower() else float("inf"), layer)


def _common_prefix(names: Sequence[str]) -> str:
    """Longest common prefix of ``names`` that ends at a '.' (so labels lose whole parts)."""
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(list(names))
    cut = prefix.rfind(".")
    prefix = prefix[: cut + 1] if cut >= 0 else ""
    # Never strip a name down to nothing.
    return prefix if all(len(n) > len(prefix) for n in names) else ""


def _log_y(ax, values: np.ndarray) -> None:
    """Log y axis; over less than two decades, plain-number tick labels ("3", "0.5") instead
    of the default 3×10^0, which are hard to read, and labelled minor ticks so a few show."""
    ax.set_yscale("log")
    pos = values[np.isfinite(values) & (values > 0)]
    if pos.size and pos.max() / pos.min() < 100:
        plain = FuncFormatter(lambda v, _: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        # within one decade every minor tick is labelled; over one to two decades, 2 and 5 times
        # a power of ten (a loss from 4 to 0.15 spans one major tick only)
        ax.yaxis.set_minor_formatter(plain if pos.max() / pos.min() < 10 else FuncFormatter(_two_and_five))


def _two_and_five(v: float, _pos=None) -> str:
    """Tick label for 2·10^k and 5·10^k only."""
    if not np.isfinite(v) or v <= 0:
        return ""
    mantissa = v / 10 ** np.floor(np.log10(v))
    return f"{v:g}" if min(abs(mantissa - 2), abs(mantissa - 5)) < 1e-6 else ""


def axis_label(metric: str, log: bool = False, width: int = 40) -> str:
    """The y-axis label of a metric: its readable name (:mod:`ckptlens.labels`), the scale, and
    line breaks so that a long name fits beside a panel."""
    return textwrap.fill(metric_label(metric) + (" (log scale)" if log else ""), width)


def _component_ticks(n: int) -> list[int]:
    """Component numbers to label: all up to 12, else 1 and every 5th (the first must show)."""
    return list(range(1, n + 1)) if n <= 12 else [1] + list(range(5, n + 1, 5))


def _sanitize(name: str) -> str:
    """A metric name made safe for a file name: [A-Za-z0-9._-] only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "metric"


def _finite(values: Iterable) -> np.ndarray:
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


# --------------------------------------------------------------------------------------------
# step axis
# --------------------------------------------------------------------------------------------


def is_log_spaced(steps: Iterable[float]) -> bool:
    """Whether checkpoint steps are log-spaced, i.e. are best shown on a log-like axis.

    Two conditions: the positive steps span more than a factor 100 (max/min), and they are
    roughly geometric rather than even: at least 20 % of them lie below the geometric midpoint
    sqrt(min·max). Evenly spaced steps put ~1/ratio of their points there (1 % for 1..1000),
    a geometric series ~50 %; Pythia's 0,1,2,4,…,512,1000,3000,13000,…,143000 has 35 %.
    With fewer than 3 positive steps the spacing says nothing and the span alone decides.
    """
    arr = _finite(steps)
    pos = np.unique(arr[arr > 0])
    if pos.size < 2 or pos.max() / pos.min() <= 100:
        return False
    if pos.size < 3:
        return True
    below = np.mean(pos < np.sqrt(pos.min() * pos.max()))
    return bool(below >= 0.2)


def step_axis(ax, steps: Iterable[float]) -> str:
    """Scale and label the x axis of ``ax`` for training ``steps``; returns the scale name.

    Log-spaced steps (:func:`is_log_spaced`) get ``symlog`` with ``linthresh=1`` (linear
    between 0 and 1, logarithmic beyond, so step 0 is drawn) and the label
    "training step (symlog scale)"; anything else a linear axis labelled "training step".
    """
    steps = list(steps)
    if is_log_spaced(steps):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("training step (symlog scale)")
        arr = _finite(steps)
        # Start exactly at the first step: the default margin on a symlog axis would reach
        # into negative steps, which do not exist.
        ax.set_xlim(float(arr.min()), float(arr.max()) * 1.15)
        return "symlog"
    ax.set_xscale("linear")
    ax.set_xlabel("training step")
    return "linear"


# --------------------------------------------------------------------------------------------
# metric trajectories
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
    parsed = {}
    for layer in layers:
        m = _FIRST_INT.search(layer)
        if m is None:
            parsed = None
            break
        parsed[layer] = (int(m.group()), layer[: m.start()] + "{i}" + layer[m.end():])
    kinds = sorted({k for _, k in parsed.values()}) if parsed else []
    if parsed and len(kinds) <= len(_LINESTYLES) and len(set(parsed.values())) == len(layers):
        style = {k: _LINESTYLES[i] if len(kinds) > 1 else "-" for i, k in enumerate(kinds)}
        colour = {layer: float(idx) for layer, (idx, _) in parsed.items()}
        linestyle = {layer: style[kind] for layer, (_, kind) in parsed.items()}
        return colour, linestyle, "layer index (depth)", style if len(kinds) > 1 else {}
    colour = {layer: float(rank) for rank, layer in enumerate(layers)}
    return colour, {layer: "-" for layer in layers}, "layer (depth order)", {}


def plot_metric_trajectories(
    table: pd.DataFrame, out_dir: str | os.PathLike, events: pd.DataFrame | None = None
) -> list[Path]:
    """One PNG per metric, ``trajectory_{metric}.png``: the metric of every layer vs step.

    One line per layer, coloured by depth with the sequential viridis map (see
    ``_layer_styles``: colour = layer index parsed from the first integer of the name, line
    style = sublayer kind when a few kinds share the indices). Up to 10 layers get a legend,
    more a colorbar (plus a small line-style legend). Several runs in the table give one
    panel per run, sharing the y axis. NaN values and missing steps are gaps in the line.
    The y axis is logarithmic when all values are positive and span more than a factor 100.

    ``events`` (optional, the table of :func:`ckptlens.dynamics.detect_dynamics`: run, metric,
    layer, kind, step, …) marks each layer's change points as a short vertical dashed tick in the
    layer's colour and its convergence step as an open circle on the line.

    An empty table writes ``trajectory_no_data.png``; a metric without a finite value gets a
    "no data" figure under its own name. Returns the paths written, in metric order.
    """
    out_dir = Path(out_dir)
    if table is None or len(table) == 0:
        return [_no_data(out_dir / "trajectory_no_data.png", "metric trajectories",
                         "the metrics table is empty")]
    df = table.copy()
    if "run" not in df.columns:
        df["run"] = ""
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["run"], df["layer"], df["metric"] = (df[c].astype(str) for c in ("run", "layer", "metric"))

    paths: list[Path] = []
    used: set[str] = set()
    for metric, sub in df.groupby("metric", sort=True):
        # Distinct metrics can sanitize to the same file name ("a/b", "a b"): never overwrite.
        stem, n = _sanitize(metric), 2
        name = stem
        while name in used:
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        path = out_dir / f"trajectory_{name}.png"
        finite = sub["value"].to_numpy()[np.isfinite(sub["value"].to_numpy())]
        if finite.size == 0:
            paths.append(_no_data(path, f"{metric} per layer", "no finite value in the table"))
            continue
        marks = None
        if events is not None and len(events):
            marks = events[events["metric"].astype(str) == metric]
        paths.append(_plot_one_metric(sub, metric, finite, path, marks))
    return paths


def _mark_events(ax, marks: pd.DataFrame, run: str, layer: str, steps, values, color) -> int:
    """Change points (dashed vertical tick spanning the layer's jump) and the convergence step
    (open circle) of one layer's line; returns how many were drawn."""
    rows = marks[(marks["run"].astype(str) == run) & (marks["layer"].astype(str) == layer)]
    drawn = 0
    for kind, step in zip(rows["kind"], pd.to_numeric(rows["step"], errors="coerce")):
        if not np.isfinite(step) or step not in set(steps):
            continue
        i = int(np.searchsorted(steps, step))
        if kind == "change_point":
            lo, hi = values[max(i - 1, 0)], values[i]
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([step, step], [lo, hi], color=color, linestyle=(0, (2, 1.5)), linewidth=1.6,
                        alpha=0.9, zorder=4)
                ax.axvline(step, color=color, linestyle=":", linewidth=0.8, alpha=0.6, zorder=1)
                drawn += 1
        elif kind == "converged" and np.isfinite(values[i]):
            ax.plot([step], [values[i]], marker="o", markersize=6, markerfacecolor="none",
                    markeredgecolor=color, markeredgewidth=1.2, linestyle="none", zorder=5)
            drawn += 1
    return drawn


def _plot_one_metric(sub: pd.DataFrame, metric: str, finite: np.ndarray, path: Path,
                     marks: pd.DataFrame | None = None) -> Path:
    runs = sorted(sub["run"].unique())
    layers = sorted(sub["layer"].unique(), key=_layer_sort_key)
    colour, linestyle, scale_label, kind_style = _layer_styles(layers)
    cvals = np.array(list(colour.values()))
    norm = Normalize(vmin=cvals.min(), vmax=max(cvals.max(), cvals.min() + 1))
    cmap = matplotlib.colormaps["viridis"]
    prefix = _common_prefix(layers)
    log_y = bool(finite.min() > 0 and finite.max() / finite.min() > 100)
    all_steps = np.sort(sub["step"].unique())
    marker = "o" if all_steps.size <= 60 else None  # markers show isolated points between gaps

    with matplotlib.rc_context(_RC):
        ncols = min(len(runs), 3)
        nrows = int(np.ceil(len(runs) / ncols))
        fig = _new_figure(5.2 * ncols + 1.8, 3.8 * nrows + 0.4)
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
        for ax in axes[len(runs):]:
            ax.set_visible(False)
        n_marks = 0
        for ax, run in zip(axes, runs):
            one = sub[sub["run"] == run]
            steps = np.sort(one["step"].unique())
            # Reindex on all of the run's steps so that a missing row is a gap, like a NaN,
            # instead of a straight line drawn across it.
            wide = one.pivot_table(index="step", columns="layer", values="value",
                                   aggfunc="mean", dropna=False).reindex(steps)
            for layer in layers:
                if layer not in wide.columns:
                    continue
                values = wide[layer].to_numpy(dtype=float)
                ax.plot(steps, values, color=cmap(norm(colour[layer])),
                        linestyle=linestyle[layer], linewidth=1.1, alpha=0.9, marker=marker,
                        markersize=2.2, label=layer[len(prefix):])
                if marks is not None and len(marks):
                    n_marks += _mark_events(ax, marks, run, layer, steps, values,
                                            cmap(norm(colour[layer])))
            step_axis(ax, steps)
            if log_y:
                _log_y(ax, finite)
            if len(runs) > 1 or run:
                ax.set_title(run)
        for ax in axes[: len(runs)]:
            if ax.get_subplotspec().is_first_col():
                ax.set_ylabel(axis_label(metric, log_y))
        fig.suptitle(f"{metric} per layer over training")

        visible = list(axes[: len(runs)])
        event_handles = []
        if n_marks:
            event_handles = [
                Line2D([], [], color="0.3", linestyle=(0, (2, 1.5)), linewidth=1.6, label="change point"),
                Line2D([], [], color="0.3", marker="o", markerfacecolor="none", linestyle="none",
                       label="settles (converged)"),
            ]
        if len(layers) <= MAX_LEGEND_LAYERS:
            handles, labels = visible[0].get_legend_handles_labels()
            handles += event_handles
            labels += [h.get_label() for h in event_handles]
            fig.legend(handles, labels, loc="outside right upper",
                       title=f"layer ({prefix}…)" if prefix else "layer")
        else:
            cbar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=visible, shrink=0.9,
                                pad=0.02, aspect=30)
            cbar.set_label(scale_label)
            cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            if kind_style:
                handles = [Line2D([], [], color="0.3", linestyle=ls, linewidth=1.3)
                           for ls in kind_style.values()]
                labels = [k.replace("{i}", "i") for k in kind_style]
                labels = [lb[len(_common_prefix(labels)):] or lb for lb in labels]
                fig.legend(handles, labels, loc="outside lower center", ncol=len(handles),
                           title="sublayer (line style)", frameon=False)
            if event_handles:
                fig.legend(event_handles, [h.get_label() for h in event_handles],
                           loc="outside upper right", ncol=2, frameon=False)
        return _save(fig, path)


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------


def plot_training_curves(log: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Loss and in-/out-of-distribution error over training steps.

    ``log`` has the columns ``step, loss`` and optionally ``id_error, ood_error`` (fractions
    in [0, 1]) and ``run`` (one line per run). Left panel: loss on a log y axis (linear if no
    loss is positive). Right panel: the error rates on a fixed [0, 1] axis, in-distribution
    solid, out-of-distribution dashed; it is left out when neither error has a finite value.
    """
    title = "training curves"
    if log is None or len(log) == 0 or "step" not in log.columns or "loss" not in log.columns:
        return _no_data(path, title, "the training log is empty" if log is None or len(log) == 0
                        else "the training log lacks a 'step' or 'loss' column")
    df = log.copy()
    df["step"] = pd.to_numeric(df["step"], errors="coerce")
    df = df[np.isfinite(df["step"].to_numpy(dtype=float))].sort_values("step")
    for col in ("loss", "id_error", "ood_error"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df.columns else np.nan
    err_cols = [c for c in ("id_error", "ood_error") if np.isfinite(df[c].to_numpy()).any()]
    if not np.isfinite(df["loss"].to_numpy()).any() and not err_cols:
        return _no_data(path, title, "no finite loss or error value")
    runs = sorted(df["run"].astype(str).unique()) if "run" in df.columns else [None]
    colours = matplotlib.colormaps["tab10"]

    with matplotlib.rc_context(_RC):
        npanels = 2 if err_cols else 1
        fig = _new_figure(5.0 * npanels + 0.6, 3.8)
        axes = fig.subplots(1, npanels, squeeze=False).ravel()
        for i, run in enumerate(runs):
            one = df if run is None else df[df["run"].astype(str) == run]
            c = colours(i % 10)
            suffix = "" if run is None or len(runs) == 1 else f" ({run})"
            axes[0].plot(one["step"], one["loss"], color=c, linewidth=1.3, label=f"loss{suffix}")
            if err_cols:
                for col, ls, name in (("id_error", "-", "in-distribution"),
                                      ("ood_error", "--", "out-of-distribution")):
                    if col in err_cols:
                        axes[1].plot(one["step"], one[col], color=c, linestyle=ls,
                                     linewidth=1.3, label=f"{name}{suffix}")
        loss = df["loss"].to_numpy()
        if (loss[np.isfinite(loss)] > 0).any():
            _log_y(axes[0], loss)
            axes[0].set_ylabel("training loss (log scale)")
        else:
            axes[0].set_ylabel("training loss")
        axes[0].set_title("loss")
        if len(runs) > 1:
            axes[0].legend(loc="best")
        if err_cols:
            axes[1].set_ylim(-0.02, 1.02)
            axes[1].set_ylabel("error rate (fraction wrong)")
            axes[1].set_title("in- / out-of-distribution error")
            axes[1].legend(loc="best")
        for ax in axes:
            step_axis(ax, df["step"])
        fig.suptitle(title)
        return _save(fig, path)


# --------------------------------------------------------------------------------------------
# PCA
# --------------------------------------------------------------------------------------------

_MATRIX_TITLES = {
    "layer_mean": "steps × metrics (mean over layers)",
    "layer_metric": "steps × (layer, metric)",
}


def plot_pca(explained: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Explained variance per principal component, one panel per matrix (and per run).

    ``explained`` is the first output of :func:`ckptlens.analysis.pca_explained_variance`
    (columns ``run, matrix, component, explained_variance_ratio, cumulative``). Bars show each
    component's ratio, a line with markers the cumulative ratio; a dotted line marks 90 %.
    At most the first 30 components are drawn (the panel title says so when cut).
    """
    title = "PCA of the standardized step × metric matrices"
    needed = {"matrix", "component", "explained_variance_ratio", "cumulative"}
    if explained is None or len(explained) == 0 or not needed <= set(explained.columns):
        return _no_data(path, title, "no PCA result (too few usable steps or columns?)")
    df = explained.copy()
    if "run" not in df.columns:
        df["run"] = ""
    df["run"] = df["run"].astype(str)
    runs = sorted(df["run"].unique())
    known = [m for m in _MATRIX_TITLES if m in set(df["matrix"])]
    matrices = known + sorted(set(df["matrix"].astype(str)) - set(known))

    with matplotlib.rc_context(_RC):
        fig = _new_figure(4.6 * len(matrices) + 0.4, 3.4 * len(runs) + 0.5)
        axes = fig.subplots(len(runs), len(matrices), squeeze=False, sharey=True)
        for r, run in enumerate(runs):
            for c, matrix in enumerate(matrices):
                ax = axes[r, c]
                one = df[(df["run"] == run) & (df["matrix"] == matrix)].sort_values("component")
                n_total = len(one)
                one = one.head(MAX_PCA_COMPONENTS)
                name = _MATRIX_TITLES.get(matrix, matrix)
                head = f"{run}\n{name}" if len(runs) > 1 or run else name
                if one.empty:
                    ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.4",
                            transform=ax.transAxes)
                    ax.set_title(head)
                    continue
                k = one["component"].to_numpy()
                ax.bar(k, one["explained_variance_ratio"], color="tab:blue", alpha=0.75,
                       label="per component")
                ax.plot(k, one["cumulative"], color="tab:orange", marker="o", markersize=3,
                        linewidth=1.3, label="cumulative")
                ax.axhline(0.9, color="0.4", linestyle=":", linewidth=0.9, label="90 %")
                ax.set_ylim(0, 1.05)
                ax.set_xlim(0.4, k.max() + 0.6)
                ax.xaxis.set_major_locator(FixedLocator(_component_ticks(int(k.max()))))
                ax.set_xlabel("principal component")
                cut = f" (first {len(one)} of {n_total})" if n_total > len(one) else ""
                ax.set_title(head + cut)
                if c == 0:
                    ax.set_ylabel("explained variance ratio")
                if r == 0 and c == len(matrices) - 1:
                    ax.legend(loc="center right")
        fig.suptitle(title)
        return _save(fig, path)


# --------------------------------------------------------------------------------------------
# correlation heatmap
# --------------------------------------------------------------------------------------------


_SUMMARY_ROWS = SUMMARY_ROW_LABELS  # drawn below the layers


def plot_correlation(corr: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Heatmap of per-layer Pearson r: layers as rows, metric pairs ("x vs y") as columns.

    ``corr`` is the first output of :func:`ckptlens.analysis.metric_correlations`. Rows are
    in depth order with the summary rows last (below a separator line): ``"mean"`` (mean of the
    per-layer r) and ``"layer_mean"`` (r of the mean-over-layers trajectories, for pairs whose
    metrics share no layer); a prefix shared by
    all layer names is stripped from the labels and given in the axis label. The diverging
    colormap is fixed to [-1, 1] so that colours compare across figures; undefined cells are
    grey. Cells carry their value when the grid is at most 20 rows × 8 columns. One panel per
    run.
    """
    title = "per-layer Pearson correlation between metrics over training"
    needed = {"x_metric", "y_metric", "layer", "pearson_r"}
    if corr is None or len(corr) == 0 or not needed <= set(corr.columns):
        return _no_data(path, title, "no correlation result")
    df = corr.copy()
    if "run" not in df.columns:
        df["run"] = ""
    df["run"] = df["run"].astype(str)
    df["layer"] = df["layer"].astype(str)
    df["pair"] = df["x_metric"].astype(str) + " vs " + df["y_metric"].astype(str)
    df["pearson_r"] = pd.to_numeric(df["pearson_r"], errors="coerce").astype(float)
    runs = sorted(df["run"].unique())
    pairs = list(dict.fromkeys(df["pair"]))  # keep the analysis' pair order
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")

    grids = []
    for run in runs:
        one = df[df["run"] == run]
        layers = sorted((l for l in one["layer"].unique() if l not in _SUMMARY_ROWS), key=_layer_sort_key)
        rows = layers + [r for r in _SUMMARY_ROWS if (one["layer"] == r).any()]
        grid = one.pivot_table(index="layer", columns="pair", values="pearson_r",
                               aggfunc="mean", dropna=False).reindex(index=rows, columns=pairs)
        grids.append((run, layers, grid))
    n_rows = max(len(g.index) for _, _, g in grids)
    longest = max((len(_SUMMARY_ROWS.get(l, l)) for _, _, g in grids for l in g.index), default=4)

    with matplotlib.rc_context(_RC):
        label_in = min(0.065 * longest, 3.5)
        # a column is as wide as its longer metric name (the tick label "x\nvs y" must not overlap)
        name_chars = max((len(m) + 3 for p in pairs for m in p.split(" vs ")), default=0)
        panel_w = 1.0 + max(1.25, 0.075 * name_chars) * len(pairs) + label_in
        fig = _new_figure(panel_w * len(runs) + 1.2, 1.9 + 0.24 * n_rows)
        axes = fig.subplots(1, len(runs), squeeze=False).ravel()
        image = None
        for ax, (run, layers, grid) in zip(axes, grids):
            ax.grid(False)
            values = grid.to_numpy(dtype=float)
            image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1,
                              aspect="auto", interpolation="nearest")
            prefix = _common_prefix(layers)
            ylabels = [_SUMMARY_ROWS.get(l, l[len(prefix):]) for l in grid.index]
            ax.set_yticks(range(len(grid.index)), ylabels)
            # "x vs y" wrapped onto two lines: long metric names stay readable unrotated.
            ax.set_xticks(range(len(pairs)), [p.replace(" vs ", "\nvs ") for p in pairs])
            ax.tick_params(axis="both", length=0)
            ax.set_ylabel(f"layer ({prefix}…)" if prefix else "layer")
            ax.set_xlabel("metric pair (x vs y)")
            n_summary = sum(r in _SUMMARY_ROWS for r in grid.index)
            if n_summary and len(grid.index) > n_summary:
                ax.axhline(len(grid.index) - n_summary - 0.5, color="black", linewidth=1.2)
            if len(grid.index) <= ANNOTATE_MAX_ROWS and len(pairs) <= ANNOTATE_MAX_COLS:
                for i in range(values.shape[0]):
                    for j in range(values.shape[1]):
                        v = values[i, j]
                        text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
                        colour = "white" if np.isfinite(v) and abs(v) > 0.6 else "black"
                        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
            if len(runs) > 1 or run:
                ax.set_title(run)
        cbar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 0.5 + 0.02 * n_rows),
                            pad=0.02, aspect=25)
        cbar.set_label("Pearson r")
        cbar.set_ticks([-1, -0.5, 0, 0.5, 1])
        fig.suptitle(title + ("\n(grey: undefined)" if df["pearson_r"].isna().any() else ""))
        return _save(fig, path)
