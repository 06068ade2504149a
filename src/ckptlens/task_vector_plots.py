"""The figure of :mod:`ckptlens.task_vector_sampling`'s evaluation: what the weights sampled from the
task-vector principal components are worth next to the base, the fine-tuned runs and their mean.

Like :mod:`ckptlens.plots`: a pyplot-free ``Figure`` on the Agg canvas, written atomically, numpy,
pandas and matplotlib only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_path

KINDS = ("base", "finetuned", "mean", "sample")
_LABELS = {"base": "base", "finetuned": "fine-tuned runs", "mean": "mean of the runs", "sample": "samples"}
_STYLE = {
    "base": {"marker": "s", "color": "0.25", "s": 60, "zorder": 4},
    "finetuned": {"marker": "o", "color": "tab:blue", "s": 36, "zorder": 3},
    "mean": {"marker": "D", "color": "tab:red", "s": 60, "zorder": 4},
    "sample": {"marker": "^", "color": "tab:orange", "s": 30, "alpha": 0.85, "zorder": 3},
}
_METRICS = (("accuracy", "held-out accuracy"), ("loss", "held-out loss (cross-entropy)"))


def _spread(n: int, width: float) -> np.ndarray:
    """Deterministic horizontal offsets of n points around their category's position."""
    return np.zeros(1) if n <= 1 else np.linspace(-width / 2, width / 2, n)


def _short_names(names: list[str]) -> list[str]:
    """Run labels without their common prefix (``minilm_seed0@step60`` -> ``seed0``) and without
    the step when every run has the same one."""
    names = [str(n) for n in names]
    steps = {n.partition("@")[2] for n in names}
    if len(steps) == 1:
        names = [n.partition("@")[0] for n in names]
    if len(names) > 1:
        prefix = os.path.commonprefix(names)
        prefix = prefix[: prefix.rfind("_") + 1] if "_" in prefix else ""
        names = [n[len(prefix):] or n for n in names]
    return names


def _limits(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if not v.size:
        return (0.0, 1.0)
    a, b = float(v.min()), float(v.max())
    pad = max(0.1 * (b - a), 0.002 * max(abs(a), abs(b)), 1e-9)
    a, b = a - pad, b + 2 * pad  # room above for the labels
    return (a if lo is None else max(lo, a), b if hi is None else min(hi, b))


def plot_task_vector_samples(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """Held-out accuracy and loss of each row of ``table`` (columns ``kind`` ∈
    base|finetuned|mean|sample, ``name``, ``loss``, ``accuracy``): one column of points per kind —
    a point per fine-tuned run (labelled) and per sample, the base and the mean of the runs marked
    on their own and as dotted reference lines, the samples' mean ± standard deviation as a bar.
    A third panel repeats the loss without the base when the base's loss would squash the
    differences among the other weights."""
    path = Path(path)
    if table is None or not len(table):
        fig = Figure(figsize=(5.0, 3.0), dpi=150, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no data", ha="center", va="center", fontsize=16, color="0.35", transform=ax.transAxes)
        return _save(fig, path)
    kinds = [k for k in KINDS if (table["kind"] == k).any()]
    others = table.loc[table["kind"] != "base", "loss"].to_numpy(dtype=float)
    base_loss = table.loc[table["kind"] == "base", "loss"].to_numpy(dtype=float)
    zoom = False  # a panel without the base when its loss would squash the others' differences
    if base_loss.size and np.isfinite(others).any():
        lo, hi = np.nanmin(others), np.nanmax(others)
        zoom = bool(np.any(np.abs(base_loss - (lo + hi) / 2) > 2 * max(hi - lo, 1e-12)))
    panels = [("accuracy", "held-out accuracy", kinds), ("loss", "held-out loss (cross-entropy)", kinds)]
    if zoom:
        panels.append(("loss", "held-out loss, without the base", [k for k in kinds if k != "base"]))
    fig = Figure(figsize=(4.6 * len(panels) + 0.6, 4.6), dpi=150, layout="constrained")
    FigureCanvasAgg(fig)
    for col, (metric, ylabel, shown) in enumerate(panels):
        _panel(fig.add_subplot(1, len(panels), col + 1), table, metric, ylabel, shown, legend=col == 0)
    fig.legend(loc="outside lower center", ncol=5, frameon=False, fontsize=8)
    n_samples = int((table["kind"] == "sample").sum())
    heading = title or "weights sampled from the task-vector principal components"
    fig.suptitle(f"{heading}\n{n_samples} samples; dotted lines: base and mean of the runs", fontsize=10)
    return _save(fig, path)


def _panel(ax, table: pd.DataFrame, metric: str, ylabel: str, kinds: list[str], legend: bool) -> None:
    xpos = {k: i for i, k in enumerate(kinds)}
    for kind in kinds:
        rows = table[table["kind"] == kind]
        y = rows[metric].to_numpy(dtype=float)
        x = xpos[kind] + _spread(len(rows), 0.55)
        ax.scatter(x, y, label=_LABELS[kind] if legend else None, edgecolors="white", linewidths=0.5, **_STYLE[kind])
        if kind == "finetuned":
            for i, (xi, yi, label) in enumerate(zip(x, y, _short_names(list(rows["name"])))):
                ax.annotate(label, (xi, yi), xytext=(0, 6 if i % 2 == 0 else -12), textcoords="offset points",
                            fontsize=7, ha="center", color=_STYLE[kind]["color"])  # alternating: ties stay legible
        if kind in ("base", "mean"):
            ax.axhline(float(np.mean(y)), color=_STYLE[kind]["color"], lw=0.8, ls=":", zorder=1)
        if kind == "sample" and len(rows) > 1:
            m, sd = float(np.mean(y)), float(np.std(y, ddof=1))
            ax.errorbar([xpos[kind] + 0.42], [m], yerr=[sd], fmt="o", ms=4, color="tab:brown", capsize=3,
                        lw=1.2, zorder=2, label="samples: mean ± sd" if legend else None)
    ax.set_xticks(list(xpos.values()), [_LABELS[k] for k in kinds], fontsize=8)
    ax.set_xlim(-0.55, len(kinds) - 0.35)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    values = table[table["kind"].isin(kinds)][metric].to_numpy(dtype=float)
    ax.set_ylim(*(_limits(values, 0.0, 1.04) if metric == "accuracy" else _limits(values, 0.0)))


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png")
    os.chmod(path, 0o644)
    return path
