"""Aggregation: a run's metric CSVs (one per group of checkpoints and metric family) -> its tidy
table and missing steps.

Failed checkpoints' table records (:mod:`ckptlens.store.records`) are never read as data: under
``on_bad_checkpoint: fail`` they are an error listing every failed step with its file and reason;
under ``skip`` their steps are left out of the table and listed (columns ``step, file, reason``,
one row per step). Every step failing is an error either way.

A failed aggregation leaves no table, and nothing made from the table before: Snakemake removes a
failed job's outputs, and :func:`remove_products` the analyses, plots, report pages and figures
made from the previous table (:meth:`ckptlens.plan.Plan.table_products`), so that the results
folder never shows plots of a table that is gone. The next successful run makes them again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from ..store.records import MISSING_COLUMNS, check_policy, describe_missing
from ..store.tidy import TIDY_COLUMNS, empty_table, read_rows_csv


class MissingStepsError(ValueError):
    """Aggregation under ``on_bad_checkpoint: fail`` found failed steps (or every step failed)."""


def collect_run_tables(paths, on_bad_checkpoint: str = "fail") -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(tidy table sorted by metric, layer, step; missing steps)`` from a run's metric CSVs."""
    check_policy(on_bad_checkpoint)
    frames, missing = [], {}
    for p in paths:
        records, frame = read_rows_csv(p)
        for rec in records:
            missing.setdefault(int(rec["step"]), rec)
        if len(frame):
            frames.append(frame)
    missing_df = pd.DataFrame(
        [{"step": s, "file": missing[s]["file"], "reason": missing[s]["reason"]} for s in sorted(missing)],
        columns=MISSING_COLUMNS,
    ).astype({"step": int})
    if missing:
        listing = describe_missing(missing_df.to_dict("records"))
        if on_bad_checkpoint == "fail":
            raise MissingStepsError(
                f"{len(missing)} checkpoint(s) failed and on_bad_checkpoint is 'fail': {listing}. Fix or remove "
                "them, or set on_bad_checkpoint: skip to analyse the other steps and list these as gaps"
            )
        if not frames:
            raise MissingStepsError(f"every checkpoint failed, nothing to aggregate: {listing}")
    if not frames:
        return empty_table(), missing_df
    table = pd.concat(frames, ignore_index=True)[TIDY_COLUMNS]
    table["step"] = table["step"].astype(int)
    table["value"] = table["value"].astype(float)
    return table.sort_values(["metric", "layer", "step"], kind="stable").reset_index(drop=True), missing_df


def remove_products(paths) -> list[str]:
    """Remove these files and folders where they exist (what was made from a table that a failed
    aggregation leaves out); the ones removed, in order."""
    removed = []
    for p in map(Path, paths):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(str(p))
    return removed
