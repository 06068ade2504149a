"""Task-vector figures: the PCA of the task vectors per layer (:func:`plot_task_vectors`), and the
evaluation of :mod:`ckptlens.task_vectors.sampling`: what the weights sampled from the task-vector
principal components are worth next to the base, the fine-tuned runs and their mean.

Like every figure of :mod:`ckptlens.plots`: a pyplot-free ``Figure`` on the Agg canvas, written
atomically (:mod:`ckptlens.plots._style`), numpy, pandas and matplotlib only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

KINDS = ("base", "finetuned", "mean", "sample")
_LABELS = {"base": "base", "finetuned": "fine-tuned runs", "mean": "mean of the runs", "sample": "samples"}
_STYLE = {
    "base": {"marker": "s", "color": "0.25", "s": 60, "zorder": 4},
    "finetuned": {"marker": "o", "color": "tab:blue", "s": 36, "zorder": 3},
    "mean": {"marker": "D", "color": "tab:red", "s": 60, "zorder": 4},
    "sample": {"marker": "^", "color": "tab:orange", "s": 30, "alpha": 0.85, "zorder": 3},
}
_METRICS = (("accuracy", "held-out accuracy"), ("loss", "held-out loss (cross-entropy)"))
SAMPLES_TITLE = "weights sampled from the task-vector principal components"
PCA_TITLE = "task-vector PCA per layer"


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
        names = [n[len(prefix) :] or n for n in names]
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
    from . import _style

    path = Path(path)
    if table is None or not len(table):
        return _style.no_data(path, title or SAMPLES_TITLE, "no evaluated weights")
    return _style.save(_figure_task_vector_samples(table, title), path)


def _figure_task_vector_samples(table: pd.DataFrame, title: str = ""):
    from . import _style

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
    fig = _style.new_figure(4.6 * len(panels) + 0.6, 4.6)
    for col, (metric, ylabel, shown) in enumerate(panels):
        _panel(fig.add_subplot(1, len(panels), col + 1), table, metric, ylabel, shown, legend=col == 0)
    fig.legend(loc="outside lower center", ncol=5, frameon=False, fontsize=8)
    n_samples = int((table["kind"] == "sample").sum())
    heading = title or SAMPLES_TITLE
    fig.suptitle(f"{heading}\n{n_samples} samples; dotted lines: base and mean of the runs", fontsize=10)
    return fig


def _panel(ax, table: pd.DataFrame, metric: str, ylabel: str, kinds: list[str], legend: bool) -> None:
    xpos = {k: i for i, k in enumerate(kinds)}
    for kind in kinds:
        rows = table[table["kind"] == kind]
        y = rows[metric].to_numpy(dtype=float)
        x = xpos[kind] + _spread(len(rows), 0.55)
        ax.scatter(x, y, label=_LABELS[kind] if legend else None, edgecolors="white", linewidths=0.5, **_STYLE[kind])
        if kind == "finetuned":
            for i, (xi, yi, label) in enumerate(zip(x, y, _short_names(list(rows["name"])))):
                ax.annotate(
                    label,
                    (xi, yi),
                    xytext=(0, 6 if i % 2 == 0 else -12),
                    textcoords="offset points",
                    fontsize=7,
                    ha="center",
                    color=_STYLE[kind]["color"],
                )  # alternating: ties stay legible
        if kind in ("base", "mean"):
            ax.axhline(float(np.mean(y)), color=_STYLE[kind]["color"], lw=0.8, ls=":", zorder=1)
        if kind == "sample" and len(rows) > 1:
            m, sd = float(np.mean(y)), float(np.std(y, ddof=1))
            ax.errorbar(
                [xpos[kind] + 0.42],
                [m],
                yerr=[sd],
                fmt="o",
                ms=4,
                color="tab:brown",
                capsize=3,
                lw=1.2,
                zorder=2,
                label="samples: mean ± sd" if legend else None,
            )
    ax.set_xticks(list(xpos.values()), [_LABELS[k] for k in kinds], fontsize=8)
    ax.set_xlim(-0.55, len(kinds) - 0.35)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3, lw=0.5)
    values = table[table["kind"].isin(kinds)][metric].to_numpy(dtype=float)
    ax.set_ylim(*(_limits(values, 0.0, 1.04) if metric == "accuracy" else _limits(values, 0.0)))


# ------------------------------------------------------------------------------- PCA per layer
_INT = re.compile(r"\d+")
_EVR = re.compile(r"^task_vector_pca_evr\.pc(\d+)$")


def layer_kind(layer: str) -> tuple[float | None, str]:
    """(depth, kind) of a layer name: the depth is its depth index
    (:func:`ckptlens.store.layers.layer_index`, the block index), further integers (head numbers)
    become ``*`` so that a block's heads share a kind;
    ``bert.encoder.layer.3.attention.head7.ov`` -> (3, ``bert.encoder.layer.{i}.attention.head*.ov``).
    No integer: (None, the name)."""
    from ._style import depth_template

    index, template = depth_template(layer)
    if index is None:
        return None, layer
    head, _, rest = template.partition("{i}")
    return float(index), head + "{i}" + _INT.sub("*", rest)


def plot_task_vectors(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """The task-vector PCA of :func:`ckptlens.task_vectors.pca.task_vector_pca` per layer, against depth.

    Left: the explained-variance ratio of the first principal component across the runs, with the
    share every direction would get if the runs differed isotropically (1 / the number of
    components with variance; shown where the components cover all the variance). Right: the
    total variance of the task vectors across the runs (log scale), i.e. how far apart the runs
    end up in that layer. x: the block index (first integer of the layer name); one line per
    kind of layer (query, key, ..., the heads' OV circuits as median with a min-max band over
    the heads); layers without an index (an embedding, a head on top) are points at the left or
    right end."""
    from . import _style

    title = title or PCA_TITLE
    need = {"layer", "metric", "value"}
    if table is None or not len(table) or not need <= set(table.columns):
        return _style.no_data(path, title, "no task-vector rows")
    df = table[list(need)].copy()
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    if not df["metric"].astype(str).str.match(_EVR.pattern).any():
        return _style.no_data(path, title, "no task_vector_pca_evr.pc* rows")
    return _style.save(_figure_task_vectors(df, title), Path(path))


def _kind_line(ax, series: pd.Series, kind: str, parsed: dict, ends: dict, prefix: str, colour) -> None:
    """One kind of layer against depth: the median over the layers at a depth (the heads of a
    block), with a min–max band when there are several; a layer without an index as a point."""
    members = [layer for layer, (_, k) in parsed.items() if k == kind and layer in series.index]
    if not members:
        return
    label = (kind[len(prefix) :] if kind not in ends else kind).replace("{i}", "i")
    by_depth = pd.DataFrame(
        {"depth": [ends.get(kind, parsed[m][0]) for m in members], "value": [series[m] for m in members]}
    ).groupby("depth")["value"]
    x = np.array(sorted(by_depth.groups), dtype=float)
    med = by_depth.median().reindex(x).to_numpy(dtype=float)
    if bool(by_depth.size().max() > 1):
        ax.fill_between(x, by_depth.min().reindex(x), by_depth.max().reindex(x), color=colour, alpha=0.18, linewidth=0)
        label += f" (median, band: min–max over {int(by_depth.size().max())})"
    ax.plot(
        x,
        med,
        color=colour,
        marker="o",
        markersize=4,
        linewidth=1.4,
        linestyle="-" if kind not in ends else "none",
        label=label,
    )


def _figure_task_vectors(df: pd.DataFrame, title: str):
    import matplotlib

    from . import _style

    evr = df[df["metric"].astype(str).str.match(_EVR.pattern)]
    pc1 = evr[evr["metric"] == "task_vector_pca_evr.pc1"].groupby("layer")["value"].mean()
    total = df[df["metric"] == "task_vector_pca_variance.sum"].groupby("layer")["value"].mean()
    covered = df[df["metric"] == "task_vector_pca_evr.sum"]["value"]
    # the components with variance (n_runs - 1 when centred) share it equally if the runs differ isotropically
    rank = int((evr["value"] > 1e-9).groupby(evr["layer"]).sum().max())
    isotropic = 1.0 / rank if rank and len(covered) and np.allclose(covered.dropna(), 1.0, atol=1e-6) else None

    parsed = {layer: layer_kind(layer) for layer in pc1.index}
    depths = [d for d, _ in parsed.values() if d is not None]
    lo, hi = (min(depths), max(depths)) if depths else (0.0, 0.0)
    kinds = sorted({k for _, k in parsed.values()}, key=lambda k: (k.count("{i}") == 0, k))
    indexed = [k for k in kinds if "{i}" in k]
    prefix = _style.common_prefix(indexed) if len(indexed) > 1 else ""
    colours = matplotlib.colormaps["tab10"]
    ends = {}  # layers without an index: left end for an input (an embedding), right end otherwise
    for k in kinds:
        if "{i}" not in k:
            ends[k] = (
                lo - 1 - sum(1 for e in ends.values() if e < lo)
                if _style.before_numbered(k)
                else hi + 1 + sum(1 for e in ends.values() if e > hi)
            )

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(11.5, 4.6)
        axes = fig.subplots(1, 2, squeeze=False).ravel()
        for ax, series, ylabel in (
            (axes[0], pc1, "PC1 share of the variance across runs"),
            (axes[1], total, "total variance across runs"),
        ):
            for j, kind in enumerate(kinds):
                _kind_line(ax, series, kind, parsed, ends, prefix, colours(j % 10))
            ax.set_ylabel(ylabel)
            ax.set_xlabel(f"block index i ({prefix.replace('{i}', 'i')}…)" if prefix else "block index")
            ticks = sorted({float(d) for d in depths} | set(ends.values()))
            names = {v: k for k, v in ends.items()}
            ax.set_xticks(ticks, [names[t] if t in names else f"{t:g}" for t in ticks])
        if isotropic is not None:
            axes[0].axhline(
                isotropic, color="0.45", linestyle="--", linewidth=1.0, label=f"isotropic: 1/{rank} per direction"
            )
        axes[0].set_ylim(0, 1.02)
        axes[0].set_title("(a) how much one direction dominates the runs' differences")
        finite = total.to_numpy(dtype=float)
        if (finite[np.isfinite(finite)] > 0).any():
            _style.log_y(axes[1], finite)
            axes[1].set_ylabel("total variance across runs (log scale)")
        axes[1].set_title("(b) how far apart the runs end up")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncol=min(4, len(handles)),
            frameon=False,
            title="layer kind",
            fontsize=8,
        )
        fig.suptitle(title)
        return fig
