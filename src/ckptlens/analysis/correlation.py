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
            ok = np.isfinite(x) & np.isfinite(y)
            r, r2, slope, intercept, why = _fit_one_layer(x[ok], y[ok])
            notes.append(
                f"{prefix}: the two metrics share no layer name (e.g. {sorted(wx.columns)[:1]} vs "
                f"{sorted(wy.columns)[:1]}): correlated their mean-over-layers trajectories "
                f"(layer {MEAN_TRAJECTORY_LAYER!r})" + (f"; r and R² undefined ({why})" if why else "")
            )
            rows.append(
                {
                    "run": run,
                    "x_metric": x_metric,
                    "y_metric": y_metric,
                    "layer": MEAN_TRAJECTORY_LAYER,
                    "pearson_r": r,
                    "r_squared": r2,
                    "slope": slope,
                    "intercept": intercept,
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
                    "run": run,
                    "x_metric": x_metric,
                    "y_metric": y_metric,
                    "layer": layer,
                    "pearson_r": r,
                    "r_squared": r2,
                    "slope": slope,
                    "intercept": intercept,
                    "n_steps": int(ok.sum()),
                }
            )
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
