"""The tidy metrics table: one row per (run, step, layer, metric), columns :data:`TIDY_COLUMNS`.

Metric jobs write small tidy CSVs (:func:`write_rows_csv`), one per group of checkpoints, which
start with a *table record* line for each of its steps whose checkpoint failed
(:mod:`ckptlens.store.records`); aggregation reads them back (:func:`read_rows_csv`) and
concatenates them into ``metrics.parquet`` (:func:`write_table`); analysis, dynamics and figures
read it and check it with :func:`check_tidy`. This module is the one place that knows the columns.
"""

from __future__ import annotations

import csv
import math

from .atomic import atomic_path
from .records import record_from_table_line, table_record_line

TIDY_COLUMNS = ["run", "step", "layer", "metric", "value"]
#: pandas dtypes of the columns
TIDY_DTYPES = {"run": str, "step": "int64", "layer": str, "metric": str, "value": "float64"}


def write_rows_csv(rows, path, records=(), columns=TIDY_COLUMNS) -> None:
    """Tidy rows (dicts) as a CSV, atomically, after one record line per failed step in
    ``records``; NaN written as ``nan``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        for rec in records:
            fh.write(table_record_line(rec))
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            v = r.get("value")
            w.writerow({**r, "value": "nan" if isinstance(v, float) and math.isnan(v) else v})


def write_table_record(path, record: dict, columns=TIDY_COLUMNS) -> None:
    """A table whose only step failed: its record line, then the tidy header, no rows."""
    write_rows_csv([], path, [record], columns)


def table_records(path) -> list[dict]:
    """The records of the failed steps a metric table starts with (none for a table of good steps)."""
    out = []
    with open(path) as fh:
        for line in fh:
            rec = record_from_table_line(line)
            if rec is None:
                break
            out.append(rec)
    return out


def table_record(path) -> dict | None:
    """The first record of a metric table, None for a table of good steps only."""
    recs = table_records(path)
    return recs[0] if recs else None


def empty_table():
    """A tidy table with no rows and the right dtypes."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TIDY_DTYPES.items()})


def read_rows_csv(path):
    """``(records, rows)`` of one metric job's CSV: the records of its failed steps, and its rows
    as a typed tidy frame (never a record line read as data)."""
    import pandas as pd

    records = table_records(path)
    frame = pd.read_csv(path, skiprows=len(records), dtype={"run": str, "layer": str, "metric": str})
    return records, frame


def write_table(table, path) -> None:
    """The tidy table as Parquet, atomically."""
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def check_tidy(table, what: str = "metrics table") -> None:
    """A clear error when ``table`` lacks a tidy column."""
    missing = [c for c in TIDY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} lacks column(s) {missing}; expected {TIDY_COLUMNS} "
            "(for the Pythia CSV, rename 'model' to 'run' first)"
        )
