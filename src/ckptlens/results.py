"""The tidy metrics table and loaders for a results folder (for notebooks as much as the workflow)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import TIDY_COLUMNS, atomic_path


def collect_family_tables(paths) -> pd.DataFrame:
    """Concatenate per-(checkpoint, family) CSVs into one tidy table, sorted. A failure record
    among them (a failed checkpoint, see :mod:`ckptlens.faults`) is an error naming the steps."""
    return collect_run_tables(paths, "fail")[0]


def collect_run_tables(paths, on_bad_checkpoint: str = "fail") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The aggregation job: ``(tidy table, missing steps)`` from a run's per-(checkpoint, family)
    CSVs. Failed checkpoints' table records (:mod:`ckptlens.faults`) are never read as data: under
    ``fail`` they are an error listing every failed step with its file and reason; under ``skip``
    their steps are left out of the table and returned as ``missing`` (columns ``step, file,
    reason``, one row per step). Every step failing is an error either way."""
    from .faults import MISSING_COLUMNS, MissingStepsError, check_policy, describe_missing, table_record

    check_policy(on_bad_checkpoint)
    frames, missing = [], {}
    for p in paths:
        rec = table_record(p)
        if rec is not None:
            missing.setdefault(int(rec["step"]), rec)
            continue
        frames.append(pd.read_csv(p, dtype={"run": str, "layer": str, "metric": str}))
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
    frames = [f for f in frames if len(f)]
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(TIDY_COLUMNS, [str, int, str, str, float])})
        return empty, missing_df
    table = pd.concat(frames, ignore_index=True)[TIDY_COLUMNS]
    table["step"] = table["step"].astype(int)
    table["value"] = table["value"].astype(float)
    return table.sort_values(["metric", "layer", "step"], kind="stable").reset_index(drop=True), missing_df


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


def load_missing_steps(results_dir="results", run: str = "demo") -> pd.DataFrame:
    """The steps of a run whose checkpoint failed (``on_bad_checkpoint: skip``): step, file, reason."""
    return pd.read_csv(Path(results_dir) / run / "missing_steps.csv")


def load_training_log(results_dir="results", run: str = "demo") -> pd.DataFrame:
    return pd.read_csv(Path(results_dir) / run / "train_log.csv")


def load_analysis(results_dir="results", run: str = "demo") -> dict[str, pd.DataFrame]:
    """The cross-metric analysis of a run: ``pca``, ``pca_loadings``, ``correlation`` and, where
    it was computed, ``dynamics`` (convergence steps and change points)."""
    d = Path(results_dir) / run / "analysis"
    names = ["pca", "pca_loadings", "correlation"] + (["dynamics"] if (d / "dynamics.csv").exists() else [])
    return {name: pd.read_csv(d / f"{name}.csv") for name in names}


def load_dynamics(results_dir="results", run: str | None = None) -> pd.DataFrame:
    """Convergence steps and change points (``ckptlens.dynamics.DYNAMICS_COLUMNS``) of one run or
    of every run under ``results_dir``."""
    root = Path(results_dir)
    paths = [root / run / "analysis/dynamics.csv"] if run else sorted(root.glob("*/analysis/dynamics.csv"))
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no analysis/dynamics.csv under {root}{'/' + run if run else ''}")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def load_task_vectors(results_dir="results", name: str | None = None) -> pd.DataFrame:
    """Task-vector PCA per layer (``results/task_vectors/<name>/task_vectors.csv``: run = the
    task-vector set's name, layer, metric ``task_vector_pca_evr.pc{i}`` / ``..._variance...``,
    value) of one set, or of every set under ``results_dir``."""
    root = Path(results_dir) / "task_vectors"
    paths = [root / name / "task_vectors.csv"] if name else sorted(root.glob("*/task_vectors.csv"))
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no task_vectors.csv under {root}{'/' + name if name else ''}")
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
