"""The tidy metrics table and loaders for a results folder (for notebooks as much as the workflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import TIDY_COLUMNS, atomic_path


def collect_family_tables(paths) -> pd.DataFrame:
    """Concatenate per-(checkpoint, family) CSVs into one tidy table, sorted."""
    frames = [pd.read_csv(p, dtype={"run": str, "layer": str, "metric": str}) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(TIDY_COLUMNS, [str, int, str, str, float])})
    table = pd.concat(frames, ignore_index=True)[TIDY_COLUMNS]
    table["step"] = table["step"].astype(int)
    table["value"] = table["value"].astype(float)
    return table.sort_values(["metric", "layer", "step"], kind="stable").reset_index(drop=True)


def write_table(table: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        table.to_parquet(tmp, index=False)


def load_metrics(results_dir="results", run: str | None = None) -> pd.DataFrame:
    """The tidy metrics table of one run, or of every run under ``results_dir``."""
    root = Path(results_dir)
    paths = [root / run / "metrics.parquet"] if run else sorted(root.glob("*/metrics.parquet"))
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no metrics.parquet under {root}{'/' + run if run else ''}")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def load_training_log(results_dir="results", run: str = "demo") -> pd.DataFrame:
    return pd.read_csv(Path(results_dir) / run / "train_log.csv")


def load_analysis(results_dir="results", run: str = "demo") -> dict[str, pd.DataFrame]:
    d = Path(results_dir) / run / "analysis"
    return {name: pd.read_csv(d / f"{name}.csv") for name in ("pca", "pca_loadings", "correlation")}
