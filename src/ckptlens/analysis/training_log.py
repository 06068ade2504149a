"""The training log beside the metrics: what a run logged (its loss, evaluation metrics, error
rates) at the checkpoints' steps, correlated with every metric over training.

A Trainer logs every ``logging_steps`` and saves every ``save_steps``: the two step grids differ,
so a logged quantity is read at a checkpoint's step by linear interpolation between the two logged
steps around it, and left undefined outside the logged range (no extrapolation: the loss at step 0
is not the loss at the first logged step).

Example::

    summary, per_layer, notes = log_correlations(one_run, pd.read_csv("train_log.csv"))
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..store.layers import layer_key
from ._common import clean, single_run
from .correlation import CORRELATION_COLUMNS, MEAN_TRAJECTORY_LAYER, pair_row

#: The training loss as it is named beside the metrics (the log's ``loss`` column).
TRAIN_LOSS = "train_loss"
#: Columns of a training log that are bookkeeping or wall-clock time, not a quantity to correlate.
NOT_LOGGED_QUANTITIES = {"step", "run", "epoch", "learning_rate", "lr", "total_flos", "grad_norm", "seconds", "time"}


def logged_quantities(log: pd.DataFrame) -> list[str]:
    """The log's numeric columns worth correlating: ``loss`` and everything but bookkeeping
    (:data:`NOT_LOGGED_QUANTITIES`, run-time and throughput columns)."""
    out = []
    for col in log.columns:
        name = str(col)
        if name in NOT_LOGGED_QUANTITIES or name.endswith(("_runtime", "_per_second", "_seconds")):
            continue
        values = pd.to_numeric(log[col], errors="coerce").to_numpy(dtype=float)
        if np.isfinite(values).sum() >= 2:
            out.append(name)
    return out


def metric_name(column: str) -> str:
    """How a logged column is named beside the metrics: ``loss`` -> :data:`TRAIN_LOSS`."""
    return TRAIN_LOSS if column == "loss" else column


def logged_at_steps(log: pd.DataFrame, steps: np.ndarray) -> pd.DataFrame:
    """Step × logged-quantity matrix at ``steps``: linear interpolation between logged steps,
    NaN outside each quantity's logged range. Columns named by :func:`metric_name`."""
    steps = np.asarray(steps, dtype=float)
    log_steps = pd.to_numeric(log["step"], errors="coerce").to_numpy(dtype=float)
    columns = {}
    for col in logged_quantities(log):
        values = pd.to_numeric(log[col], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values) & np.isfinite(log_steps)
        x, y = log_steps[ok], values[ok]
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        # several rows at one step (a Trainer logs train and eval rows separately): their mean
        ux, inverse = np.unique(x, return_inverse=True)
        uy = np.bincount(inverse, weights=y) / np.bincount(inverse)
        inside = (steps >= ux[0]) & (steps <= ux[-1])
        columns[metric_name(col)] = np.where(inside, np.interp(steps, ux, uy), np.nan)
    return pd.DataFrame(columns, index=steps.astype(np.int64), dtype=float)


def log_correlations(table: pd.DataFrame, log: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Every metric of ONE run against every logged quantity, over the checkpoints' steps where
    both are defined.

    Returns ``(summary, per_layer, notes)`` with :data:`CORRELATION_COLUMNS`: the summary on each
    metric's mean over layers (``layer`` = :data:`MEAN_TRAJECTORY_LAYER`; the layers finite at
    every step where the metric has any value, so a ``*_to_previous`` metric's undefined first
    step does not remove it), and the same per layer. ``x_metric`` is the metric, ``y_metric``
    the logged quantity (:func:`metric_name`)."""
    run = single_run(table, "log_correlations")
    empty = pd.DataFrame(columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"})
    if log is None or log.empty or "step" not in log.columns or table.empty:
        return empty, empty.copy(), []
    notes: list[str] = []
    prefix = f"run {run!r}, training log"
    df = clean(table, notes, f"run {run!r}")
    steps = np.sort(df["step"].unique())
    logged = logged_at_steps(log, steps)
    if logged.empty:
        return empty, empty.copy(), [f"{prefix}: no logged quantity with 2 finite values; nothing to correlate"]
    for quantity in logged.columns:
        outside = int((~np.isfinite(logged[quantity].to_numpy())).sum())
        if outside:
            notes.append(
                f"{prefix}: {quantity!r} is not logged at or around {outside} of {len(steps)} checkpoint "
                "step(s) (outside the logged steps; not extrapolated): they are left out of its correlations"
            )
    summary, per_layer = [], []
    for metric, sub in df.groupby("metric", sort=True):
        wide = sub.pivot(index="step", columns="layer", values="value").reindex(steps)
        values = wide.to_numpy(dtype=float)
        defined = np.isfinite(values).any(axis=1)
        keep = np.isfinite(values[defined]).all(axis=0)
        mean = values[:, keep].mean(axis=1) if keep.any() else np.full(len(steps), np.nan)
        for quantity in logged.columns:
            y = logged[quantity].to_numpy()
            summary.append(pair_row(run, metric, quantity, MEAN_TRAJECTORY_LAYER, mean, y)[0])
            for j, layer in sorted(enumerate(wide.columns), key=lambda jl: layer_key(jl[1])):
                per_layer.append(pair_row(run, metric, quantity, str(layer), values[:, j], y)[0])
    summary_df = pd.DataFrame(summary, columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"})
    layers_df = pd.DataFrame(per_layer, columns=CORRELATION_COLUMNS).astype({"n_steps": "Int64"})
    undefined = summary_df.loc[summary_df["pearson_r"].isna(), "x_metric"].unique().tolist()
    if undefined:
        notes.append(
            f"{prefix}: no correlation with the log for {len(undefined)} metric(s) (fewer than 3 shared "
            f"steps, or a constant series): {undefined[:5]}"
        )
    return summary_df, layers_df, notes


__all__ = ["TRAIN_LOSS", "log_correlations", "logged_at_steps", "logged_quantities", "metric_name"]
