"""Loaders of a results folder for notebooks: tidy tables, training logs, analyses, dynamics,
task vectors. Runs live under ``results/runs/<run>/``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

RUNS = "runs"  # results/<RUNS>/<run>/: one folder per run


def run_dir(results_dir, run: str) -> Path:
    """The folder of one run's results."""
    return Path(results_dir) / RUNS / run


def load_metrics(results_dir="results", run: str | None = None) -> pd.DataFrame:
    """The tidy metrics table of one run, or of every run under ``results_dir``."""
    root = Path(results_dir) / RUNS
    paths = [root / run / "metrics.parquet"] if run else sorted(root.glob("*/metrics.parquet"))
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no metrics.parquet under {root}{'/' + run if run else ''}")
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def load_missing_steps(results_dir="results", run: str = "demo") -> pd.DataFrame:
    """The steps of a run whose checkpoint failed (``on_bad_checkpoint: skip``): step, file, reason."""
    return pd.read_csv(run_dir(results_dir, run) / "missing_steps.csv")


def load_training_log(results_dir="results", run: str = "demo") -> pd.DataFrame:
    return pd.read_csv(run_dir(results_dir, run) / "train_log.csv")


def load_analysis(results_dir="results", run: str = "demo") -> dict[str, pd.DataFrame]:
    """The cross-metric analysis of a run: ``pca``, ``pca_loadings``, ``correlation`` and, where
    it was computed, ``dynamics`` (convergence steps and change points)."""
    d = run_dir(results_dir, run) / "analysis"
    names = ["pca", "pca_loadings", "correlation"] + (["dynamics"] if (d / "dynamics.csv").exists() else [])
    return {name: pd.read_csv(d / f"{name}.csv") for name in names}


def load_dynamics(results_dir="results", run: str | None = None) -> pd.DataFrame:
    """Convergence steps and change points (``ckptlens.analysis.dynamics.DYNAMICS_COLUMNS``) of one
    run or of every run under ``results_dir``."""
    root = Path(results_dir) / RUNS
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
