"""Explained variance per principal component of the analysis' PCA (:mod:`ckptlens.analysis.pca`)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

#: At most this many principal components are drawn per PCA panel.
MAX_PCA_COMPONENTS = 30
#: At most this many runs (rows of panels) per figure.
MAX_RUNS = 7
#: At most this many matrices (columns of panels) per figure.
MAX_MATRICES = 5
#: How figures name the analysis' PCA matrices.
MATRIX_TITLES = {
    "layer_mean": "steps × metrics (mean over layers)",
    "layer_metric": "steps × (layer, metric)",
}
TITLE = "PCA of the standardized step × metric matrices"


def matrix_order(matrices) -> list[str]:
    """The known matrices in :data:`MATRIX_TITLES` order, then any other, sorted."""
    present = {str(m) for m in matrices}
    known = [m for m in MATRIX_TITLES if m in present]
    return known + sorted(present - set(known))


def plot_pca(explained: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Explained variance per principal component, one panel per matrix (and per run).

    ``explained`` is the first output of :func:`ckptlens.analysis.pca_explained_variance`
    (columns ``run, matrix, component, explained_variance_ratio, cumulative``). Bars show each
    component's ratio, a line with markers the cumulative ratio; a dotted line marks 90 %.
    At most the first 30 components are drawn (the panel title says so when cut), and at most
    :data:`MAX_RUNS` runs (the title says so).
    """
    from . import _style

    needed = {"matrix", "component", "explained_variance_ratio", "cumulative"}
    if explained is None or len(explained) == 0 or not needed <= set(explained.columns):
        return _style.no_data(path, TITLE, "no PCA result (too few usable steps or columns?)")
    return _style.save(_figure_pca(explained), path)


def _figure_pca(explained: pd.DataFrame):
    import matplotlib
    from matplotlib.ticker import FixedLocator

    from . import _style

    df = explained.copy()
    if "run" not in df.columns:
        df["run"] = ""
    df["run"] = df["run"].astype(str)
    all_runs = sorted(df["run"].unique())
    runs = all_runs[:MAX_RUNS]
    all_matrices = matrix_order(df["matrix"].astype(str))
    matrices = all_matrices[:MAX_MATRICES]
    notes = [
        f"{len(runs)} of {len(all_runs)} runs shown" if len(runs) < len(all_runs) else "",
        f"{len(matrices)} of {len(all_matrices)} matrices shown" if len(matrices) < len(all_matrices) else "",
    ]

    with matplotlib.rc_context(_style.RC):
        fig = _style.new_figure(4.6 * len(matrices) + 0.4, 3.4 * len(runs) + 0.5)
        axes = fig.subplots(len(runs), len(matrices), squeeze=False, sharey=True)
        for r, run in enumerate(runs):
            for c, matrix in enumerate(matrices):
                ax = axes[r, c]
                one = df[(df["run"] == run) & (df["matrix"] == matrix)].sort_values("component")
                n_total = len(one)
                one = one.head(MAX_PCA_COMPONENTS)
                name = MATRIX_TITLES.get(matrix, matrix)
                head = f"{run}\n{name}" if len(runs) > 1 or run else name
                if one.empty:
                    ax.text(0.5, 0.5, "no data", ha="center", va="center", color="0.4", transform=ax.transAxes)
                    ax.set_title(head)
                    continue
                k = one["component"].to_numpy()
                ax.bar(k, one["explained_variance_ratio"], color="tab:blue", alpha=0.75, label="per component")
                ax.plot(
                    k,
                    one["cumulative"],
                    color="tab:orange",
                    marker="o",
                    markersize=3,
                    linewidth=1.3,
                    label="cumulative",
                )
                ax.axhline(0.9, color="0.4", linestyle=":", linewidth=0.9, label="90 %")
                ax.set_ylim(0, 1.05)
                ax.set_xlim(0.4, k.max() + 0.6)
                ax.xaxis.set_major_locator(FixedLocator(_style.component_ticks(int(k.max()))))
                ax.set_xlabel("principal component")
                cut = f" (first {len(one)} of {n_total})" if n_total > len(one) else ""
                ax.set_title(head + cut)
                if c == 0:
                    ax.set_ylabel("explained variance ratio")
                if r == 0 and c == len(matrices) - 1:
                    ax.legend(loc="center right")
        fig.suptitle(_style.with_notes(TITLE, notes))
        return fig
