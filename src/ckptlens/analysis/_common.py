"""What the analyses of a tidy metrics table share: checking and cleaning the table, and telling
usable columns (finite, not constant) from the others, with a note for each one left out."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..store.tidy import TIDY_COLUMNS, check_tidy

#: A series whose standard deviation is at most this fraction of its largest absolute value is
#: treated as constant: float round-off alone must not turn a flat metric into a "direction".
CONSTANT_RTOL = 1e-12


def single_run(table: pd.DataFrame, what: str) -> str:
    """The run name of a one-run table; a clear error for several runs (never a silent mix)."""
    check_tidy(table)
    runs = sorted(pd.unique(table["run"].astype(str)))
    if len(runs) > 1:
        raise ValueError(
            f"{what} works on one run at a time, got {len(runs)} runs {runs[:5]}; "
            "filter first, e.g. table[table.run == name]"
        )
    return runs[0] if runs else ""


def clean(table: pd.DataFrame, notes: list[str], prefix: str) -> pd.DataFrame:
    """Typed copy of the table with duplicate (step, layer, metric) rows averaged (and noted)."""
    df = table.loc[:, TIDY_COLUMNS].copy()
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


def is_constant(values: np.ndarray) -> bool:
    """True for a finite series with no variation beyond round-off."""
    scale = float(np.max(np.abs(values))) if values.size else 0.0
    return bool(np.std(values) <= CONSTANT_RTOL * scale)


def usable_columns(matrix: pd.DataFrame, notes: list[str], prefix: str) -> pd.DataFrame:
    """Drop non-finite and constant columns, each with a note naming it and why."""
    keep = []
    for col in matrix.columns:
        values = matrix[col].to_numpy(dtype=float)
        if not np.all(np.isfinite(values)):
            n_bad = int(np.sum(~np.isfinite(values)))
            notes.append(
                f"{prefix}: column {col!r} dropped: contains NaN/Inf or is missing at {n_bad} of {values.size} step(s)"
            )
        elif is_constant(values):
            notes.append(f"{prefix}: column {col!r} dropped: constant over steps (std 0)")
        else:
            keep.append(col)
    return matrix.loc[:, keep]


def mean_over_layers(wide: pd.DataFrame) -> pd.Series:
    """Per step (row), the mean over the layers (columns) that are finite at every step; all NaN
    when no layer is."""
    finite = np.isfinite(wide.to_numpy(dtype=float)).all(axis=0)
    return wide.loc[:, finite].mean(axis=1) if finite.any() else pd.Series(np.nan, index=wide.index)
