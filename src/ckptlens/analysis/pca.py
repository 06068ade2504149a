"""How many independent directions of change do a run's metrics span over training?

:func:`pca_explained_variance` runs a PCA over the steps of the standardized step × metric matrix
(the mean over layers of each metric) and of the step × (layer, metric) matrix of ONE run's tidy
metrics table (columns ``run, step, layer, metric, value``). Degenerate input (constant or
non-finite columns, too few steps) is left out with a note naming it, never a crash: in a workflow
one odd metric must not cost the analysis of all the others. numpy, pandas and scikit-learn only.

Example, on the Pythia table shipped with the project data::

    df = pd.read_csv("metrics.csv").rename(columns={"model": "run"})
    explained, loadings, notes = pca_explained_variance(df[df.run == "pythia-160m-deduped"])
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from ..store.layers import layer_key
from ._common import clean, mean_over_layers, single_run, usable_columns

EXPLAINED_COLUMNS = ["run", "matrix", "component", "explained_variance_ratio", "cumulative"]
LOADINGS_COLUMNS = ["run", "matrix", "component", "column", "loading"]
#: How many principal components get their loadings reported.
N_LOADING_COMPONENTS = 3


def _pca_rows(run: str, name: str, matrix: pd.DataFrame, notes: list[str]) -> tuple[list[dict], list[dict]]:
    """PCA of one step x column matrix on z-scored columns; rows for both output tables."""
    prefix = f"run {run!r}, matrix {name}"
    usable = usable_columns(matrix, notes, prefix)
    n_rows, n_cols = usable.shape
    if n_rows < 2 or n_cols < 2:
        notes.append(
            f"{prefix}: no PCA: needs at least 2 steps and 2 usable columns, "
            f"has {n_rows} step(s) and {n_cols} usable column(s)"
        )
        return [], []
    x = usable.to_numpy(dtype=float)
    # z-score (ddof=0) so that the PCA is one of the correlation matrix: metrics on wildly
    # different scales (a norm ~100 vs a cosine ~0.5) then weigh the same.
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    pca = PCA(svd_solver="full").fit(z)
    ratio = pca.explained_variance_ratio_
    explained = [
        {
            "run": run,
            "matrix": name,
            "component": k + 1,
            "explained_variance_ratio": float(r),
            "cumulative": float(c),
        }
        for k, (r, c) in enumerate(zip(ratio, np.cumsum(ratio)))
    ]
    loadings = []
    for k in range(min(N_LOADING_COMPONENTS, len(ratio))):
        vec = pca.components_[k].copy()
        # An eigenvector's sign is arbitrary (it may flip between library versions or runs);
        # fix it so that the largest-magnitude loading is positive, for comparable outputs.
        if vec[np.argmax(np.abs(vec))] < 0:
            vec = -vec
        loadings.extend(
            {"run": run, "matrix": name, "component": k + 1, "column": str(col), "loading": float(v)}
            for col, v in zip(usable.columns, vec)
        )
    return explained, loadings


def _layer_mean_matrix(df: pd.DataFrame, steps: np.ndarray, notes: list[str], prefix: str) -> pd.DataFrame:
    """Step x metric matrix of the mean over layers.

    The mean at every step is taken over the *same* layers: those finite at every step. Why:
    averaging whichever layers happen to be finite at each step would let a layer that drops
    out at some steps shift the mean there, a jump no layer actually made. Excluded layers are
    noted; a metric with no layer finite throughout is left out, its note saying at how many steps
    its layers are not finite.
    """
    columns = {}
    for metric, sub in df.groupby("metric", sort=True):
        wide = sub.pivot(index="step", columns="layer", values="value").reindex(steps)
        finite = np.isfinite(wide.to_numpy(dtype=float)).all(axis=0)
        excluded = sorted(wide.columns[~finite], key=layer_key)
        if excluded and finite.any():
            notes.append(
                f"{prefix}: metric {metric!r}: {len(excluded)} layer(s) not finite at every step "
                f"left out of the layer mean: {excluded[:5]}{' ...' if len(excluded) > 5 else ''}"
            )
        elif excluded:
            # Say how the layers are NaN, not only that their mean is: a metric undefined at the
            # first step (no previous checkpoint) is NaN at 1 step of each layer, not at all of them.
            bad = (~np.isfinite(wide.to_numpy(dtype=float))).sum(axis=0)
            at = f"{bad.min()}" if bad.min() == bad.max() else f"{bad.min()}–{bad.max()}"
            notes.append(
                f"{prefix}: metric {metric!r}: no layer is finite at every step (each of its "
                f"{len(excluded)} layer(s) is NaN/Inf or missing at {at} of {len(steps)} step(s)), so the "
                "mean over layers is left undefined and the metric left out of this matrix"
            )
            # left out here, not as an all-NaN column: its note would count the mean's steps (all
            # of them), not the layers' (e.g. 1 step, the first, of a metric comparing with the previous)
            continue
        columns[metric] = mean_over_layers(wide)
    return pd.DataFrame(columns, index=steps, dtype=float)


def _layer_metric_matrix(df: pd.DataFrame, steps: np.ndarray) -> pd.DataFrame:
    """Step x (layer, metric) matrix; columns named ``"layer|metric"`` in depth order."""
    wide = df.pivot(index="step", columns=["layer", "metric"], values="value").reindex(steps)
    order = sorted(wide.columns, key=lambda lm: (layer_key(lm[0]), lm[1]))
    wide = wide.loc[:, order]
    wide.columns = [f"{layer}|{metric}" for layer, metric in order]
    return wide


def pca_explained_variance(
    table: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """PCA over training steps of the standardized metric matrices of ONE run.

    Two matrices are built, rows = steps (every step present in the table):

    * ``matrix="layer_mean"``: columns = metrics, value = mean over layers of the metric at
      that step (over the layers that are finite at every step, see notes);
    * ``matrix="layer_metric"``: columns = (layer, metric) pairs, named ``"layer|metric"``.

    Each column is z-scored (ddof=0) and a PCA (scikit-learn) is fitted, so the explained
    variance ratios are the normalized eigenvalues of the columns' correlation matrix. Columns
    that hold NaN/Inf (or are missing at some step) or are constant are dropped, each with a
    note; a matrix left with fewer than 2 rows or 2 columns yields no rows and a note.

    Returns ``(explained, loadings, notes)``:

    * ``explained``: ``run, matrix, component (1-based), explained_variance_ratio,
      cumulative``, one row per component (min(n_steps, n_columns) of them);
    * ``loadings``: ``run, matrix, component, column, loading`` for the first
      min(3, n) components. A loading is the column's coefficient in the unit-norm component
      vector (scikit-learn's ``components_``; squares sum to 1 over columns), with the sign
      fixed so that the largest-magnitude loading is positive;
    * ``notes``: human-readable strings, one per dropped column or skipped matrix.

    Raises ``ValueError`` if columns are missing or the table holds more than one run.
    """
    run = single_run(table, "pca_explained_variance")
    notes: list[str] = []
    if table.empty:
        notes.append("pca_explained_variance: the table is empty; nothing to analyse")
        return (
            pd.DataFrame(columns=EXPLAINED_COLUMNS),
            pd.DataFrame(columns=LOADINGS_COLUMNS),
            notes,
        )
    df = clean(table, notes, f"run {run!r}")
    steps = np.sort(df["step"].unique())

    explained_rows: list[dict] = []
    loading_rows: list[dict] = []
    for name, matrix in (
        ("layer_mean", _layer_mean_matrix(df, steps, notes, f"run {run!r}, matrix layer_mean")),
        ("layer_metric", _layer_metric_matrix(df, steps)),
    ):
        e, l = _pca_rows(run, name, matrix, notes)
        explained_rows += e
        loading_rows += l

    explained = pd.DataFrame(explained_rows, columns=EXPLAINED_COLUMNS)
    loadings = pd.DataFrame(loading_rows, columns=LOADINGS_COLUMNS)
    explained["component"] = explained["component"].astype(np.int64)
    loadings["component"] = loadings["component"].astype(np.int64)
    return explained, loadings, notes
