"""The ``model_size`` figure: PCA and correlation summaries of several models against their size,
and :func:`parse_model_size`, the size written in a model's name."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ...sources import parse_model_size
from . import FigureKind, RunFacts, register
from ._common import NoData, fmt_size, for_runs, note, run_colours

MODEL_SIZE_TITLE = "training-dynamics summaries across model sizes"
#: At most this many metric pairs (lines) in the correlation panels.
MAX_PAIRS = 10
_PCA_COLUMNS = {"matrix", "component", "explained_variance_ratio", "cumulative"}
_CORR_COLUMNS = {"x_metric", "y_metric", "layer", "pearson_r"}


def components_for(explained: pd.DataFrame, threshold: float = 0.9) -> float:
    """Smallest component number whose ``cumulative`` reaches ``threshold`` (NaN if none does)."""
    one = explained.sort_values("component")
    reached = one[pd.to_numeric(one["cumulative"], errors="coerce") >= threshold - 1e-9]
    return float(reached["component"].iloc[0]) if len(reached) else math.nan


def _size_axis(ax, sizes: Sequence[float]) -> None:
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    sizes = np.unique(np.asarray(sizes, dtype=float))
    rotate = {"rotation": 40, "ha": "right", "rotation_mode": "anchor"} if sizes.size > 5 else {}
    ax.set_xticks(sizes, [fmt_size(v) for v in sizes], **rotate)
    ax.xaxis.set_minor_locator(NullLocator())
    if sizes.size:
        span = sizes.max() / sizes.min()
        pad = max(span, 10) ** 0.06
        ax.set_xlim(sizes.min() / pad, sizes.max() * pad)
    ax.set_xlabel("model size (parameters, log scale)")


def _inputs(explained, correlation, sizes) -> tuple[pd.DataFrame, pd.DataFrame, dict, list[str]]:
    """(PCA rows, correlation rows with ``pair``, run -> size, runs without a size) of the runs
    with a size."""
    sizes = {
        str(r): float(v) for r, v in (sizes or {}).items() if v is not None and np.isfinite(float(v)) and float(v) > 0
    }
    ex = explained.copy() if explained is not None and len(explained) else pd.DataFrame(columns=["run"])
    co = correlation.copy() if correlation is not None and len(correlation) else pd.DataFrame(columns=["run"])
    if not sizes:
        raise NoData("no model size given")
    for df in (ex, co):
        df["run"] = df["run"].astype(str) if "run" in df.columns else ""
    unsized = sorted((set(ex["run"]) | set(co["run"])) - set(sizes))
    ex = ex[ex["run"].isin(sizes)] if _PCA_COLUMNS <= set(ex.columns) else ex.iloc[0:0]
    co = co[co["run"].isin(sizes)] if _CORR_COLUMNS <= set(co.columns) else co.iloc[0:0]
    if ex.empty and co.empty:
        raise NoData("no PCA or correlation rows for a run with a model size")
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
    return ex, co, sizes, unsized


def _pca_panels(ax_pc1, ax_n90, ex: pd.DataFrame, runs_sized: list[str], sizes: dict) -> None:
    """(a) PC1 explained variance ratio and (b) components for 90 %, per PCA matrix."""
    from ..pca import MATRIX_TITLES, matrix_order

    matrices = matrix_order(ex["matrix"].astype(str)) if not ex.empty else []
    not_reached = []
    for i, m in enumerate(matrices):
        ls, mk, c = ["-", "--", ":"][i % 3], ["o", "s", "^"][i % 3], ["tab:blue", "tab:orange", "tab:green"][i % 3]
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
        label = MATRIX_TITLES.get(m, m)
        ax_pc1.plot(x, pc1, color=c, linestyle=ls, marker=mk, markersize=5, linewidth=1.4, label=label)
        ax_n90.plot(x, n90, color=c, linestyle=ls, marker=mk, markersize=5, linewidth=1.4, label=label)
    from matplotlib.ticker import MaxNLocator

    ax_pc1.set_title("(a) variance explained by the first principal component")
    ax_pc1.set_ylabel("PC1 explained variance ratio")
    ax_pc1.set_ylim(0, 1.02)
    ax_n90.set_title(
        "(b) components needed for 90 % of the variance"
        + ("\n(not reached: " + ", ".join(not_reached) + ")" if not_reached else "")
    )
    ax_n90.set_ylabel("number of components")
    ax_n90.yaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_pc1, ax_n90):
        if matrices:
            ax.legend(loc="best", title="PCA matrix", fontsize=7)
        else:
            note(ax, "no PCA result")


def _correlation_panels(ax_r, ax_r2, co: pd.DataFrame, pairs: list[str], pair_colour: dict, sizes: dict) -> None:
    """(c) Pearson r and (d) R² per metric pair: the summary rows as line + markers, single layers
    as small points."""
    from ...analysis.correlation import SUMMARY_ROW_LABELS

    for ax, col, panel_title, ylabel in (
        (ax_r, "pearson_r", "(c) correlation of metric pairs over training", "Pearson r"),
        (ax_r2, "r_squared", "(d) variance of y explained by x (linear fit)", "R²"),
    ):
        for j, pair in enumerate(pairs):
            one = co[co["pair"] == pair]
            # a small sideways offset per pair so that points of different pairs do not hide
            shift = 10 ** (0.015 * (j - (len(pairs) - 1) / 2))
            summary = one["layer"].isin(list(SUMMARY_ROW_LABELS))
            mean = one[summary].assign(size=lambda d: d["run"].map(sizes)).sort_values("size")
            layer = one[~summary]
            ax.scatter(
                layer["run"].map(sizes).to_numpy(dtype=float) * shift,
                layer[col].to_numpy(dtype=float),
                s=9,
                color=pair_colour[pair],
                alpha=0.45,
                linewidths=0,
                gid=f"layers|{pair}",
            )
            ax.plot(
                mean["size"].to_numpy(dtype=float) * shift,
                mean[col].to_numpy(dtype=float),
                color=pair_colour[pair],
                marker="o",
                markersize=5,
                linewidth=1.4,
                label=pair,
                gid=f"mean|{pair}",
            )
        ax.set_title(panel_title)
        ax.set_ylabel(ylabel)
        if col == "pearson_r":
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="0.5", linewidth=0.8)
        else:
            ax.set_ylim(-0.02, 1.02)
        if not pairs:
            note(ax, "no correlation result")


def _figure_model_size_study(
    explained: pd.DataFrame, correlation: pd.DataFrame, sizes: Mapping[str, float], *, title: str | None = None
):
    import matplotlib
    from matplotlib.lines import Line2D

    from .. import _style

    ex, co, sizes, unsized = _inputs(explained, correlation, sizes)
    runs_sized = sorted(set(ex["run"]) | set(co["run"]), key=lambda r: sizes[r])
    all_pairs = list(dict.fromkeys(co["pair"])) if not co.empty else []
    pairs = all_pairs[:MAX_PAIRS]
    pair_colour = run_colours(pairs)
    notes = [
        f"left out, no model size: {', '.join(unsized)}" if unsized else "",
        f"the first {len(pairs)} of {len(all_pairs)} metric pairs shown" if len(pairs) < len(all_pairs) else "",
    ]

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(11.5, 8.2)
        axes = fig.subplots(2, 2, squeeze=False).ravel()
        for ax, name in zip(axes, ("pc1", "n90", "pearson_r", "r_squared")):
            ax.set_label(name)
        _pca_panels(axes[0], axes[1], ex, runs_sized, sizes)
        _correlation_panels(axes[2], axes[3], co, pairs, pair_colour, sizes)
        for ax in axes:
            _size_axis(ax, [sizes[r] for r in runs_sized])
        if pairs:
            handles = [
                Line2D([], [], color=pair_colour[p], marker="o", markersize=5, linewidth=1.4, label=p) for p in pairs
            ]
            handles += [
                Line2D([], [], color="0.3", marker="o", markersize=5, linewidth=1.4, label="mean over layers"),
                Line2D([], [], color="0.3", marker="o", markersize=3.5, linewidth=0, alpha=0.5, label="single layer"),
            ]
            fig.legend(
                handles=handles,
                loc="outside lower center",
                ncol=min(3, len(handles)),
                frameon=False,
                title="metric pair (x vs y)",
            )
        fig.suptitle(_style.with_notes(title or MODEL_SIZE_TITLE, notes))
        return fig


def plot_model_size_study(
    explained: pd.DataFrame,
    correlation: pd.DataFrame,
    sizes: Mapping[str, float],
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """PCA and correlation summaries of several models against their size (log x axis, ticks
    like "70M", "1.4B"): (a) PC1 explained variance ratio of both PCA matrices; (b) the number
    of components needed for 90 % of the variance; (c) Pearson r per metric pair (at most
    :data:`MAX_PAIRS`), the summary rows (``layer == "mean"``/``"layer_mean"``) as line + markers
    and the single layers as small points; (d) R² the same. ``explained``/``correlation`` are the
    outputs of :mod:`ckptlens.analysis` with a ``run`` column; ``sizes``: run -> number of
    parameters (runs without a size are left out, named in the title).
    """
    from .. import _style

    try:
        fig = _figure_model_size_study(explained, correlation, sizes, title=title)
    except NoData as exc:
        return _style.no_data(path, title or MODEL_SIZE_TITLE, str(exc))
    return _style.save(fig, path)


# --------------------------------------------------------------------------------------------
# the registered kind
# --------------------------------------------------------------------------------------------


def run_sizes(spec: Mapping) -> dict[str, float]:
    """run -> size: the spec's ``sizes``, else :func:`parse_model_size` of the run name (runs with
    neither left out)."""
    given = spec.get("sizes") or {}
    sizes = {}
    for r in spec["runs"]:
        size = given.get(r) or parse_model_size(r)
        if size:
            sizes[r] = float(size)
    return sizes


def draw(spec: Mapping, path: Path, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    runs = spec["runs"]
    ex = [d.assign(run=r) for r, d in for_runs(inputs.get("pca"), runs).items() if len(d)]
    co = [d.assign(run=r) for r, d in for_runs(inputs.get("correlation"), runs).items() if len(d)]
    return plot_model_size_study(
        pd.concat(ex, ignore_index=True) if ex else None,
        pd.concat(co, ignore_index=True) if co else None,
        run_sizes(spec),
        path,
        title=spec.get("title"),
    )


def check(spec: Mapping, key: str, facts: RunFacts) -> None:
    for r in spec["runs"]:
        if not (spec.get("sizes") or {}).get(r) and parse_model_size(r) is None:
            raise ValueError(
                f"config key '{key}.sizes': no size for run {r!r} (give its parameter count; "
                "none could be read from the name)"
            )


def prepare(spec: Mapping, facts: RunFacts) -> dict:
    """``sizes``: every run's size, given or read from its name."""
    return {"sizes": {r: (spec.get("sizes") or {}).get(r) or parse_model_size(r) for r in spec["runs"]}}


register(
    FigureKind(
        name="model_size",
        description="PCA and correlation results of several models against model size",
        reads=("pca", "correlation"),
        options={
            "sizes": {
                "type": "object",
                "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
                "description": "run -> number of parameters (default: parsed from the run name, e.g. 70m, 1.4b)",
            }
        },
        draw=draw,
        check=check,
        prepare=prepare,
    )
)
