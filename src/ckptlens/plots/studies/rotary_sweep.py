"""The ``rotary_sweep`` figure: QK–OV matching as a function of the relative position r."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import FigureKind, register
from ._common import BASELINE_STYLE, KS_OPTION, NoData, depth_cmap, fmt_step, note, pair_note, relabelled, tidy

ROTARY_TITLE = "QK–OV matching vs relative position r under rotary embeddings"
#: Checkpoints drawn per panel by default.
SWEEP_STEPS = 8
#: At most this many runs (rows) and kinds (ranks k and the z-score: columns) per figure.
MAX_RUN_ROWS, MAX_KIND_COLUMNS = 8, 6
_SWEEP = re.compile(r"^qk_ov_rotary_sweep\.(?:k(?P<k>\d+)|(?P<z>zscore))_r(?P<r>-?\d+(?:\.\d+)?)$")


def _offset_axis(ax, offsets: np.ndarray) -> None:
    """x axis of relative positions: symlog with a tick per offset when they are geometric
    (0, 1, 2, 4, 8, 16), linear otherwise."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

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


def _sweeps(tables) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Per run: the sweep rows (with their k, kind and offset r parsed) and the random baselines."""
    parsed: dict[str, pd.DataFrame] = {}
    baselines: dict[str, pd.DataFrame] = {}
    for run, t in (tables or {}).items():
        if t is None or not len(t) or "metric" not in t.columns:
            continue
        names = pd.Series(t["metric"].astype(str).unique())
        wanted = names[names.str.match(_SWEEP.pattern) | names.str.match(r"qk_ov_overlap_max\.k\d+_random$")]
        df = tidy(t, wanted)
        m = df["metric"].str.extract(_SWEEP)
        sw = df[m["r"].notna()].assign(k=m.loc[m["r"].notna(), "k"], r=m.loc[m["r"].notna(), "r"].astype(float))
        if not sw.empty:
            sw["kind"] = np.where(sw["k"].isna(), "zscore", "k" + sw["k"].fillna("").astype(str))
            parsed[str(run)] = sw
            baselines[str(run)] = df[df["metric"].str.match(r"qk_ov_overlap_max\.k\d+_random$")]
    return parsed, baselines


def _step_norm(parsed: Mapping[str, pd.DataFrame], chosen: Mapping[str, list]):
    from matplotlib.colors import Normalize, SymLogNorm

    from .._style import is_log_spaced

    every = np.unique(np.concatenate([np.asarray(v, dtype=float) for v in chosen.values()] + [np.array([])]))
    if every.size == 0:
        raise NoData("none of the requested steps is in the tables")
    all_steps = np.unique(np.concatenate([sw["step"].to_numpy(dtype=float) for sw in parsed.values()]))
    lo, hi = float(every.min()), float(every.max())
    if is_log_spaced(all_steps):
        return SymLogNorm(linthresh=1, vmin=lo, vmax=max(hi, lo + 1), base=10), every
    return Normalize(vmin=lo, vmax=max(hi, lo + 1)), every


def _sweep_panel(ax, sub: pd.DataFrame, kind: str, steps: list, norm, baseline: pd.DataFrame) -> bool:
    """One run's sweep of one kind: a line per checkpoint (max over head pairs); returns whether
    the random baseline was drawn."""
    cmap = depth_cmap()
    n_pairs = sub["layer"].nunique()
    for s in steps:
        one = sub[sub["step"] == s]
        if one.empty:
            continue
        wide = one.groupby(["r", "layer"])["value"].mean().unstack("layer").sort_index()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            y = np.nanmax(wide.to_numpy(dtype=float), axis=1)
        ax.plot(
            wide.index.to_numpy(dtype=float),
            y,
            color=cmap(norm(float(s))),
            linewidth=1.3,
            marker="o",
            markersize=3,
            label=f"step {s}",
            gid=f"step={s}",
        )
    drawn = False
    if kind != "zscore":
        b = baseline[baseline["metric"] == f"qk_ov_overlap_max.{kind}_random"]["value"].to_numpy(dtype=float)
        b = b[np.isfinite(b)]
        if b.size:
            ax.axhline(float(np.mean(b)), gid="random", label="random subspaces", **BASELINE_STYLE)
            drawn = True
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("max cos of principal angles" + pair_note(n_pairs))
    else:
        ax.set_ylabel("diagonal z-score" + pair_note(n_pairs))
    return drawn


def _step_colorbar(fig, axes, norm, every: np.ndarray, n_runs: int) -> None:
    """The colorbar of the checkpoints' colours, "training step"."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.ticker import FuncFormatter, NullLocator

    cbar = fig.colorbar(
        ScalarMappable(norm=norm, cmap=depth_cmap()),
        ax=axes.ravel().tolist(),
        pad=0.02,
        aspect=max(20, 12 * n_runs),
        shrink=min(1.0, 0.55 + 0.15 * n_runs),
    )
    cbar.set_label("training step")
    if every.size <= 10:
        cbar.set_ticks(every)
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(fmt_step))
    cbar.ax.yaxis.set_minor_locator(NullLocator())


def _figure_rotary_sweep(
    tables: Mapping[str, pd.DataFrame],
    *,
    ks: Sequence[int] | None = None,
    steps: Sequence[int] | None = None,
    title: str | None = None,
):
    import matplotlib
    from matplotlib.lines import Line2D

    from .. import _style

    parsed, baselines = _sweeps(tables)
    if not parsed:
        raise NoData("no qk_ov_rotary_sweep.* metric in the tables")
    runs = list(parsed)[:MAX_RUN_ROWS]
    found_k = sorted({int(k) for sw in parsed.values() for k in sw["k"].dropna().unique()})
    ks = found_k if ks is None else [int(k) for k in ks]
    kinds = [f"k{k}" for k in ks] + (
        ["zscore"] if any((sw["kind"] == "zscore").any() for sw in parsed.values()) else []
    )
    if not kinds:
        raise NoData("none of the requested ranks k is in the tables")
    notes = [
        f"{len(runs)} of {len(parsed)} runs shown" if len(runs) < len(parsed) else "",
        f"{MAX_KIND_COLUMNS} of {len(kinds)} panels per run shown" if len(kinds) > MAX_KIND_COLUMNS else "",
    ]
    kinds = kinds[:MAX_KIND_COLUMNS]
    chosen: dict[str, list] = {}
    for run in runs:
        run_steps = np.sort(parsed[run]["step"].unique())
        chosen[run] = (
            _style.even_pick(list(run_steps), SWEEP_STEPS)
            if steps is None
            else [s for s in run_steps if s in set(int(x) for x in steps)]
        )
    norm, every = _step_norm({r: parsed[r] for r in runs}, chosen)
    offsets = np.unique(np.concatenate([parsed[r]["r"].to_numpy(dtype=float) for r in runs]))

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(3.7 * len(kinds) + 1.3, 2.9 * len(runs) + 0.7)
        axes = fig.subplots(len(runs), len(kinds), squeeze=False, sharey="col")
        drawn_baseline = False
        for i, run in enumerate(runs):
            for j, kind in enumerate(kinds):
                ax = axes[i, j]
                ax.set_label(f"{run}|{kind}")
                sub = parsed[run][parsed[run]["kind"] == kind]
                what = f"rank k = {kind[1:]}" if kind != "zscore" else "token-space z-score (full rank)"
                ax.set_title(f"{run}: {what}")
                if sub.empty:
                    note(ax, "not computed")
                    continue
                drawn_baseline |= _sweep_panel(ax, sub, kind, chosen[run], norm, baselines[run])
                _offset_axis(ax, offsets)
                if i < len(runs) - 1:
                    ax.set_xlabel("")
        _step_colorbar(fig, axes, norm, every, len(runs))
        if drawn_baseline:
            fig.legend(
                handles=[Line2D([], [], label="random subspaces (expected max cos)", **BASELINE_STYLE)],
                loc="outside lower center",
                frameon=False,
            )
        head = (title or ROTARY_TITLE) + " (one line per checkpoint; max over head pairs)"
        fig.suptitle(_style.with_notes(head, notes))
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
    baseline of the same table (it does not depend on r) when present. At most
    :data:`MAX_RUN_ROWS` runs and :data:`MAX_KIND_COLUMNS` panels per run (the title says so).
    """
    from .. import _style

    try:
        fig = _figure_rotary_sweep(tables, ks=ks, steps=steps, title=title)
    except NoData as exc:
        return _style.no_data(path, title or ROTARY_TITLE, str(exc))
    return _style.save(fig, path)


def draw(spec: Mapping, path: Path, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    return plot_rotary_sweep(relabelled(spec, inputs.get("table")), path, ks=spec.get("ks"), title=spec.get("title"))


register(
    FigureKind(
        name="rotary_sweep",
        description="QK–OV matching against the relative position r under rotary embeddings",
        reads=("table",),
        options={"ks": KS_OPTION},
        draw=draw,
    )
)
