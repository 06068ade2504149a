"""Loaders of a results folder for notebooks: tidy tables, training logs, analyses, dynamics,
task vectors. Where each file lies: :mod:`ckptlens.store.layout` (runs under ``results/runs/<run>/``)."""

from __future__ import annotations

import glob
from pathlib import Path

import pandas as pd

from .store import layout

#: the columns of a task-vector table (``task_vectors.csv``)
TASK_VECTOR_COLUMNS = ["run", "step", "layer", "metric", "value"]


def run_dir(results_dir, run: str) -> Path:
    """The folder of one run's results."""
    return Path(layout.run_dir(run, results_dir))


def _paths(results_dir, path_of, name: str | None) -> list[Path]:
    """``path_of(name, root)`` of one run (task-vector set) or, for ``name`` None, of every one
    that has it; an error naming what is missing."""
    if name:
        paths = [Path(path_of(name, results_dir))]
    else:
        paths = sorted(Path(p) for p in glob.glob(path_of("*", glob.escape(str(results_dir)))))
    if not paths or not all(p.exists() for p in paths):
        raise FileNotFoundError(f"no {path_of(name or '*', results_dir)}")
    return paths


def load_metrics(results_dir="results", run: str | None = None) -> pd.DataFrame:
    """The tidy metrics table of one run, or of every run under ``results_dir``."""
    paths = _paths(results_dir, layout.metrics_table, run)
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def load_missing_steps(results_dir="results", run: str = "demo") -> pd.DataFrame:
    """The steps of a run whose checkpoint failed (``on_bad_checkpoint: skip``): step, file, reason."""
    return pd.read_csv(layout.missing_steps(run, results_dir))


def load_training_log(results_dir="results", run: str = "demo") -> pd.DataFrame:
    """A run's training log (``train_log.csv``): a trained run's ``step, loss, id_error, ood_error,
    seconds``, a Hugging Face Trainer run's ``step, loss, learning_rate, eval_*, ...`` (from its
    ``trainer_state.json``). A run without one (checkpoints alone) is an error that says so."""
    path = Path(layout.train_log(run, results_dir))
    if not path.exists():
        raise FileNotFoundError(
            f"no {path}: run {run!r} has no training log (one is written for a run trained by ckptlens and "
            "for a Hugging Face Trainer run, from the trainer_state.json of its last checkpoint)"
        )
    return pd.read_csv(path)


def load_analysis(results_dir="results", run: str = "demo") -> dict[str, pd.DataFrame]:
    """The cross-metric analysis of a run: ``pca``, ``pca_loadings``, ``correlation`` and, where
    it was computed, ``dynamics`` (convergence steps and change points)."""
    names = ["pca", "pca_loadings", "correlation"]
    if Path(layout.analysis_table(run, "dynamics", results_dir)).exists():
        names.append("dynamics")
    return {name: pd.read_csv(layout.analysis_table(run, name, results_dir)) for name in names}


def _dynamics(run, root):
    return layout.analysis_table(run, "dynamics", root)


def load_dynamics(results_dir="results", run: str | None = None) -> pd.DataFrame:
    """Convergence steps and change points (``ckptlens.analysis.dynamics.DYNAMICS_COLUMNS``) of one
    run or of every run under ``results_dir``."""
    paths = _paths(results_dir, _dynamics, run)
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)


def load_task_vectors(results_dir="results", name: str | None = None) -> pd.DataFrame:
    """Task-vector PCA per layer (``results/task_vectors/<name>/task_vectors.csv``: run = the
    task-vector set's name, layer, metric ``task_vector_pca_evr.pc{i}`` / ``..._variance...``,
    value) of one set, or of every set under ``results_dir`` (an empty frame with these columns
    where the config has none: the demo's)."""
    if name is None and not glob.glob(layout.task_vector_table("*", glob.escape(str(results_dir)))):
        return pd.DataFrame(columns=TASK_VECTOR_COLUMNS)  # a results folder without task-vector sets
    paths = _paths(results_dir, layout.task_vector_table, name)
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
