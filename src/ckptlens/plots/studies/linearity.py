"""The ``linearity`` figure: linearity between consecutive layers of one run, and per-sample spreads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...store.layers import layer_order, split_pair
from . import FigureKind, register
from ._common import (
    MAX_LEGEND_LAYERS,
    NoData,
    depth_cmap,
    first_table,
    markers,
    metric_names,
    reduce_layers,
    step_x,
    tidy,
)

LINEARITY_TITLE = "linearity of consecutive layers over training"
#: At most this many layer pairs (small multiples) per quantile row.
MAX_BAND_PAIRS = 6
_QUANTILE_SUFFIXES = ("p5", "p25", "p50", "p75", "p95", "mean")
_BANDS = ("linearity_per_sample", "consecutive_cosine")


def _wanted(name: str) -> bool:
    return name in ("linearity_score", "linearity_score_no_residual", "activation_norm") or name.startswith(
        tuple(f"{b}." for b in _BANDS)
    )


def _pair_label(pair: str, prefix: str) -> str:
    """ "blocks.0~blocks.1" with prefix "blocks." -> "0 → 1"."""
    parts = split_pair(pair) or (pair,)
    return " → ".join(p[len(prefix) :] if p.startswith(prefix) and len(p) > len(prefix) else p for p in parts)


@dataclass
class _Layout:
    """What one linearity figure draws: the table, its panels, pairs and layers, their colours."""

    df: pd.DataFrame
    metrics: set
    top: list[str]
    bands: list[str]
    pairs: list[str]
    layers: list[str]
    colour: dict
    prefix: str
    steps: np.ndarray
    run: str


def _layout(table: pd.DataFrame) -> _Layout:
    from .._style import common_prefix, depth_values

    df = tidy(table, metric_names(table, _wanted))
    if df.empty and (table is None or not len(table)):
        raise NoData("the metrics table is empty")
    metrics = set(df["metric"].unique())
    panels = []
    if {"linearity_score", "linearity_score_no_residual"} & metrics:
        panels.append("score")
    for base in _BANDS:
        if any(f"{base}.{s}" in metrics for s in _QUANTILE_SUFFIXES):
            panels.append(base)
    if "activation_norm" in metrics:
        panels.append("activation_norm")
    if not panels:
        raise NoData("no linearity_score, linearity_per_sample, consecutive_cosine or activation_norm")
    pair_metrics = df["metric"].str.match(r"^(linearity_|consecutive_cosine)")
    pairs = layer_order(df.loc[pair_metrics, "layer"].unique())
    layers = layer_order(df.loc[df["metric"] == "activation_norm", "layer"].unique())
    members = layer_order({p for pair in pairs for p in (split_pair(pair) or (pair,))} | set(layers))
    depth = depth_values(members)
    values = list(depth.values()) or [0.0]
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=min(values), vmax=max(max(values), min(values) + 1))
    cmap = depth_cmap()
    colour = {x: cmap(norm(depth[(split_pair(x) or (x,))[0]])) for x in pairs + layers}
    return _Layout(
        df,
        metrics,
        [p for p in ("score", "activation_norm") if p in panels],
        [p for p in _BANDS if p in panels],
        pairs,
        layers,
        colour,
        common_prefix(members),
        np.sort(df["step"].unique()).astype(float),
        ", ".join(sorted(set(df["run"]) - {""})),
    )


def _band_row(sf, lay: _Layout, panel: str, letter: str, title_size) -> None:
    """A full-width row of small multiples, one per layer pair (at most :data:`MAX_BAND_PAIRS`)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from .._style import even_pick

    sub = lay.df[lay.df["metric"].str.startswith(panel + ".")]
    have = [p for p in lay.pairs if (sub["layer"] == p).any()]
    shown = even_pick(have, MAX_BAND_PAIRS)
    axes = sf.subplots(1, len(shown), squeeze=False, sharey=True)[0]
    for i, (ax, pair) in enumerate(zip(axes, shown)):
        ax.set_label(f"{panel}|{pair}")
        _quantile_bands(ax, sub[sub["layer"] == pair], panel, lay.colour[pair], _pair_label(pair, lay.prefix))
        ax.set_title(_pair_label(pair, lay.prefix).replace(" → ", "\n→ "), color=lay.colour[pair], fontsize=8)
        step_x(ax, lay.steps, lay.steps)
        if i == 0:
            ax.set_ylabel("per-sample linearity score" if panel == "linearity_per_sample" else "cosine per sample")
        else:
            ax.tick_params(labelleft=False)
    what = (
        "per-sample linearity score"
        if panel == "linearity_per_sample"
        else "per-sample cosine between consecutive layers' outputs"
    )
    cut = f", {len(shown)} of {len(have)} layer pairs (evenly spaced)" if len(shown) < len(have) else ""
    sf.suptitle(f"({letter}) {what}: median and quantile bands{cut}", fontsize=title_size)
    band = [
        Line2D([], [], color="0.3", linewidth=1.5, label="median"),
        Patch(facecolor="0.3", alpha=0.45, label="p25–p75"),
        Patch(facecolor="0.3", alpha=0.2, label="p5–p95"),
    ]
    sf.legend(handles=band, loc="outside right upper", frameon=False, fontsize=8)


def _figure_linearity_study(table: pd.DataFrame, *, title: str | None = None):
    import matplotlib

    from .. import _style

    lay = _layout(table)
    # Layout: the one-axes panels side by side on top; each quantile panel a full-width row of
    # small multiples (one per layer pair: overlapping bands of several pairs are unreadable).
    letters = iter("abcd")
    with matplotlib.rc_context(_style.RC):
        heights = ([3.6] if lay.top else []) + [2.9] * len(lay.bands)
        fig = _style.new_figure(13.0, sum(heights) + 0.5 + 0.3 * len(heights))
        sfigs = fig.subfigures(len(heights), 1, squeeze=False, height_ratios=heights).ravel()
        if lay.top:
            axes = sfigs[0].subplots(1, len(lay.top), squeeze=False)[0]
            for ax, panel in zip(axes, lay.top):
                ax.set_label(panel)
                letter = next(letters)
                if panel == "score":
                    _linearity_score_panel(ax, lay.df, lay.pairs, lay.colour, lay.prefix, lay.metrics)
                    ax.set_title(f"({letter}) linearity score per layer pair")
                else:
                    _activation_norm_panel(ax, lay.df, lay.layers, lay.colour, lay.prefix)
                    ax.set_title(f"({letter}) activation norm per layer")
                step_x(ax, lay.steps, lay.steps)
        for sf, panel in zip(sfigs[1:] if lay.top else sfigs, lay.bands):
            _band_row(sf, lay, panel, next(letters), _style.RC["axes.titlesize"])
        head = title or LINEARITY_TITLE + (f": {lay.run}" if lay.run else "")
        fig.suptitle(head + (f"\n(layer names without the prefix {lay.prefix!r})" if lay.prefix else ""))
        return fig


def _linearity_score_panel(ax, df, pairs, colour, prefix, metrics) -> None:
    from matplotlib.lines import Line2D

    cells = dict(
        iter(
            df[df["metric"].isin(["linearity_score", "linearity_score_no_residual"])].groupby(
                ["layer", "metric"], sort=False
            )
        )
    )
    for pair in pairs:
        for metric, ls in (("linearity_score", "-"), ("linearity_score_no_residual", "--")):
            sub = cells.get((pair, metric))
            if sub is None:
                continue
            s = reduce_layers(sub, "mean")
            ax.plot(
                s.index.to_numpy(dtype=float),
                s.to_numpy(),
                color=colour[pair],
                linestyle=ls,
                linewidth=1.3,
                label=f"{_pair_label(pair, prefix)}|{metric}",
                **markers(len(s)),
            )
    ax.set_ylabel("linearity score (1 − Procrustes residual)")
    styles = [
        Line2D([], [], color="0.3", linestyle="-", label="with residual stream"),
        Line2D([], [], color="0.3", linestyle="--", label="without (Y − X)"),
    ]
    styles = [h for h, m in zip(styles, ("linearity_score", "linearity_score_no_residual")) if m in metrics]
    ax.legend(
        handles=_pair_handles(pairs, colour, prefix) + styles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        frameon=False,
        title="layer pair",
        fontsize=7,
    )


def _activation_norm_panel(ax, df, layers, colour, prefix) -> None:
    from matplotlib.lines import Line2D

    from .._style import even_pick, log_y, wants_log

    norms = df[df["metric"] == "activation_norm"]
    values = norms["value"].to_numpy(dtype=float)
    by_layer = dict(iter(norms.groupby("layer", sort=False)))
    for layer in layers:
        s = reduce_layers(by_layer[layer], "mean")
        ax.plot(
            s.index.to_numpy(dtype=float),
            s.to_numpy(),
            color=colour[layer],
            linewidth=1.3,
            label=layer[len(prefix) :] if prefix else layer,
            **markers(len(s)),
        )
    log = wants_log(values[np.isfinite(values)])
    if log:
        log_y(ax, values)
    ax.set_ylabel("mean activation norm" + (" (log scale)" if log else ""))
    shown = even_pick(layers, MAX_LEGEND_LAYERS + 4)
    handles = [Line2D([], [], color=colour[x], linewidth=1.5, label=x[len(prefix) :] if prefix else x) for x in shown]
    cut = f"\n({len(shown)} of {len(layers)})" if len(shown) < len(layers) else ""
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="layer" + cut, fontsize=7
    )


def _pair_handles(pairs: Sequence[str], colour: Mapping[str, tuple], prefix: str) -> list:
    """Legend entries for layer pairs; many pairs: only evenly chosen ones (the colour is depth)."""
    from matplotlib.lines import Line2D

    from .._style import even_pick

    shown = even_pick(list(pairs), MAX_LEGEND_LAYERS + 4)
    return [Line2D([], [], color=colour[p], linewidth=1.5, label=_pair_label(p, prefix)) for p in shown]


def _quantile_bands(ax, sub: pd.DataFrame, base: str, colour, label: str) -> None:
    """Median line (``.p50``, else ``.mean``), p25–p75 band and lighter p5–p95 band."""
    wide = sub.groupby(["step", "metric"])["value"].mean().unstack("metric")
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
        ax.plot(x, mid, color=colour, linewidth=1.5, label=label, gid="median", **markers(len(x)))


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
    from .. import _style

    try:
        fig = _figure_linearity_study(table, title=title)
    except NoData as exc:
        return _style.no_data(path, title or LINEARITY_TITLE, str(exc))
    return _style.save(fig, path)


def draw(spec: Mapping, path: Path, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    """The first of the spec's runs that has a table."""
    from .. import _style

    first, label = first_table(spec, inputs)
    title = spec.get("title")
    if first is None:
        return _style.no_data(path, title or LINEARITY_TITLE, "no metrics table for the figure's runs")
    return plot_linearity_study(first, path, title=title or f"{LINEARITY_TITLE}: {label}")


register(
    FigureKind(
        name="linearity",
        description="linearity of consecutive layers of one run (the first with a table) over training",
        reads=("table",),
        options={},
        draw=draw,
    )
)
