"""How tightly do two metrics move together on the same layer, over a run's training steps?

:func:`metric_correlations` gives, per layer of ONE run's tidy metrics table, Pearson r and the R²
of a linear fit for configured pairs of metrics, plus summary rows: :data:`MEAN_LAYER` (the mean of
the per-layer r) and, for metrics on different layers, :data:`MEAN_TRAJECTORY_LAYER` (r of their
mean-over-layers trajectories). Degenerate cases get NaN and a note, never a crash.

Example::

    corr, notes = metric_correlations(one_run, [("grad_sim", "cka_scores")])
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..store.layers import layer_key
from ._common import clean, is_constant, mean_over_layers, single_run

CORRELATION_COLUMNS = [
    "run",
    "x_metric",
    "y_metric",
    "layer",
    "pearson_r",
    "r_squared",
    "slope",
    "intercept",
    "n_steps",
]
#: ``layer`` values of the summary rows, and how figures label them.
MEAN_LAYER = "mean"
MEAN_TRAJECTORY_LAYER = "layer_mean"
SUMMARY_ROW_LABELS = {MEAN_LAYER: "mean over layers", MEAN_TRAJECTORY_LAYER: "layer-mean trajectories"}


def _fit_one_layer(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, str | None]:
    """(pearson_r, r_squared, slope, intercept, why-undefined) for finite paired samples.

    r and R² are NaN below 3 points or when either series is constant (r is undefined there,
    and an R² on 2 points is always 1: meaningless). Slope and intercept are still given when
    the least-squares line itself is defined (>= 2 points, x not constant).
    """
    n = x.size
    nan = float("nan")
    if n < 2 or is_constant(x):
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
    if is_constant(y):
        return nan, nan, slope, intercept, "y series is constant"
    r = float(np.clip(sxy / np.sqrt(sxx * syy), -1.0, 1.0))
    # R² from the residuals of the fitted line (not as r**2), so that r**2 == R² is a real check.
    residuals = y - (slope * x + intercept)
    r_squared = 1.0 - float(residuals @ residuals) / syy
    return r, r_squared, slope, intercept, None


def pair_row(run, x_metric, y_metric, layer, x: np.ndarray, y: np.ndarray) -> tuple[dict, str | None]:
    """One row of :data:`CORRELATION_COLUMNS`: the fit of ``y`` on ``x`` over the steps where both
    are finite, and why r is undefined (None where it is defined)."""
    ok = np.isfinite(x) & np.isfinite(y)
    r, r2, slope, intercept, why = _fit_one_layer(x[ok], y[ok])
    row = {"run": run, "x_metric": x_metric, "y_metric": y_metric, "layer": layer, "pearson_r": r}
    row.update(r_squared=r2, slope=slope, intercept=intercept, n_steps=int(ok.sum()))
    return row, why


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
    run = single_run(table, "metric_correlations")
    notes: list[str] = []
    empty = pd.DataFrame(columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"})
    if table.empty:
        notes.append("metric_correlations: the table is empty; nothing to analyse")
        return empty, notes
    df = clean(table, notes, f"run {run!r}")
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
        layers = sorted(set(wx.columns) & set(wy.columns), key=layer_key)
        if not layers:
            # Different layer sets: the model-level question (does one metric's course over
            # training follow the other's?) is still answered by their mean-over-layers courses.
            steps = wx.index.union(wy.index)
            x, y = (mean_over_layers(w.reindex(steps)).to_numpy(dtype=float) for w in (wx, wy))
            row, why = pair_row(run, x_metric, y_metric, MEAN_TRAJECTORY_LAYER, x, y)
            notes.append(
                f"{prefix}: the two metrics share no layer name (e.g. {sorted(wx.columns)[:1]} vs "
                f"{sorted(wy.columns)[:1]}): correlated their mean-over-layers trajectories "
                f"(layer {MEAN_TRAJECTORY_LAYER!r})" + (f"; r and R² undefined ({why})" if why else "")
            )
            rows.append(row)
            continue
        # Align on the union of both metrics' steps: a step missing for one is just not finite.
        steps = wx.index.union(wy.index)
        pair_rows = []
        for layer in layers:
            x = wx[layer].reindex(steps).to_numpy(dtype=float)
            y = wy[layer].reindex(steps).to_numpy(dtype=float)
            row, why = pair_row(run, x_metric, y_metric, layer, x, y)
            if why is not None:
                notes.append(f"{prefix}, layer {layer!r}: r and R² undefined ({why})")
            pair_rows.append(row)
        r_all = np.array([p["pearson_r"] for p in pair_rows])
        r2_all = np.array([p["r_squared"] for p in pair_rows])
        if np.isnan(r_all).all():
            notes.append(f"{prefix}: r is undefined on every layer; the mean row is NaN")
        pair_rows.append(
            {
                "run": run,
                "x_metric": x_metric,
                "y_metric": y_metric,
                "layer": MEAN_LAYER,
                # nanmean warns on all-NaN input; the note above already says so.
                "pearson_r": float(np.nanmean(r_all)) if np.isfinite(r_all).any() else np.nan,
                "r_squared": float(np.nanmean(r2_all)) if np.isfinite(r2_all).any() else np.nan,
                "slope": np.nan,
                "intercept": np.nan,
                "n_steps": pd.NA,
            }
        )
        rows += pair_rows

    if not rows:
        return empty, notes
    corr = pd.DataFrame(rows, columns=CORRELATION_COLUMNS)
    corr["n_steps"] = corr["n_steps"].astype("Int64")
    return corr, notes


def _pairs_of(wide: pd.DataFrame, run: str, layer: str, order: list[str]) -> pd.DataFrame:
    """Rows (CORRELATION_COLUMNS) of every pair of the columns of a step × metric matrix whose
    values are all finite, in ``order``: r, R² (= r² for a line), slope, intercept, n_steps."""
    x = wide[order].to_numpy(dtype=float)
    n = x.shape[0]
    mean = x.mean(axis=0)
    xc = x - mean
    ss = np.einsum("ij,ij->j", xc, xc)
    cov = xc.T @ xc
    with np.errstate(all="ignore"):
        r = np.clip(cov / np.sqrt(np.outer(ss, ss)), -1.0, 1.0)
        slope = cov / ss[:, None]  # slope[i, j]: y = metric j on x = metric i
    i, j = np.triu_indices(len(order), 1)
    defined = n >= 3
    return pd.DataFrame(
        {
            "run": run,
            "x_metric": np.asarray(order)[i],
            "y_metric": np.asarray(order)[j],
            "layer": layer,
            "pearson_r": r[i, j] if defined else np.nan,
            "r_squared": r[i, j] ** 2 if defined else np.nan,
            "slope": slope[i, j],
            "intercept": mean[j] - slope[i, j] * mean[i],
            "n_steps": n,
        },
        columns=CORRELATION_COLUMNS,
    )


def _finite_columns(wide: pd.DataFrame, notes: list[str], prefix: str) -> pd.DataFrame:
    bad = [c for c in wide.columns if not np.isfinite(wide[c].to_numpy(dtype=float)).all()]
    const = [c for c in wide.columns if c not in bad and is_constant(wide[c].to_numpy(dtype=float))]
    if bad or const:
        notes.append(
            f"{prefix}: {len(bad) + len(const)} metric(s) left out (not finite at every step: {bad[:5]}; "
            f"constant: {const[:5]})"
        )
    return wide.drop(columns=bad + const)


def clustered_order(wide: pd.DataFrame) -> list[str]:
    """The columns of a step × metric matrix ordered so that metrics moving together sit together:
    average-linkage hierarchical clustering on the distance 1 − |r| (its leaf order)."""
    cols = list(wide.columns)
    if len(cols) < 3:
        return cols
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    r = np.nan_to_num(np.corrcoef(wide.to_numpy(dtype=float).T), nan=0.0)
    dist = np.clip(1.0 - np.abs(r), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    order = leaves_list(linkage(squareform((dist + dist.T) / 2, checks=False), method="average"))
    return [cols[k] for k in order]


def correlation_matrix(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every pair of metrics of ONE run, on their mean-over-layers trajectories: the analysis when
    no pairs are configured, bounded by the number of metrics (not layers × pairs).

    Each metric's trajectory is its mean over the layers finite at every step (as in the PCA);
    metrics not finite at every step, or constant, are left out with a note. Rows (columns
    :data:`CORRELATION_COLUMNS`, ``layer`` = :data:`MEAN_TRAJECTORY_LAYER`) come for every pair
    ``x < y`` in the clustered order of :func:`clustered_order`, which is also the order in which
    each metric first appears in the table."""
    from .pca import _layer_mean_matrix

    run = single_run(table, "correlation_matrix")
    notes: list[str] = []
    empty = pd.DataFrame(columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"})
    if table.empty:
        return empty, ["correlation_matrix: the table is empty; nothing to analyse"]
    df = clean(table, notes, f"run {run!r}")
    steps = np.sort(df["step"].unique())
    prefix = f"run {run!r}, correlation matrix"
    wide = _finite_columns(_layer_mean_matrix(df, steps, notes, prefix), notes, prefix)
    if wide.shape[1] < 2 or wide.shape[0] < 3:
        notes.append(f"{prefix}: needs 2 usable metrics and 3 steps, has {wide.shape[1]} and {wide.shape[0]}")
        return empty, notes
    corr = _pairs_of(wide, run, MEAN_TRAJECTORY_LAYER, clustered_order(wide))
    corr["n_steps"] = corr["n_steps"].astype("Int64")
    return corr, notes


def layer_correlations(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every pair of metrics of ONE run on every layer they share (the full per-layer table, a
    file beside the figure's summary): per layer, the metrics finite at every step of the run,
    correlated over the steps. Layers in depth order, metric pairs in name order."""
    run = single_run(table, "layer_correlations")
    notes: list[str] = []
    if table.empty:
        return pd.DataFrame(columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"}), notes
    df = clean(table, notes, f"run {run!r}")
    steps = np.sort(df["step"].unique())
    frames = []
    for layer, sub in sorted(df.groupby("layer"), key=lambda kv: layer_key(kv[0])):
        wide = sub.pivot(index="step", columns="metric", values="value").reindex(steps)
        finite = [c for c in wide.columns if np.isfinite(wide[c].to_numpy(dtype=float)).all()]
        if len(finite) >= 2:
            frames.append(_pairs_of(wide, run, str(layer), sorted(finite)))
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=CORRELATION_COLUMNS)
    out["n_steps"] = out["n_steps"].astype("Int64")
    return out, notes
