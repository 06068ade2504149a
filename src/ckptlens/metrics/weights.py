"""Weight-matrix metrics. Every spectral metric of a matrix reuses one SVD (cached on the context)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .registry import family, metric


@family("weight_spectrum", needs="weights")
class WeightContext:
    """One weight matrix (2-D; higher-rank tensors are flattened to [out, rest])."""

    def __init__(self, w: np.ndarray):
        w = np.asarray(w, dtype=np.float64)
        self.w = w.reshape(w.shape[0], -1) if w.ndim > 2 else np.atleast_2d(w)

    @cached_property
    def singular_values(self) -> np.ndarray:
        return np.linalg.svd(self.w, compute_uv=False)


def _rank_denominator(ctx: WeightContext, r) -> float:
    """``r`` of PER: "min" = min(m, n), or an explicit integer (e.g. the head dimension)."""
    if r in (None, "min"):
        return float(min(ctx.w.shape))
    return float(r)


@metric("frobenius_norm", family="weight_spectrum")
def frobenius_norm(ctx: WeightContext) -> float:
    """Frobenius norm ‖W‖_F."""
    return float(np.sqrt(np.sum(ctx.singular_values**2)))


@metric("effective_rank", family="weight_spectrum")
def effective_rank(ctx: WeightContext) -> float:
    """Effective rank exp(H(p)), p_i = σ_i / Σσ_j (Roy & Vetterli, 2007)."""
    s = ctx.singular_values
    total = s.sum()
    if total == 0:
        return 0.0  # the zero matrix has rank 0, not NaN
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


@metric("proportional_effective_rank", family="weight_spectrum", r="min")
def proportional_effective_rank(ctx: WeightContext, r="min") -> float:
    """Proportional effective rank ER / r, r = min(m, n) or a configured dimension."""
    return effective_rank(ctx) / _rank_denominator(ctx, r)
