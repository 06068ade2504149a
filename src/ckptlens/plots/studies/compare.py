"""The ``compare`` figure: one metric of several runs, one panel per layer, one line per run."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ...store.layers import layer_order, split_pair
from ...store.patterns import select
from . import FigureKind, RunFacts, register
from ._common import (
    NoData,
    capped_runs,
    change_points,
    draw_events,
    event_handle,
    events_of,
    for_runs,
    legend_parts,
    markers,
    reduce_layers,
    run_colours,
    runs_and_labels,
    split_output,
    step_x,
    tidy,
    wrap,
)

#: At most this many layer panels, whatever ``max_panels`` asks.
MAX_PANELS = 24


def _display_layer(label: str) -> str:
    """A layer label for a panel title: a pair "a~b" of a model-scope metric reads "a vs b", and
    "blocks.0.linear|out0~blocks.0.linear|out1" reads "blocks.0.linear: out0 vs out1"."""
    pair = split_pair(label)
    if pair is None:
        return label
    a, b = pair
    (layer_a, out_a), (layer_b, out_b) = split_output(a), split_output(b)
    if out_a and out_b and layer_a == layer_b:
        return f"{layer_a}: {out_a} vs {out_b}"
    return f"{a} vs {b}"


def _comparison_rows(table, metric, runs, layers, max_panels) -> tuple[pd.DataFrame, list[str], list[str], str]:
    """(rows of the metric and runs shown, runs, layers shown, note) of a run comparison."""
    from .._style import even_pick

    df = tidy(table, [metric])
    if df.empty:
        raise NoData(f"no rows of {metric}")
    present = list(dict.fromkeys(df["run"]))
    run_list = [str(r) for r in runs if str(r) in present] if runs is not None else sorted(present)
    if not run_list:
        raise NoData("none of the requested runs has rows of this metric")
    run_list, note = capped_runs(run_list)
    note = f"; {note}" if note else ""
    df = df[df["run"].isin(run_list)]
    per_run = [set(df.loc[df["run"] == r, "layer"]) for r in run_list]
    common = set.intersection(*per_run)
    if layers is not None:
        wanted = [str(x) for x in layers if str(x) in set.union(*per_run)]
    else:
        if not common:
            common, note = set.union(*per_run), note + "; layers differ between runs"
        wanted = layer_order(common)
    if not wanted:
        raise NoData("none of the requested layers has rows")
    shown = even_pick(wanted, max(1, min(int(max_panels), MAX_PANELS)))
    if len(shown) < len(wanted):
        note += f"; {len(shown)} of {len(wanted)} layers, evenly spaced in depth"
    return df, run_list, shown, note


def _run_lines(ax, cells, layer: str, runs: Sequence[str], colours, events, metric: str) -> bool:
    """One layer's panel: a line per run; returns whether a change point was drawn."""
    any_event = False
    for run in runs:
        sub = cells.get((layer, run))
        if sub is None:
            continue
        s = reduce_layers(sub, "mean")
        ax.plot(
            s.index.to_numpy(dtype=float), s.to_numpy(), color=colours[run], linewidth=1.3, label=run, **markers(len(s))
        )
        any_event |= draw_events(ax, change_points(events, run, metric, [layer]), colours[run]) > 0
    return any_event


def _figure_run_comparison(
    table: pd.DataFrame,
    metric: str,
    *,
    runs: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    events: pd.DataFrame | None = None,
    max_panels: int = 12,
    title: str | None = None,
):
    import matplotlib
    from matplotlib.lines import Line2D

    from .. import _style
    from ..labels import axis_label

    df, run_list, shown, note = _comparison_rows(table, metric, runs, layers, max_panels)
    colours = run_colours(run_list)
    finite = _style.finite(df["value"].to_numpy())
    log = _style.wants_log(finite)
    steps = np.sort(df["step"].unique()).astype(float)
    display = {layer: _display_layer(layer) for layer in shown}
    prefix = _style.common_prefix(list(display.values()))
    long_names = max(len(x) for x in display.values()) > 28
    n = len(shown)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    any_event = False
    cells = dict(iter(df[df["layer"].isin(shown)].groupby(["layer", "run"], sort=False)))

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(3.5 * ncols + 1.8, 2.7 * nrows + 0.7)
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
        for ax in axes[n:]:
            ax.set_visible(False)
        for i, (ax, layer) in enumerate(zip(axes, shown)):
            ax.set_label(layer)
            any_event |= _run_lines(ax, cells, layer, run_list, colours, events, metric)
            ax.set_title(wrap(display[layer][len(prefix) :] if long_names and prefix else display[layer], 44))
            step_x(ax, steps, steps)
            if log:
                _style.log_y(ax, finite)
            if i % ncols == 0:
                ax.set_ylabel(axis_label(metric, log))
            else:
                ax.tick_params(labelleft=False)
            if i + ncols < n:  # another panel below: its x axis says it
                ax.set_xlabel("")
        handles = [Line2D([], [], color=colours[r], linewidth=1.6, label=r) for r in run_list]
        if any_event:
            handles.append(event_handle("change point", [colours[r] for r in run_list]))
        h, lab, hmap = legend_parts(handles)
        fig.legend(h, lab, handler_map=hmap, loc="outside right upper", frameon=False, title="run", handlelength=3.0)
        details = [
            d
            for d in ([f"layer names after {prefix!r}"] if long_names and prefix else [])
            + [x.strip() for x in note.split(";") if x.strip()]
        ]
        head = title or f"{metric} per layer: {len(run_list)} runs compared"
        fig.suptitle(wrap(head + (f" ({'; '.join(details)})" if details else ""), 120))
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
    order; beyond ``max_panels`` (at most :data:`MAX_PANELS`), evenly spaced ones (the title says
    how many of how many). Runs in the order of ``runs`` (default: sorted), qualitative colours, one
    legend for the figure. ``events``: change points of the same run, metric and layer as dashed
    lines.
    """
    from .. import _style

    try:
        fig = _figure_run_comparison(
            table, metric, runs=runs, layers=layers, events=events, max_panels=max_panels, title=title
        )
    except NoData as exc:
        return _style.no_data(path, title or f"{metric}: run comparison", str(exc))
    return _style.save(fig, path)


# --------------------------------------------------------------------------------------------
# the registered kind
# --------------------------------------------------------------------------------------------


def draw(spec: Mapping, path: Path, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    """``metric`` of the spec's runs (under their labels); ``layers``: module patterns (``*`` within
    a dotted component, ``**`` across) selecting the panels."""
    from .. import _style

    runs, labels = runs_and_labels(spec)
    metric = str(spec.get("metric", ""))
    title = spec.get("title")
    # only the metric's rows, relabelled: never a copy of a whole table
    parts = [
        d[d["metric"].astype(str) == metric].assign(run=labels[r])
        for r, d in for_runs(inputs.get("table"), runs).items()
        if len(d)
    ]
    table = pd.concat(parts, ignore_index=True) if parts else None
    layers = None
    if spec.get("layers") and table is not None:
        names = layer_order(table["layer"].astype(str).unique())
        layers = select(spec["layers"], names)
        if not layers:
            return _style.no_data(
                path, title or f"{metric}: run comparison", f"no layer of {metric} matches {list(spec['layers'])}"
            )
    return plot_run_comparison(
        table, metric, path, runs=[labels[r] for r in runs], layers=layers, events=events_of(spec, inputs), title=title
    )


def check(spec: Mapping, key: str, facts: RunFacts) -> None:
    if "metric" not in spec:
        raise ValueError(f"config key '{key}.metric': a compare figure needs the metric to compare")
    # a table run brings metrics of its own: the enabled metrics say nothing about them
    if not any(facts.source_type(r) == "table" for r in spec["runs"]):
        facts.check_metric_value(spec["metric"], f"{key}.metric")


register(
    FigureKind(
        name="compare",
        description="one metric for several runs: a panel per layer, a line per run",
        reads=("table", "dynamics"),
        options={
            "metric": {
                "type": "string",
                "minLength": 1,
                "description": "compare: the metric (a name as in metrics.parquet)",
            },
            "layers": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "description": "compare: module patterns of the layers shown (default: those of every run)",
            },
        },
        draw=draw,
        check=check,
    )
)
