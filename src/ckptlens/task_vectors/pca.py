"""Task vectors across runs that share a base checkpoint (e.g. fine-tuning seeds).

Not a per-checkpoint family: :func:`task_vector_pca` is called once with the base weights and the
fine-tuned weights of every run (mappings layer name -> array, read lazily one layer at a time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..store.joblog import warn


def task_vector_pca(
    base: Mapping[str, np.ndarray],
    finetuned: Sequence[Mapping[str, np.ndarray]],
    n_components: int = 3,
    *,
    center: bool = True,
    run: str = "",
    step: int = -1,
) -> list[dict]:
    """PCA of the task vectors τᵢ = θᵢ − θ_base of each layer across the fine-tuned runs.

    Per layer of ``base`` (every fine-tuned mapping must have it, with the same shape) the task
    vectors are flattened into an [n_runs, n_params] matrix and decomposed: ``center=True`` is
    sklearn's ``PCA`` (centred across runs, variance with ddof = 1; needs ≥ 2 runs);
    ``center=False`` decomposes the uncentred task vectors (second moment, divided by n_runs), which
    also credits the direction all runs share. Rows ``{run, step, layer, metric, value}`` with
    metrics ``task_vector_pca_evr.pc{i}`` (explained-variance ratio of component i, i ≤
    n_components), ``task_vector_pca_evr.sum`` (their sum), ``task_vector_pca_variance.pc{i}`` and
    ``task_vector_pca_variance.sum`` (explained variances). Components beyond the rank explain 0.
    A layer whose task vectors are all zero gives zeros, with a warning; NaN/Inf values give NaN,
    with a warning. The decomposition uses the n_runs × n_runs Gram matrix, so large layers cost
    O(n_runs² · n_params)."""
    finetuned = list(finetuned)
    n = len(finetuned)
    if n == 0 or (center and n < 2):
        raise ValueError(f"task_vector_pca needs at least {2 if center else 1} fine-tuned runs, got {n}")
    n_components = int(n_components)
    if n_components < 1:
        raise ValueError(f"n_components must be a positive integer, not {n_components}")
    for i, ft in enumerate(finetuned):
        missing = [layer for layer in base.keys() if layer not in ft]
        if missing:
            raise ValueError(f"fine-tuned run {i} has no layer {missing[0]!r}")
    rows: list[dict] = []

    def emit(layer, variance, ratio):
        for metric_name, values in (("task_vector_pca_evr", ratio), ("task_vector_pca_variance", variance)):
            for i, v in enumerate(values):
                rows.append(_row(run, step, layer, f"{metric_name}.pc{i + 1}", v))
            rows.append(_row(run, step, layer, f"{metric_name}.sum", float(np.sum(values))))

    for layer in base.keys():
        b = np.asarray(base[layer], dtype=np.float64)
        taus = np.empty((n, b.size))
        for i, ft in enumerate(finetuned):
            t = np.asarray(ft[layer], dtype=np.float64)
            if t.shape != b.shape:
                raise ValueError(f"layer {layer!r}: fine-tuned run {i} has shape {t.shape}, base {b.shape}")
            taus[i] = (t - b).ravel()
        where = f"run {run!r}, step {step}, layer {layer!r}"
        if not np.isfinite(taus).all():
            warn(f"{where}: task vectors have NaN/Inf values; task_vector_pca is NaN")
            emit(layer, np.full(n_components, math.nan), np.full(n_components, math.nan))
            continue
        x = taus - taus.mean(axis=0, keepdims=True) if center else taus
        gram = x @ x.T
        ev = np.clip(np.linalg.eigvalsh(gram)[::-1], 0.0, None)
        total = ev.sum()
        if total == 0:
            warn(f"{where}: all task vectors are zero (no variance across runs); task_vector_pca is 0")
            emit(layer, np.zeros(n_components), np.zeros(n_components))
            continue
        top = np.zeros(n_components)
        m = min(n_components, ev.size)
        top[:m] = ev[:m]
        emit(layer, top / ((n - 1) if center else n), top / total)
    return rows


def _row(run, step, layer, metric, value) -> dict:
    return {"run": run, "step": int(step), "layer": layer, "metric": metric, "value": float(value)}
