"""What every figure shares: the pyplot-free Agg figure, the rc settings, the ONE atomic PNG writer,
the "no data" figure, the training-step axis, the log-y helper, label helpers, and the size limit.

Figures are ``matplotlib.figure.Figure`` objects drawn on the Agg canvas, never through
``pyplot``: there is no global figure registry to leak into or to close, and drawing does not
switch the backend of a notebook that uses pyplot itself. This is the module that imports
matplotlib; the figure modules import it where they draw, so that importing
:mod:`ckptlens.plots` (or the figure registry :mod:`ckptlens.plots.studies`) stays light.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..store.atomic import atomic_path
from ..store.layers import layer_index, layer_key

DPI = 150
#: No figure is larger than this many pixels on either side (at :data:`DPI`): a figure with more
#: rows, columns or panels than fit draws fewer and says in the figure what it left out.
MAX_PIXELS = 4000
MAX_INCHES = MAX_PIXELS / DPI
LINESTYLES = ["-", "--", ":", "-."]
#: The one colour convention of correlations, in every heatmap and table: positive r blue,
#: negative red (matplotlib's ``RdBu``: -1 red, 0 white, +1 blue; the HTML tables'
#: :func:`ckptlens.plots.tables._color` uses the same two hues).
CORRELATION_CMAP = "RdBu"
RC = {
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
_FIRST_DIGITS = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------
# figure, PNG, "no data"
# --------------------------------------------------------------------------------------------


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on the Agg canvas, with constrained (tight) layout; at most
    :data:`MAX_INCHES` on either side (callers that may exceed it draw less and say so)."""
    fig = Figure(figsize=(min(width, MAX_INCHES), min(height, MAX_INCHES)), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | os.PathLike) -> Path:
    """Write ``fig`` as PNG atomically (:func:`ckptlens.store.atomic.atomic_path`: a dot-named
    temporary file next to ``path``, renamed when complete), readable by everyone (0644); then
    drop the figure's artists. Parent directories are created."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fig.savefig(fh, format="png", dpi=DPI)
            os.chmod(tmp, 0o644)
    finally:
        fig.clear()  # drop the artists now rather than whenever the GC gets to the figure
    return path


def no_data(path: str | os.PathLike, title: str, detail: str = "") -> Path:
    """A small figure that says "no data" (and why), in place of a crash on empty input; the job's
    log says so too (a ``WARNING: {path}: no data for ...`` line on stderr)."""
    print(f"WARNING: {path}: no data for {title!r}" + (f" ({detail})" if detail else ""), file=sys.stderr)
    with matplotlib.rc_context(RC):
        fig = new_figure(5.0, 3.0)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.set_title(title)
        ax.text(0.5, 0.55, "no data", ha="center", va="center", fontsize=16, color="0.35", transform=ax.transAxes)
        if detail:
            ax.text(
                0.5, 0.35, detail, ha="center", va="center", fontsize=8, color="0.45", transform=ax.transAxes, wrap=True
            )
        return save(fig, path)


def with_notes(title: str, notes: Iterable[str], width: float | None = None) -> str:
    """``title`` with the notes (what a size limit left out) as a parenthesised second line: in the
    figure's suptitle, where the constrained layout keeps them clear of the panels. ``width``: the
    figure's width in inches; lines are wrapped to fit it."""
    notes = [n for n in notes if n]
    text = title + (f"\n({'; '.join(notes)})" if notes else "")
    if width is None:
        return text
    chars = max(30, int(width * 11))  # about 11 characters per inch at the suptitle's font size
    return "\n".join(textwrap.fill(line, chars) for line in text.split("\n"))


# --------------------------------------------------------------------------------------------
# names and labels
# --------------------------------------------------------------------------------------------


def common_prefix(names: Sequence[str]) -> str:
    """Longest common prefix of ``names`` that ends at a '.' (so labels lose whole parts)."""
    if len(names) < 2:
        return ""
    prefix = os.path.commonprefix(list(names))
    cut = prefix.rfind(".")
    prefix = prefix[: cut + 1] if cut >= 0 else ""
    # Never strip a name down to nothing.
    return prefix if all(len(n) > len(prefix) for n in names) else ""


def depth_template(layer: str) -> tuple[int | None, str]:
    """(depth index, kind) of a layer name: the index is :func:`ckptlens.store.layers.layer_index`
    and the kind the name with that integer replaced by ``{i}`` (``blocks.3.attn`` ->
    ``(3, "blocks.{i}.attn")``), so that a block's sublayers share an index and differ in kind.
    No integer: (None, the name)."""
    index = layer_index(layer)
    if index is None:
        return None, layer
    return index, _FIRST_DIGITS.sub("{i}", layer, count=1)


def before_numbered(layer: str) -> bool:
    """Whether a layer without a depth index sorts before the numbered layers (an embedding, an
    input projection) rather than after them (the unembedding, a head), in
    :func:`ckptlens.store.layers.layer_key` order."""
    return layer_key(layer) < layer_key("0")


def depth_values(layers: Iterable[str]) -> dict[str, float]:
    """A depth value per layer for a depth colour scale: its :func:`~ckptlens.store.layers.layer_index`;
    one less than the smallest for a layer without an index before the numbered ones (an
    embedding), one more than the largest for one after them."""
    layers = list(dict.fromkeys(layers))
    index = {x: layer_index(x) for x in layers}
    known = [i for i in index.values() if i is not None]
    lo, hi = (min(known), max(known)) if known else (0, 0)
    return {x: float(i) if i is not None else float(lo - 1 if before_numbered(x) else hi + 1) for x, i in index.items()}


def sanitize(name: str) -> str:
    """A metric name made safe for a file name: [A-Za-z0-9._-] only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "metric"


def component_ticks(n: int) -> list[int]:
    """Component numbers to label: all up to 12, else 1 and every 5th (the first must show)."""
    return list(range(1, n + 1)) if n <= 12 else [1] + list(range(5, n + 1, 5))


def even_pick(items: Sequence, n: int) -> list:
    """At most ``n`` items evenly spaced by position, first and last included."""
    if len(items) <= n:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def finite(values: Iterable) -> np.ndarray:
    """The finite numbers among ``values`` (anything non-numeric dropped)."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        arr = values.astype(float, copy=False)
    else:
        arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)
    return arr[np.isfinite(arr)]


# --------------------------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------------------------


def log_y(ax, values: np.ndarray) -> None:
    """Log y axis; over less than two decades, plain-number tick labels ("3", "0.5") instead
    of the default 3×10^0, which are hard to read, and labelled minor ticks so a few show."""
    ax.set_yscale("log")
    values = np.asarray(values, dtype=float)
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


def wants_log(values: np.ndarray) -> bool:
    """A log y axis for values that are all positive and span more than a factor 100."""
    return bool(values.size and values.min() > 0 and values.max() / values.min() > 100)


def is_log_spaced(steps: Iterable[float]) -> bool:
    """Whether checkpoint steps are log-spaced, i.e. are best shown on a log-like axis.

    Two conditions: the positive steps span more than a factor 100 (max/min), and they are
    roughly geometric rather than even: at least 20 % of them lie below the geometric midpoint
    sqrt(min·max). Evenly spaced steps put ~1/ratio of their points there (1 % for 1..1000),
    a geometric series ~50 %; Pythia's 0,1,2,4,…,512,1000,3000,13000,…,143000 has 35 %.
    With fewer than 3 positive steps the spacing says nothing and the span alone decides.
    """
    arr = finite(steps)
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
    steps = steps if isinstance(steps, np.ndarray) else list(steps)
    if is_log_spaced(steps):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlabel("training step (symlog scale)")
        arr = finite(steps)
        # Start exactly at the first step: the default margin on a symlog axis would reach
        # into negative steps, which do not exist.
        ax.set_xlim(float(arr.min()), float(arr.max()) * 1.15)
        return "symlog"
    ax.set_xscale("linear")
    ax.set_xlabel("training step")
    return "linear"
