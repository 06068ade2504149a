"""Notes on the steps a run lacks (their checkpoint failed, or a table skips them)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd


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
