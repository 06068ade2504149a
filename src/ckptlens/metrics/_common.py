"""Helpers shared by several metric modules: quantile summaries, principal-component suffixes and
parameter checks (layer order and pair labels: :mod:`ckptlens.store.layers`). numpy only."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .registry import MetricConfigError


def quantile_key(q: float) -> str:
    """Suffix of a quantile in a metric name: 0.05 -> "p5", 0.5 -> "p50", 0.025 -> "p2.5"."""
    return f"p{100 * q:g}"


def pc_suffixes(params) -> list[str]:
    """``outputs=`` of a metric giving one value per principal component: pc1 … pc{n_components}."""
    return [f"pc{i + 1}" for i in range(int(params["n_components"]))]


def summarize(values: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    """{"mean": ..., "p5": ..., ...} of the finite entries of ``values`` (NaN if none)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, **{quantile_key(q): math.nan for q in quantiles}}
    qs = np.quantile(v, list(quantiles)) if len(quantiles) else []
    return {"mean": float(v.mean()), **{quantile_key(q): float(x) for q, x in zip(quantiles, qs)}}


# ---- parameter checks (raise MetricConfigError naming the config key) ----


def _fail(name: str, key: str, msg: str):
    raise MetricConfigError(f"config key 'metrics.{name}.{key}': {msg}")


def check_positive_int(name: str, key: str, value, allow=()) -> None:
    if value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = f" or one of {list(allow)}" if allow else ""
        _fail(name, key, f"must be a positive integer{extra}, not {value!r}")


def check_int_list(name: str, key: str, value) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        _fail(name, key, f"must be a non-empty list of positive integers, not {value!r}")
    for v in value:
        check_positive_int(name, key, v)


def check_quantiles(name: str, value) -> None:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        _fail(name, "quantiles", f"must be a list of numbers in [0, 1], not {value!r}")
    for q in value:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 1:
            _fail(name, "quantiles", f"must be a list of numbers in [0, 1], not {value!r}")


def check_bool(name: str, key: str, value) -> None:
    if not isinstance(value, bool):
        _fail(name, key, f"must be true or false, not {value!r}")


def check_choice(name: str, key: str, value, choices) -> None:
    if value not in choices:
        _fail(name, key, f"must be one of {list(choices)}, not {value!r}")


def hsic1_of(n: int, cross: float, rows_dot: float, rows_a: float, rows_b: float) -> float:
    """n(n−3)·HSIC₁ of two linear kernels (Song et al. 2012, Kornblith's feature form) from ‖AᵀB‖²_F,
    the dot of the rows' squared norms and their sums (centred A, B): debiased CKA's one formula,
    from activations (:mod:`.activation_similarity`) or from the extraction's terms
    (:mod:`.similarity_to_final`)."""
    return float(cross - n / (n - 2) * rows_dot + rows_a * rows_b / ((n - 1) * (n - 2)))
