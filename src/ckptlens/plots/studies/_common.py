"""What the study figures share: clean inputs, per-step reductions, run colours, change-point
lines, legends, the step axis over several inputs, notes in empty panels, and the spec helpers of
:func:`ckptlens.plots.studies.plot_study_figure`.

numpy and pandas at import time; matplotlib only inside the functions that draw (importing the
figure registry must stay light).

Events (``events`` arguments) are the rows of a change-point / convergence table with columns
``run, metric, layer, kind, step, value, score``; only ``kind == "change_point"`` rows are drawn,
as thin dashed vertical lines in the colour of their run, and only in panels showing the same run
and the same metric and layer (training-log panels: ``metric == "loss"``, ``layer == "model"``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ...store.layers import split_pair
from ...store.tidy import TIDY_COLUMNS

#: Style of a change-point line (thin, dashed, in the colour of its run).
EVENT_STYLE = {"linestyle": (0, (4, 3)), "linewidth": 0.9, "alpha": 0.85}
#: Style of a random-baseline line.
BASELINE_STYLE = {"color": "0.45", "linestyle": "--", "linewidth": 1.1}
#: Up to this many layers (pairs) are named in a legend; beyond it a colorbar shows depth.
MAX_LEGEND_LAYERS = 8
#: At most this many runs are drawn in a figure across runs (colours stay distinguishable).
MAX_RUNS = 20
#: The ``ks`` option (induction, rotary_sweep): JSON schema.
KS_OPTION = {
    "type": "array",
    "items": {"type": "integer", "minimum": 1},
    "minItems": 1,
    "description": "the subspace ranks k shown (default: every k in the tables)",
}


class NoData(Exception):
    """Raised by a ``_figure_*`` function when there is nothing to draw (the message says why)."""


_NoData = NoData


# --------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------


def tidy(table: pd.DataFrame | None, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """A clean copy of a tidy metrics table (typed columns, no row without a step); empty if
    ``table`` is None, empty or lacks a column. ``metrics``: keep only the rows of these metric
    names (a filter applied before the copy: a figure that shows a few metrics of a large table
    copies only those rows)."""
    if table is None or len(table) == 0 or not {"step", "layer", "metric", "value"} <= set(table.columns):
        return pd.DataFrame(
            {c: pd.Series(dtype=object if c in ("run", "layer", "metric") else float) for c in TIDY_COLUMNS}
        )
    if metrics is not None:
        table = table[table["metric"].astype(str).isin(set(metrics))]
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


def metric_names(table: pd.DataFrame | None, keep) -> list[str]:
    """The metric names of ``table`` for which ``keep(name)`` holds (to filter before a copy)."""
    if table is None or len(table) == 0 or "metric" not in table.columns:
        return []
    return [m for m in dict.fromkeys(map(str, pd.unique(table["metric"]))) if keep(m)]


def training_log(log: pd.DataFrame | None) -> pd.DataFrame:
    """A clean, step-sorted copy of a training log (missing columns become NaN)."""
    from ..training import clean_log

    if log is None or len(log) == 0 or "step" not in log.columns:
        return pd.DataFrame(columns=["step", "loss", "id_error", "ood_error"], dtype=float)
    return clean_log(log)


def reduce_layers(sub: pd.DataFrame, how: str = "max") -> pd.Series:
    """Values of ``sub`` (one metric of one run) per step, reduced over its layers by ``how``
    ("max", "min" or "mean"), NaN ignored (all-NaN gives NaN). Index: the sorted steps."""
    if sub.empty:
        return pd.Series(dtype=float)
    steps = np.sort(sub["step"].unique())
    wide = sub.groupby(["step", "layer"])["value"].mean().unstack("layer").reindex(steps)
    arr = wide.to_numpy(dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: NaN, as wanted
        values = {"max": np.nanmax, "min": np.nanmin, "mean": np.nanmean}[how](arr, axis=1)
    return pd.Series(values, index=steps)


def change_points(events: pd.DataFrame | None, run: str, metric: str, layers: Iterable[str]) -> np.ndarray:
    """Steps of the ``change_point`` events of ``run`` for ``metric`` at one of ``layers``."""
    if events is None or len(events) == 0 or not {"run", "metric", "layer", "kind", "step"} <= set(events.columns):
        return np.array([])
    mask = (
        (events["run"].astype(str) == str(run))
        & (events["metric"].astype(str) == metric)
        & events["layer"].astype(str).isin([str(x) for x in layers])
        & (events["kind"].astype(str) == "change_point")
    )
    steps = pd.to_numeric(events.loc[mask, "step"], errors="coerce").to_numpy(dtype=float)
    return np.unique(steps[np.isfinite(steps)])


def is_pair(layer: str) -> bool:
    return split_pair(layer) is not None


def split_output(label: str) -> tuple[str, str]:
    """ "blocks.0.linear|out0" -> ("blocks.0.linear", "out0") (a layer's value for one output of a
    multi-output model); no "|": (label, "")."""
    layer, sep, output = label.rpartition("|")
    return (layer, output) if sep else (label, "")


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------


@functools.cache
def depth_cmap():
    """viridis without its lightest yellow (lines on white stay visible)."""
    import matplotlib
    from matplotlib.colors import ListedColormap

    return ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.88, 256)), "viridis_dark")


def run_colours(runs: Sequence[str]) -> dict[str, tuple]:
    """Qualitative colours, one per run, in the given order (tab10; tab20 beyond 10 runs)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"]
    return {run: cmap(i % cmap.N) for i, run in enumerate(runs)}


def draw_events(ax, steps: np.ndarray, colour) -> int:
    for s in steps:
        ax.axvline(s, color=colour, gid="change_point", label="_change point", **EVENT_STYLE)
    return len(steps)


def event_handle(label: str, colours: Sequence | None = None):
    """Legend entry of change points: a dashed segment in each run's colour (grey if none given),
    as a (tuple of lines, label) pair for :func:`legend_parts`."""
    from matplotlib.lines import Line2D

    colours = list(colours or ["0.25"])
    handle = tuple(Line2D([], [], color=c, **EVENT_STYLE) for c in colours)
    return handle, label


def legend_parts(entries) -> tuple[list, list, dict]:
    """(handles, labels, handler_map) from a list of Artists and (tuple, label) pairs."""
    from matplotlib.legend_handler import HandlerTuple

    handles, labels = [], []
    for e in entries:
        if isinstance(e, tuple) and len(e) == 2 and isinstance(e[0], tuple):
            handles.append(e[0])
            labels.append(e[1])
        else:
            handles.append(e)
            labels.append(e.get_label())
    return handles, labels, {tuple: HandlerTuple(ndivide=None, pad=0.0)}


def step_x(ax, decide: Iterable[float], extent: Iterable[float]) -> str:
    """:func:`ckptlens.plots._style.step_axis` with the scale decided by ``decide`` (the checkpoint
    steps) and the limits covering ``extent`` (every step drawn in the panel, e.g. a denser
    training log)."""
    from .._style import step_axis

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


def note(ax, text: str) -> None:
    """A grey note in the middle of an empty panel ("not computed", "no training log")."""
    ax.text(0.5, 0.5, text, ha="center", va="center", color="0.4", fontsize=9, transform=ax.transAxes, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def markers(n_steps: int) -> dict:
    """Markers show isolated points between gaps; only while they do not crowd the line."""
    return {"marker": "o", "markersize": 2.5} if n_steps <= 60 else {}


def fmt_step(v: float, _pos=None) -> str:
    """143000 -> "143k", 512 -> "512" (colorbar ticks of training steps)."""
    v = float(v)
    if abs(v) >= 10_000:
        return f"{v / 1000:g}k"
    return f"{v:g}"


def fmt_size(n: float, _pos=None) -> str:
    """Number of parameters as "70M", "1.4B", "12B"."""
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def pair_note(n: int, how: str = "max") -> str:
    return "" if n <= 1 else f"\n({how} over {n} head pairs)"


def wrap(text: str, width: float) -> str:
    """Break ``text`` at spaces so that no line is much longer than ``width`` chars."""
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
# the figure spec
# --------------------------------------------------------------------------------------------


def runs_and_labels(spec: Mapping) -> tuple[list[str], dict[str, str]]:
    """The runs of a figure spec, in order, and run -> legend label: ``runs`` a list (with an
    optional ``labels`` mapping) or a mapping run -> label."""
    runs_spec = spec.get("runs") or []
    labels = dict(spec.get("labels") or (runs_spec if isinstance(runs_spec, Mapping) else {}))
    runs = [str(r) for r in runs_spec]
    return runs, {r: str(labels.get(r, r)) for r in runs}


def for_runs(per_run: Mapping[str, pd.DataFrame] | None, runs: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The entries of ``per_run`` for ``runs`` (in that order) that are not None."""
    return {r: per_run[r] for r in runs if per_run and per_run.get(r) is not None}


def relabelled(spec: Mapping, per_run: Mapping[str, pd.DataFrame] | None) -> dict[str, pd.DataFrame]:
    """``per_run`` keyed by the runs' legend labels, in the spec's run order."""
    runs, labels = runs_and_labels(spec)
    return {labels[r]: d for r, d in for_runs(per_run, runs).items()}


def first_table(spec: Mapping, inputs: Mapping[str, Mapping[str, pd.DataFrame]]):
    """(table, legend label) of the first of the spec's runs that has a non-empty table; (None, None)
    if none has."""
    runs, labels = runs_and_labels(spec)
    tables = inputs.get("table") or {}
    first = next((r for r in runs if tables.get(r) is not None and len(tables[r])), None)
    return (tables[first], labels[first]) if first is not None else (None, None)


def events_of(spec: Mapping, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> pd.DataFrame | None:
    """The runs' detected dynamics as one table, its ``run`` column the legend labels."""
    runs, labels = runs_and_labels(spec)
    frames = [d.assign(run=labels[r]) for r, d in for_runs(inputs.get("dynamics"), runs).items() if len(d)]
    return pd.concat(frames, ignore_index=True) if frames else None


def capped_runs(runs: Sequence[str]) -> tuple[list[str], str]:
    """At most :data:`MAX_RUNS` runs, and the note saying how many were left out."""
    runs = list(runs)
    if len(runs) <= MAX_RUNS:
        return runs, ""
    return runs[:MAX_RUNS], f"the first {MAX_RUNS} of {len(runs)} runs shown"
