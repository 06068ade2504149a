"""Heatmaps of the analysis' correlations between metrics (:mod:`ckptlens.analysis.correlation`).

Two layouts, one bounded size (:data:`ckptlens.plots._style.MAX_PIXELS`):

* configured pairs: layers as rows, metric pairs ("x vs y") as columns (:func:`_figure_pairs`);
* every pair of metrics, layer-averaged only (every row a ``layer_mean`` row of an all-pairs
  table): a square metric × metric matrix in the table's (clustered) order (:func:`_figure_square`).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..store.layers import layer_order

TITLE = "per-layer Pearson correlation between metrics over training"
SQUARE_TITLE = "correlation between the metrics' layer-mean trajectories over training"
#: Heatmap cells are annotated with their value up to this many rows x columns.
ANNOTATE_MAX_ROWS, ANNOTATE_MAX_COLS = 20, 8
#: At most this many runs (panels) per figure.
MAX_RUNS = 4
#: At most this many layer rows per panel (evenly spaced in depth beyond; summary rows always drawn).
MAX_LAYER_ROWS = 48
#: At most this many metrics on each side of the square metric × metric matrix.
MAX_SQUARE_METRICS = 40
#: Square matrices annotate their cells up to this many metrics.
ANNOTATE_MAX_METRICS = 12
#: Metric names longer than this are cut in tick labels.
MAX_NAME_CHARS = 40
#: Where the values left out of a figure are.
TABLE_NAME = "correlation.csv"
_NEEDED = {"x_metric", "y_metric", "layer", "pearson_r"}


def plot_correlation(corr: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Heatmap of per-layer Pearson r: layers as rows, metric pairs ("x vs y") as columns.

    ``corr`` is the first output of :func:`ckptlens.analysis.metric_correlations`. Rows are
    in depth order with the summary rows last (below a separator line): ``"mean"`` (mean of the
    per-layer r) and ``"layer_mean"`` (r of the mean-over-layers trajectories, for pairs whose
    metrics share no layer); a prefix shared by all layer names is stripped from the labels and
    given in the axis label. The diverging colormap is fixed to [-1, 1] so that colours compare
    across figures; undefined cells are grey. Cells carry their value when the grid is at most
    20 rows × 8 columns. One panel per run.

    When every row is a ``layer_mean`` row and every pair of the table's metrics is there (the
    analysis without configured pairs), the figure is a square metric × metric matrix instead,
    the metrics in their order of first appearance in the table (the analysis' clustered order).

    Sizes are bounded: at most :data:`MAX_RUNS` runs, :data:`MAX_LAYER_ROWS` layers, as many pairs
    as fit :data:`~ckptlens.plots._style.MAX_PIXELS`, :data:`MAX_SQUARE_METRICS` metrics; the
    title says what was left out.
    """
    from . import _style

    if corr is None or len(corr) == 0 or not _NEEDED <= set(corr.columns):
        return _style.no_data(path, TITLE, "no correlation result")
    df = _typed(corr)
    fig = _figure_square(df) if is_all_pairs_mean(df) else _figure_pairs(df)
    return _style.save(fig, path)


def _typed(corr: pd.DataFrame) -> pd.DataFrame:
    df = corr[[c for c in ("run", *sorted(_NEEDED)) if c in corr.columns]].copy()
    if "run" not in df.columns:
        df["run"] = ""
    for c in ("run", "layer", "x_metric", "y_metric"):
        df[c] = df[c].astype(str)
    df["pearson_r"] = pd.to_numeric(df["pearson_r"], errors="coerce").astype(float)
    return df


def metric_order(one: pd.DataFrame) -> list[str]:
    """The metrics of a correlation table in their order of first appearance (x, then y, row by row)."""
    return list(dict.fromkeys(itertools.chain.from_iterable(zip(one["x_metric"], one["y_metric"]))))


def is_all_pairs_mean(df: pd.DataFrame) -> bool:
    """Whether every row is a ``layer_mean`` row and, per run, every pair of its (at least 3)
    metrics has one: the layer-averaged metric × metric table of an analysis without pairs."""
    from ..analysis.correlation import MEAN_TRAJECTORY_LAYER

    if not (df["layer"] == MEAN_TRAJECTORY_LAYER).all():
        return False
    for _, one in df.groupby("run", sort=False):
        metrics = metric_order(one)
        pairs = {frozenset(p) for p in zip(one["x_metric"], one["y_metric"]) if p[0] != p[1]}
        if len(metrics) < 3 or len(pairs) != len(metrics) * (len(metrics) - 1) // 2:
            return False
    return True


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME_CHARS else name[: MAX_NAME_CHARS - 1] + "…"


# --------------------------------------------------------------------------------------------
# layers × pairs
# --------------------------------------------------------------------------------------------


def _grids(df: pd.DataFrame, runs: list[str], pairs: list[str]) -> tuple[list, int]:
    """(run, layers drawn, grid) per run, and the largest number of layer rows left out."""
    from ..analysis.correlation import SUMMARY_ROW_LABELS
    from ._style import even_pick

    grids, cut = [], 0
    for run in runs:
        one = df[(df["run"] == run) & df["pair"].isin(pairs)]
        every = layer_order(x for x in one["layer"].unique() if x not in SUMMARY_ROW_LABELS)
        layers = even_pick(every, MAX_LAYER_ROWS)
        cut = max(cut, len(every) - len(layers))
        rows = layers + [r for r in SUMMARY_ROW_LABELS if (one["layer"] == r).any()] or ["n/a"]
        grid = one.groupby(["layer", "pair"])["pearson_r"].mean().unstack("pair").reindex(index=rows, columns=pairs)
        grids.append((run, layers, grid))
    return grids, cut


def _figure_pairs(df: pd.DataFrame):
    import matplotlib

    from ..analysis.correlation import SUMMARY_ROW_LABELS
    from . import _style

    df = df.assign(pair=df["x_metric"] + " vs " + df["y_metric"])
    all_runs = sorted(df["run"].unique())
    runs = all_runs[:MAX_RUNS]
    all_pairs = list(dict.fromkeys(df.loc[df["run"].isin(runs), "pair"]))  # keep the analysis' pair order
    longest = max((len(SUMMARY_ROW_LABELS.get(x, x)) for x in df["layer"].unique()), default=4)
    label_in = min(0.065 * longest, 3.5)
    # a column is as wide as its longer metric name (the tick label "x\nvs y" must not overlap)
    name_chars = max((len(_short(m)) + 3 for p in all_pairs for m in p.split(" vs ")), default=0)
    col_w = max(1.25, 0.075 * name_chars)
    fit = int(((_style.MAX_INCHES - 1.2) / len(runs) - 1.0 - label_in) // col_w)
    pairs = all_pairs[: max(1, fit)]
    grids, rows_cut = _grids(df, runs, pairs)
    n_rows = max(len(g.index) for _, _, g in grids)
    undefined = df.loc[df["run"].isin(runs) & df["pair"].isin(pairs), "pearson_r"].isna().any()
    notes = [
        "grey: undefined" if undefined else "",
        f"the first {len(pairs)} of {len(all_pairs)} metric pairs shown" if len(pairs) < len(all_pairs) else "",
        f"{MAX_LAYER_ROWS} of {MAX_LAYER_ROWS + rows_cut} layers shown, evenly spaced in depth" if rows_cut else "",
        f"{len(runs)} of {len(all_runs)} runs shown" if len(runs) < len(all_runs) else "",
    ]
    if any(notes[1:]):
        notes.append(f"all in {TABLE_NAME}")
    cmap = matplotlib.colormaps[_style.CORRELATION_CMAP].with_extremes(bad="0.85")

    with matplotlib.rc_context(_style.RC):
        panel_w = 1.0 + col_w * len(pairs) + label_in
        # a tall strip (many layers, few pairs) at most MAX_LAYER_ROWS rows of 0.2 in: one screen
        fig = _style.new_figure(panel_w * len(runs) + 1.2, 1.9 + (0.24 if n_rows <= 20 else 0.2) * n_rows)
        axes = fig.subplots(1, len(runs), squeeze=False).ravel()
        image = None
        for ax, (run, layers, grid) in zip(axes, grids):
            image = _heatmap(ax, grid, cmap, pairs, layers, SUMMARY_ROW_LABELS)
            if len(runs) > 1 or run:
                ax.set_title(run)
        cbar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 0.5 + 0.02 * n_rows), pad=0.02, aspect=25)
        cbar.set_label("Pearson r")
        cbar.set_ticks([-1, -0.5, 0, 0.5, 1])
        fig.suptitle(_style.with_notes(TITLE, notes))
        return fig


def _heatmap(ax, grid: pd.DataFrame, cmap, pairs: list[str], layers: list[str], summary: dict):
    """One run's layers × pairs grid in ``ax``; returns the image."""
    from ._style import common_prefix

    ax.grid(False)
    values = grid.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    prefix = common_prefix(layers)
    ax.set_yticks(range(len(grid.index)), [summary.get(x, x[len(prefix) :]) for x in grid.index])
    # "x vs y" wrapped onto two lines: long metric names stay readable unrotated.
    ax.set_xticks(range(len(pairs)), ["\nvs ".join(_short(m) for m in p.split(" vs ")) for p in pairs])
    ax.tick_params(axis="both", length=0)
    ax.set_ylabel(f"layer ({prefix}…)" if prefix else "layer")
    ax.set_xlabel("metric pair (x vs y)")
    n_summary = sum(r in summary for r in grid.index)
    if n_summary and len(grid.index) > n_summary:
        ax.axhline(len(grid.index) - n_summary - 0.5, color="black", linewidth=1.2)
    if len(grid.index) <= ANNOTATE_MAX_ROWS and len(pairs) <= ANNOTATE_MAX_COLS:
        _annotate(ax, values)
    return image


def _annotate(ax, values: np.ndarray) -> None:
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            colour = "white" if np.isfinite(v) and abs(v) > 0.6 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)


# --------------------------------------------------------------------------------------------
# metric × metric
# --------------------------------------------------------------------------------------------


def square_matrix(one: pd.DataFrame, metrics: list[str]) -> np.ndarray:
    """The symmetric metric × metric matrix of r of one run's all-pairs table (1 on the diagonal,
    NaN where undefined)."""
    pos = {m: i for i, m in enumerate(metrics)}
    grid = np.full((len(metrics), len(metrics)), np.nan)
    keep = one["x_metric"].isin(pos) & one["y_metric"].isin(pos)
    i = one.loc[keep, "x_metric"].map(pos).to_numpy(dtype=int)
    j = one.loc[keep, "y_metric"].map(pos).to_numpy(dtype=int)
    r = one.loc[keep, "pearson_r"].to_numpy(dtype=float)
    grid[i, j] = r
    grid[j, i] = r
    np.fill_diagonal(grid, 1.0)
    return grid


def _figure_square(df: pd.DataFrame):
    import matplotlib

    from . import _style

    all_runs = sorted(df["run"].unique())
    runs = all_runs[:MAX_RUNS]
    orders = {run: metric_order(df[df["run"] == run]) for run in runs}
    shown = {run: _style.even_pick(m, MAX_SQUARE_METRICS) for run, m in orders.items()}
    n = max(len(m) for m in shown.values())
    longest = max(len(_short(x)) for m in shown.values() for x in m)
    label_in = min(0.065 * longest, 2.8)
    cell = 0.3 if n > ANNOTATE_MAX_METRICS else 0.45
    side = max(cell * n, 2.5)
    fit = max(1, int((_style.MAX_INCHES - 1.6) // (side + label_in + 0.4)))
    runs = runs[:fit]
    notes = ["grey: undefined" if df["pearson_r"].isna().any() else ""]
    cut = [run for run in runs if len(shown[run]) < len(orders[run])]
    if cut:
        total = max(len(orders[r]) for r in cut)
        notes.append(f"{n} of {total} metrics shown, evenly spaced in the table's order; all in {TABLE_NAME}")
    if len(runs) < len(all_runs):
        notes.append(f"{len(runs)} of {len(all_runs)} runs shown")
    cmap = matplotlib.colormaps[_style.CORRELATION_CMAP].with_extremes(bad="0.85")

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure((side + label_in + 0.4) * len(runs) + 1.6, side + label_in + 2.0)
        axes = fig.subplots(1, len(runs), squeeze=False).ravel()
        image = None
        for ax, run in zip(axes, runs):
            metrics = shown[run]
            values = square_matrix(df[df["run"] == run], metrics)
            ax.grid(False)
            image = ax.imshow(
                np.ma.masked_invalid(values), cmap=cmap, vmin=-1, vmax=1, aspect="equal", interpolation="nearest"
            )
            names = [_short(m) for m in metrics]
            ax.set_xticks(range(len(metrics)), names, rotation=90)
            ax.set_yticks(range(len(metrics)), names)
            ax.tick_params(axis="both", length=0, labelsize=7 if len(metrics) > 20 else 8)
            if len(metrics) <= ANNOTATE_MAX_METRICS:
                _annotate(ax, values)
            if len(runs) > 1 or run:
                ax.set_title(run)
        cbar = fig.colorbar(image, ax=list(axes), shrink=0.8, pad=0.02, aspect=25)
        cbar.set_label("Pearson r of the layer-mean trajectories")
        cbar.set_ticks([-1, -0.5, 0, 0.5, 1])
        fig.suptitle(_style.with_notes(SQUARE_TITLE, notes, fig.get_figwidth()))
        return fig
