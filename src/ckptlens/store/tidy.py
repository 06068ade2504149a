"""The tidy metrics table: one row per (run, step, layer, metric), columns :data:`TIDY_COLUMNS`.

Metric jobs write small tidy CSVs (:func:`write_rows_csv`), or a *table record* for a step whose
checkpoint failed (:func:`write_table_record`); aggregation concatenates them into
``metrics.parquet`` (:func:`write_table`); analysis, dynamics and figures read it and check it with
:func:`check_tidy`. This module is the one place that knows the columns.
"""

from __future__ import annotations

import csv
import math

from .atomic import atomic_path
from .records import record_from_table_line, table_record_line

TIDY_COLUMNS = ["run", "step", "layer", "metric", "value"]
#: pandas dtypes of the columns
TIDY_DTYPES = {"run": str, "step": "int64", "layer": str, "metric": str, "value": "float64"}


def write_rows_csv(rows, path, columns=TIDY_COLUMNS) -> None:
    """Tidy rows (dicts) as a CSV, atomically; NaN written as ``nan``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            v = r.get("value")
            w.writerow({**r, "value": "nan" if isinstance(v, float) and math.isnan(v) else v})


def write_table_record(path, record: dict, columns=TIDY_COLUMNS) -> None:
    """A metric job's output for a failed step: the record line, then the tidy header, no rows."""
    with atomic_path(path) as tmp:
        tmp.write_text(table_record_line(record) + ",".join(columns) + "\n")


def table_record(path) -> dict | None:
    """The record of a table record file, None for a real table."""
    with open(path) as fh:
        return record_from_table_line(fh.readline())


def empty_table():
    """A tidy table with no rows and the right dtypes."""
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in TIDY_DTYPES.items()})


def read_rows_csv(path):
    """One metric job's CSV as a typed tidy frame."""
    import pandas as pd

    return pd.read_csv(path, dtype={"run": str, "layer": str, "metric": str})


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
