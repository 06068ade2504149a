"""Cross-metric analysis of a tidy metrics table.

The input of every function here is a *tidy metrics table*: a DataFrame with the columns
``run`` (str), ``step`` (int), ``layer`` (str), ``metric`` (str) and ``value`` (float, may be
NaN), one row per (run, step, layer, metric). Two questions are answered, for one run at a time:

* How many independent directions of change do the metrics span over training?
  :func:`pca_explained_variance` runs a PCA over the steps of the standardized
  step x metric (and step x (layer, metric)) matrix.
* How tightly do two metrics move together on the same layer?
  :func:`metric_correlations` gives, per layer, Pearson r and the R² of a linear fit.

Nothing here crashes on degenerate input (constant or non-finite columns, too few steps,
metrics on disjoint layer sets): such cases are skipped and explained in the returned list of
notes, because in a workflow one odd metric must not cost the analysis of all the others.

Only numpy, pandas and scikit-learn are imported (no torch, no matplotlib), so that this module
is cheap to import from a notebook or a workflow job.

Example, on the Pythia table shipped with the project data::

    df = pd.read_csv("metrics.csv").rename(columns={"model": "run"})
    one = df[df.run == "pythia-160m-deduped"]
    explained, loadings, notes = pca_explained_variance(one)
    corr, notes = metric_correlations(one, [("grad_sim", "cka_scores")])
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from .labels import MEAN_LAYER, MEAN_TRAJECTORY_LAYER

__all__ = [
    "REQUIRED_COLUMNS",
    "EXPLAINED_COLUMNS",
    "LOADINGS_COLUMNS",
    "CORRELATION_COLUMNS",
    "MEAN_LAYER",
    "MEAN_TRAJECTORY_LAYER",
    "layer_sort_key",
    "pca_explained_variance",
    "metric_correlations",
    "missing_steps",
    "gap_notes",
]

REQUIRED_COLUMNS = ("run", "step", "layer", "metric", "value")
EXPLAINED_COLUMNS = ["run", "matrix", "component", "explained_variance_ratio", "cumulative"]
LOADINGS_COLUMNS = ["run", "matrix", "component", "column", "loading"]
CORRELATION_COLUMNS = [
    "run", "x_metric", "y_metric", "layer", "pearson_r", "r_squared", "slope", "intercept", "n_steps",
]
#: How many principal components get their loadings reported.
N_LOADING_COMPONENTS = 3
#: A series whose standard deviation is at most this fraction of its largest absolute value is
#: treated as constant: float round-off alone must not turn a flat metric into a "direction".
_CONSTANT_RTOL = 1e-12

_FIRST_INT = re.compile(r"\d+")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def layer_sort_key(layer: str) -> tuple[float, str]:
    """Depth-order sort key of a layer name: the first integer in the name, ties by name.

    ``"gpt_neox.layers.3.attention.dense"`` -> ``(3, name)``. Names without an integer go
    first if they look like an embedding (``"emb"`` in the name) and last otherwise (heads,
    final norms), which is where they sit in every usual architecture.
    """
    match = _FIRST_INT.search(layer)
    if match is not None:
        return (float(match.group()), layer)
    return (-1.0 if "emb" in layer.lower() else float("inf"), layer)


def _check_table(table: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"metrics table lacks column(s) {missing}; expected {list(REQUIRED_COLUMNS)} "
            "(for the Pythia CSV, rename 'model' to 'run' first)"
        )


def _single_run(table: pd.DataFrame, what: str) -> str:
    """The run name of a one-run table; a clear error for several runs (never a silent mix)."""
    _check_table(table)
    runs = sorted(pd.unique(table["run"].astype(str)))
    if len(runs) > 1:
        raise ValueError(
            f"{what} works on one run at a time, got {len(runs)} runs {runs[:5]}; "
            "filter first, e.g. table[table.run == name]"
        )
    return runs[0] if runs else ""


def _clean(table: pd.DataFrame, notes: list[str], prefix: str) -> pd.DataFrame:
    """Typed copy of the table with duplicate (step, layer, metric) rows averaged (and noted)."""
    df = table.loc[:, list(REQUIRED_COLUMNS)].copy()
    df["step"] = df["step"].astype(np.int64)
    df["layer"] = df["layer"].astype(str)
    df["metric"] = df["metric"].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    keys = ["step", "layer", "metric"]
    n_dup = int(df.duplicated(keys).sum())
    if n_dup:
        notes.append(f"{prefix}: {n_dup} duplicate (step, layer, metric) row(s) were averaged")
        # mean() of a group that holds an Inf stays Inf, and one holding NaN skips it;
        # both are then handled like any other non-finite value downstream.
        df = df.groupby(keys, as_index=False, sort=False)["value"].mean()
    return df


def _is_constant(values: np.ndarray) -> bool:
    """True for a finite series with no variation beyond round-off."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    return bool(np.std(values) <= _CONSTANT_RTOL * scale)


def _usable_columns(
    matrix: pd.DataFrame, notes: list[str], prefix: str
) -> pd.DataFrame:
    """Drop non-finite and constant columns, each with a note naming it and why."""
    keep = []
    for col in matrix.columns:
        values = matrix[col].to_numpy(dtype=float)
        if not np.all(np.isfinite(values)):
            n_bad = int(np.sum(~np.isfinite(values)))
            notes.append(
                f"{prefix}: column {col!r} dropped: contains NaN/Inf or is missing at "
                f"{n_bad} of {values.size} step(s)"
            )
        elif _is_constant(values):
            notes.append(f"{prefix}: column {col!r} dropped: constant over steps (std 0)")
        else:
            keep.append(col)
    return matrix.loc[:, keep]


def _pca_rows(
    run: str, name: str, matrix: pd.DataFrame, notes: list[str]
) -> tuple[list[dict], list[dict]]:
    """PCA of one step x column matrix on z-scored columns; rows for both output tables."""
    prefix = f"run {run!r}, matrix {name}"
    usable = _usable_columns(matrix, notes, prefix)
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


def _layer_mean_matrix(
    df: pd.DataFrame, steps: np.ndarray, notes: list[str], prefix: str
) -> pd.DataFrame:
    """Step x metric matrix of the mean over layers.

    The mean at every step is taken over the *same* layers: those finite at every step. Why:
    averaging whichever layers happen to be finite at each step would let a layer that drops
    out at some steps shift the mean there, a jump no layer actually made. Excluded layers are
    noted; a metric with no layer finite throughout becomes an all-NaN column (then dropped).
    """
    columns = {}
    for metric, sub in df.groupby("metric", sort=True):
        wide = sub.pivot(index="step", columns="layer", values="value").reindex(steps)
        finite = np.isfinite(wide.to_numpy(dtype=float)).all(axis=0)
        excluded = sorted(wide.columns[~finite], key=layer_sort_key)
        if excluded and finite.any():
            notes.append(
                f"{prefix}: metric {metric!r}: {len(excluded)} layer(s) not finite at every step "
                f"left out of the layer mean: {excluded[:5]}{' ...' if len(excluded) > 5 else ''}"
            )
        columns[metric] = _mean_over_layers(wide)
    return pd.DataFrame(columns, index=steps)


def _mean_over_layers(wide: pd.DataFrame) -> pd.Series:
    """Per step (row), the mean over the layers (columns) that are finite at every step; all NaN
    when no layer is."""
    finite = np.isfinite(wide.to_numpy(dtype=float)).all(axis=0)
    return wide.loc[:, finite].mean(axis=1) if finite.any() else pd.Series(np.nan, index=wide.index)


def _layer_metric_matrix(df: pd.DataFrame, steps: np.ndarray) -> pd.DataFrame:
    """Step x (layer, metric) matrix; columns named ``"layer|metric"`` in depth order."""
    wide = df.pivot(index="step", columns=["layer", "metric"], values="value").reindex(steps)
    order = sorted(wide.columns, key=lambda lm: (layer_sort_key(lm[0]), lm[1]))
    wide = wide.loc[:, order]
    wide.columns = [f"{layer}|{metric}" for layer, metric in order]
    return wide


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


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
    run = _single_run(table, "pca_explained_variance")
    notes: list[str] = []
    if table.empty:
        notes.append("pca_explained_variance: the table is empty; nothing to analyse")
        return (
            pd.DataFrame(columns=EXPLAINED_COLUMNS),
            pd.DataFrame(columns=LOADINGS_COLUMNS),
            notes,
        )
    df = _clean(table, notes, f"run {run!r}")
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


def _fit_one_layer(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, str | None]:
    """(pearson_r, r_squared, slope, intercept, why-undefined) for finite paired samples.

    r and R² are NaN below 3 points or when either series is constant (r is undefined there,
    and an R² on 2 points is always 1: meaningless). Slope and intercept are still given when
    the least-squares line itself is defined (>= 2 points, x not constant).
    """
    n = x.size
    nan = float("nan")
    if n < 2 or _is_constant(x):
        why = f"only {n} finite step(s)" if n < 2 else "x series is constant"
        return nan, nan, nan, nan, why
    # Centre first: the raw values can be large (norms ~1e2) and the sums of squares would lose
    # digits to cancellation otherwise.
    xc, yc = x - x.mean(), y - y.mean()
    sxx, sxy, syy = float(xc @ xc), float(xc @ yc), float(yc @ yc)
    slope = sxy / sxx
    intercept = float(y.mean() - slope * x.mean())
    if n < 3:
        return nan, nan, slope, intercept, f"only {n} finite steps (< 3)"
    if _is_constant(y):
        return nan, nan, slope, intercept, "y series is constant"
    r = float(np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))
    # R² from the residuals of the fitted line (not as r**2), so that r**2 == R² is a real check.
    residuals = y - (slope * x + intercept)
    r_squared = 1.0 - float(residuals @ residuals) / syy
    return r, r_squared, slope, intercept, None


def metric_correlations(
    table: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Per-layer linear association between pairs of metrics over the training steps of ONE run.

    For each pair ``(x_metric, y_metric)`` and each layer on which both metrics are defined
    (layers are matched by exact name: metrics on other layer sets, e.g. block outputs vs the
    block's linear weights, simply share no layers), over the steps where both values are
    finite: Pearson r, and the R² (1 - SS_res/SS_tot) of the least-squares line
    ``y ≈ slope·x + intercept``, its slope and intercept, and ``n_steps``. For a simple linear
    fit R² equals r²; it is computed from the residuals as an independent check.

    Per pair, one more row with ``layer == "mean"`` holds the arithmetic mean of ``pearson_r``
    and of ``r_squared`` over the pair's layers, skipping layers where they are NaN (plain
    mean, not Fisher-z: a descriptive summary, not an estimator). Its ``slope``, ``intercept``
    and ``n_steps`` are missing (NaN / <NA>) because they do not average meaningfully.

    ``pairs=None`` means every unordered pair of metrics in the table (alphabetical order,
    x < y). Unknown metrics and pairs without shared layers are skipped with a note; layers
    with < 3 finite points or a constant series get NaN r and R², with a note.

    Returns ``(corr, notes)``; ``corr`` has the columns ``run, x_metric, y_metric, layer,
    pearson_r, r_squared, slope, intercept, n_steps`` (n_steps nullable Int64), layers in
    depth order, then the "mean" row.
    """
    run = _single_run(table, "metric_correlations")
    notes: list[str] = []
    empty = pd.DataFrame(columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"})
    if table.empty:
        notes.append("metric_correlations: the table is empty; nothing to analyse")
        return empty, notes
    df = _clean(table, notes, f"run {run!r}")
    metrics = sorted(df["metric"].unique())
    if pairs is None:
        pairs = list(itertools.combinations(metrics, 2))
        if not pairs:
            notes.append(f"run {run!r}: fewer than 2 metrics ({metrics}); no pairs to correlate")

    # step x layer matrix per metric, built once and shared by every pair.
    wide = {m: sub.pivot(index="step", columns="layer", values="value") for m, sub in df.groupby("metric")}
    rows: list[dict] = []
    for pair in pairs:
        x_metric, y_metric = (str(p) for p in pair)
        prefix = f"run {run!r}, pair ({x_metric}, {y_metric})"
        absent = [m for m in (x_metric, y_metric) if m not in wide]
        if absent:
            valued = [v for m in absent for v in metrics if v.startswith(m + ".")]
            hint = f" (multi-valued: name one of {valued[:6]})" if valued else ""
            notes.append(f"{prefix}: skipped: metric(s) {absent} not in the table{hint}")
            continue
        wx, wy = wide[x_metric], wide[y_metric]
        layers = sorted(set(wx.columns) & set(wy.columns), key=layer_sort_key)
        if not layers:
            # Different layer sets: the model-level question (does one metric's course over
            # training follow the other's?) is still answered by their mean-over-layers courses.
            steps = wx.index.union(wy.index)
            x, y = (_mean_over_layers(w.reindex(steps)).to_numpy(dtype=float) for w in (wx, wy))
            ok = np.isfinite(x) & np.isfinite(y)
            r, r2, slope, intercept, why = _fit_one_layer(x[ok], y[ok])
            notes.append(
                f"{prefix}: the two metrics share no layer name (e.g. {sorted(wx.columns)[:1]} vs "
                f"{sorted(wy.columns)[:1]}): correlated their mean-over-layers trajectories "
                f"(layer {MEAN_TRAJECTORY_LAYER!r})" + (f"; r and R² undefined ({why})" if why else "")
            )
            rows.append(
                {
                    "run": run, "x_metric": x_metric, "y_metric": y_metric, "layer": MEAN_TRAJECTORY_LAYER,
                    "pearson_r": r, "r_squared": r2, "slope": slope, "intercept": intercept,
                    "n_steps": int(ok.sum()),
                }
            )
            continue
        # Align on the union of both metrics' steps: a step missing for one is just not finite.
        steps = wx.index.union(wy.index)
        pair_rows = []
        for layer in layers:
            x = wx[layer].reindex(steps).to_numpy(dtype=float)
            y = wy[layer].reindex(steps).to_numpy(dtype=float)
            ok = np.isfinite(x) & np.isfinite(y)
            r, r2, slope, intercept, why = _fit_one_layer(x[ok], y[ok])
            if why is not None:
                notes.append(f"{prefix}, layer {layer!r}: r and R² undefined ({why})")
            pair_rows.append(
                {
                    "run": run, "x_metric": x_metric, "y_metric": y_metric, "layer": layer,
                    "pearson_r": r, "r_squared": r2, "slope": slope, "intercept": intercept,
                    "n_steps": int(ok.sum()),
                }
            )
        r_all = np.array([p["pearson_r"] for p in pair_rows])
        r2_all = np.array([p["r_squared"] for p in pair_rows])
        if np.isnan(r_all).all():
            notes.append(f"{prefix}: r is undefined on every layer; the mean row is NaN")
        pair_rows.append(
            {
                "run": run, "x_metric": x_metric, "y_metric": y_metric, "layer": MEAN_LAYER,
                # nanmean warns on all-NaN input; the note above already says so.
                "pearson_r": float(np.nanmean(r_all)) if np.isfinite(r_all).any() else np.nan,
                "r_squared": float(np.nanmean(r2_all)) if np.isfinite(r2_all).any() else np.nan,
                "slope": np.nan, "intercept": np.nan, "n_steps": pd.NA,
            }
        )
        rows += pair_rows

    if not rows:
        return empty, notes
    corr = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    corr["n_steps"] = corr["n_steps"].astype("Int64")
    return corr, notes


def missing_steps(table: pd.DataFrame, expected_steps: Iterable[int]) -> list[int]:
    """Expected steps that occur nowhere in ``table["step"]``, sorted ascending.

    A step counts as present if any row (any run, layer or metric) has it; filter the table
    first to ask the question for one run or one metric.
    """
    steps = pd.to_numeric(table["step"], errors="coerce").dropna()
    present = set(steps.astype(np.int64).tolist())
    return sorted({int(s) for s in expected_steps} - present)


def gap_notes(missing: pd.DataFrame) -> list[str]:
    """Notes naming the steps a run lacks because their checkpoint failed (the ``missing_steps.csv``
    written by aggregation under ``on_bad_checkpoint: skip``: columns step, file, reason)."""
    if missing is None or missing.empty:
        return []
    notes = [
        f"step {int(r.step)} missing (its checkpoint failed, left out of the analysis): {r.file}: {r.reason}"
        for r in missing.sort_values("step").itertuples()
    ]
    notes.append(
        f"{len(missing)} step(s) missing; metrics comparing with a missing step (as its final, initial, "
        "previous or previous2 reference) are NaN where they needed it"
    )
    return notes
