"""The ``gradient_pca`` figure: per-sample gradient PCA of the two outputs of the multi-task MLP,
one row per hidden layer."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ...store.layers import layer_order, split_pair
from . import FigureKind, RunFacts, register
from ._common import NoData, first_table, markers, metric_names, note, reduce_layers, split_output, step_x, tidy

GRADIENT_PCA_TITLE = "per-sample gradient PCA of the task outputs, per hidden layer"
#: At most this many hidden layers (rows) per figure, evenly spaced in depth beyond.
MAX_HIDDEN_ROWS = 8
#: The hidden width of a ``train_mlp`` run without ``model.hidden`` (the MLP's default).
DEFAULT_HIDDEN = 32
_EVR = re.compile(r"^gradient_pca_evr\.pc(\d+)$")
_COS = re.compile(r"^gradient_pca_cosine\.pc(\d+)$")
_STYLES = ["-", "--", ":", "-."]


def expected_abs_cosine(d: int) -> float:
    """E|cos| between two independent uniformly random unit vectors in R^d:
    Γ(d/2) / (√π·Γ((d+1)/2)) (≈ √(2/(π·d)) for large d)."""
    d = int(d)
    if d < 1:
        raise ValueError("d must be positive")
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def _parsed(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(explained-variance rows with pc/hidden/output, cosine rows with pc/hidden/pair, steps)."""
    df = tidy(table, metric_names(table, lambda m: bool(_EVR.match(m) or _COS.match(m))))
    evr = df[df["metric"].str.match(_EVR.pattern)].copy()
    cos = df[df["metric"].str.match(_COS.pattern)].copy()
    if evr.empty and cos.empty:
        raise NoData("no gradient_pca_evr.pc* or gradient_pca_cosine.pc* metric")
    evr = evr.assign(
        pc=[int(_EVR.match(m).group(1)) for m in evr["metric"]],
        hidden=[split_output(x)[0] for x in evr["layer"]],
        output=[split_output(x)[1] for x in evr["layer"]],
    )
    # "<layer>|<a>~<layer>|<b>": the hidden layer of side a, the pair "a vs b"
    sides = [tuple(split_output(p) for p in (split_pair(x) or (x, x))) for x in cos["layer"]]
    cos = cos.assign(
        pc=[int(_COS.match(m).group(1)) for m in cos["metric"]],
        hidden=[a[0] for a, _ in sides],
        pair=[f"{a[1]} vs {b[1]}" for a, b in sides],
    )
    return evr, cos, np.sort(df["step"].unique()).astype(float)


def _evr_panel(ax, h: str, sub: pd.DataFrame, pc_colour, style) -> None:
    for (pc, out), one in sub.groupby(["pc", "output"], sort=True):
        s = reduce_layers(one, "mean")
        ax.plot(
            s.index.to_numpy(dtype=float),
            s.to_numpy(),
            color=pc_colour[pc],
            linestyle=style[out],
            linewidth=1.3,
            label=f"PC{pc}|{out}",
            **markers(len(s)),
        )
    ax.set_title(f"{h}: explained variance of gradient PCs")
    ax.set_ylabel("explained variance ratio")
    ax.set_ylim(-0.02, 1.02)
    if sub.empty:
        note(ax, "gradient_pca_evr not computed")


def _cosine_panel(ax, h: str, sub: pd.DataFrame, pc_colour, pair_style, out_pairs, d) -> bool:
    """The |cos| between the outputs' i-th components; returns whether the random reference was drawn."""
    for (pc, pair), one in sub.groupby(["pc", "pair"], sort=True):
        s = reduce_layers(one, "mean")
        ax.plot(
            s.index.to_numpy(dtype=float),
            s.to_numpy(),
            color=pc_colour[pc],
            linestyle=pair_style[pair],
            linewidth=1.3,
            label=f"PC{pc}|{pair}",
            **markers(len(s)),
        )
    if d:
        ax.axhline(
            expected_abs_cosine(d),
            color="0.35",
            linestyle=":",
            linewidth=1.2,
            gid="random",
            label=f"random unit vectors (d = {d})",
        )
        ax.text(
            0.01,
            expected_abs_cosine(d),
            f" random, d = {int(d)}",
            transform=ax.get_yaxis_transform(),
            ha="left",
            va="bottom",
            fontsize=7,
            color="0.35",
        )
    pair_txt = out_pairs[0] if len(out_pairs) == 1 else "the two outputs"
    ax.set_title(f"{h}: alignment of the i-th PCs ({pair_txt})")
    ax.set_ylabel("|cos| between the outputs' i-th PCs")
    ax.set_ylim(-0.02, 1.02)
    if sub.empty:
        note(ax, "gradient_pca_cosine not computed")
    return bool(d)


def _figure_gradient_pca_study(
    table: pd.DataFrame, *, dims: Mapping[str, int] | int | None = None, title: str | None = None
):
    import matplotlib
    from matplotlib.lines import Line2D

    from .. import _style

    evr, cos, steps = _parsed(table)
    every = layer_order(set(evr["hidden"]) | set(cos["hidden"]))
    hidden = _style.even_pick(every, MAX_HIDDEN_ROWS)
    outputs = sorted(evr["output"].unique())
    out_pairs = sorted(cos["pair"].unique())
    n_pc = int(max([*evr["pc"], *cos["pc"], 1]))
    pc_colour = {i: matplotlib.colormaps["tab10"]((i - 1) % 10) for i in range(1, n_pc + 1)}
    style = {o: _STYLES[i % 4] for i, o in enumerate(outputs)}
    pair_style = {p: _STYLES[i % 4] for i, p in enumerate(out_pairs)}
    dim_of = (lambda h: dims) if isinstance(dims, (int, np.integer)) else (lambda h: (dims or {}).get(h))
    ref_drawn = False

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(11.8, 3.2 * len(hidden) + 0.6)
        axes = fig.subplots(len(hidden), 2, squeeze=False)
        for row, h in enumerate(hidden):
            ax_e, ax_c = axes[row]
            ax_e.set_label(f"{h}|evr")
            ax_c.set_label(f"{h}|cosine")
            _evr_panel(ax_e, h, evr[evr["hidden"] == h], pc_colour, style)
            ref_drawn |= _cosine_panel(ax_c, h, cos[cos["hidden"] == h], pc_colour, pair_style, out_pairs, dim_of(h))
            for ax in (ax_e, ax_c):
                if ax.lines:
                    step_x(ax, steps, steps)
                if row < len(hidden) - 1:
                    ax.set_xlabel("")
        handles = [Line2D([], [], color=pc_colour[i], linewidth=1.8, label=f"PC{i}") for i in range(1, n_pc + 1)]
        if len(outputs) > 1:
            handles += [Line2D([], [], color="0.3", linestyle=style[o], label=f"output {o}") for o in outputs]
        if len(out_pairs) > 1:
            handles += [Line2D([], [], color="0.3", linestyle=pair_style[p], label=p) for p in out_pairs]
        if ref_drawn:
            handles.append(
                Line2D([], [], color="0.35", linestyle=":", linewidth=1.2, label="E|cos| of random\nunit vectors")
            )
        fig.legend(
            handles=handles, loc="outside right upper", frameon=False, title="colour: component\nline style: output"
        )
        cut = f"{len(hidden)} of {len(every)} hidden layers shown, evenly spaced" if len(hidden) < len(every) else ""
        fig.suptitle(_style.with_notes(title or GRADIENT_PCA_TITLE, [cut]))
        return fig


def plot_gradient_pca_study(
    table: pd.DataFrame,
    path: str | os.PathLike,
    *,
    dims: Mapping[str, int] | int | None = None,
    title: str | None = None,
) -> Path:
    """Gradient PCA of the multi-task MLP: one row per hidden layer (at most :data:`MAX_HIDDEN_ROWS`).

    Left: ``gradient_pca_evr.pc{i}`` (layer ``"<layer>|<output>"``) vs step, colour = component,
    line style = output. Right: ``gradient_pca_cosine.pc{i}`` (layer ``"<layer>|<a>~<layer>|<b>"``),
    the |cos| between the two outputs' i-th components, with a dotted reference line at the
    expected |cos| of two random unit vectors in R^d when ``dims`` gives the layer's width d
    (``{"blocks.0.linear": 32}``, or one int for every layer); without it the line is left out.
    """
    from .. import _style

    try:
        fig = _figure_gradient_pca_study(table, dims=dims, title=title)
    except NoData as exc:
        return _style.no_data(path, title or GRADIENT_PCA_TITLE, str(exc))
    return _style.save(fig, path)


def draw(spec: Mapping, path: Path, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    """The first of the spec's runs that has a table; ``dims`` (prepared): the hidden width."""
    from .. import _style

    first, label = first_table(spec, inputs)
    title = spec.get("title")
    if first is None:
        return _style.no_data(path, title or GRADIENT_PCA_TITLE, "no metrics table for the figure's runs")
    extra = {"dims": spec["dims"]} if spec.get("dims") else {}
    return plot_gradient_pca_study(first, path, title=title or f"{GRADIENT_PCA_TITLE}: {label}", **extra)


def prepare(spec: Mapping, facts: RunFacts) -> dict:
    """``dims``: the hidden width of the first run when it is a ``train_mlp`` run (it sets the |cos|
    expected between random directions)."""
    first = spec["runs"][0]
    if facts.source_type(first) != "train_mlp":
        return {}
    return {"dims": int((facts.source(first).get("model") or {}).get("hidden", DEFAULT_HIDDEN))}


register(
    FigureKind(
        name="gradient_pca",
        description="two-task gradient PCA of one run (the first with a table), per hidden layer",
        reads=("table",),
        options={},
        draw=draw,
        prepare=prepare,
    )
)
