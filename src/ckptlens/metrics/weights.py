"""Weight-matrix metrics (family ``weight_spectrum``). Every spectral metric of a matrix reuses one
SVD (cached on the context). They run on any 2-D weight, including the attention circuits
``<attn>.head{h}.qk`` / ``.ov`` and the token embedding ``embed`` that the architecture adapter
adds to the weights extraction (see ``circuits.py``).

Registered metrics (no reference):
    frobenius_norm                ‖W‖_F
    spectral_norm                 ‖W‖₂ = σ₁
    stable_rank                   ‖W‖²_F / ‖W‖²₂ (0 for the zero matrix)
    effective_rank                exp(entropy of σ/Σσ) (Roy & Vetterli 2007; 0 for the zero matrix)
    proportional_effective_rank   effective_rank / r, r = "min" (min(m, n)) or an int (e.g. d_head)
    screenot_rank                 rank kept by ScreeNOT (Donoho, Gavish & Romanov 2023), k = "auto"
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from ._common import check_positive_int
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


@metric("frobenius_norm", label="Frobenius norm ‖W‖_F", family="weight_spectrum")
def frobenius_norm(ctx: WeightContext) -> float:
    """Frobenius norm ‖W‖_F."""
    return float(np.sqrt(np.sum(ctx.singular_values**2)))


@metric("spectral_norm", label="spectral norm ‖W‖₂", family="weight_spectrum")
def spectral_norm(ctx: WeightContext) -> float:
    """Spectral norm ‖W‖₂, the largest singular value."""
    s = ctx.singular_values
    return float(s[0]) if s.size else 0.0


@metric("stable_rank", label="stable rank ‖W‖²_F / ‖W‖²₂", family="weight_spectrum")
def stable_rank(ctx: WeightContext) -> float:
    """Stable rank ‖W‖²_F / ‖W‖²₂ (0 for the zero matrix)."""
    s = ctx.singular_values
    if s.size == 0 or s[0] == 0:
        return 0.0
    return float(np.sum((s / s[0]) ** 2))


@metric("effective_rank", label="effective rank", family="weight_spectrum")
def effective_rank(ctx: WeightContext) -> float:
    """Effective rank exp(H(p)), p_i = σ_i / Σσ_j (Roy & Vetterli, 2007)."""
    s = ctx.singular_values
    total = s.sum()
    if total == 0:
        return 0.0  # the zero matrix has rank 0, not NaN
    p = s[s > 0] / total
    return float(np.exp(-np.sum(p * np.log(p))))


def _check_r(params):
    check_positive_int("proportional_effective_rank", "r", params["r"], allow=("min",))


@metric(
    "proportional_effective_rank",
    label="effective rank / dimension",
    family="weight_spectrum",
    validate=_check_r,
    r="min",
)
def proportional_effective_rank(ctx: WeightContext, r="min") -> float:
    """Proportional effective rank ER / r, r = min(m, n) or a configured dimension."""
    return effective_rank(ctx) / _rank_denominator(ctx, r)


# ---------------------------------------------------------------- ScreeNOT


def screenot_k(p: int, k="auto") -> int:
    """The ``k`` ScreeNOT uses for ``p = min(m, n)`` singular values.

    ``k`` is an upper bound on the number of signal components; the top ``k`` singular values are
    replaced by an extrapolation of the noise bulk ("imputation"), which needs ``2k + 1 < p``.
    ``"auto"`` = ⌊p / 4⌋ (weights are rarely of lower rank than a quarter of their size, and the
    bulk is then estimated from ≥ 3/4 of the spectrum); an int larger than the imputation allows
    is capped at ⌊(p − 2) / 2⌋ (so small matrices never fail)."""
    cap = max((p - 2) // 2, 0)
    k = p // 4 if k == "auto" else int(k)
    return max(0, min(k, cap))


def _screenot_F(y: float, fz2: np.ndarray, gamma: float) -> float:
    # Ψ_γ(y) = y D'(y) / D(y) of the empirical noise measure (same arithmetic as the screenot package).
    y2 = y**2
    phi = np.mean(y / (y2 - fz2))
    phid = np.mean(-(y2 + fz2) / (y2 - fz2) ** 2)
    d = phi * (gamma * phi + (1 - gamma) / y)
    dd = phid * (gamma * phi + (1 - gamma) / y) + phi * (gamma * phid - (1 - gamma) / y2)
    return y * dd / d


def screenot_threshold(s: np.ndarray, shape: tuple[int, int], k="auto") -> float:
    """ScreeNOT's optimal hard threshold for singular values ``s`` of an m×n matrix.

    A numpy port of ``screenot.adaptiveHardThresholding(Y, k, strategy="i")`` that starts from
    singular values already computed (no second SVD). Difference: the spectrum is first divided by
    the power of two nearest its top value and the threshold scaled back, so the package's absolute
    bisection tolerance (1e-5) becomes relative and the result does not depend on the scale of W
    (for unit-scale matrices the two coincide up to that tolerance)."""
    m, n = shape
    s = np.sort(np.asarray(s, dtype=np.float64))  # increasing, as the package's fZ
    p = s.size
    if p == 0 or s[-1] == 0:
        return 0.0
    scale = 2.0 ** math.frexp(float(s[-1]))[1]
    fz = s / scale
    k = screenot_k(p, k)
    if k > 0:
        diff = fz[-k - 1] - fz[-2 * k - 1]
        l = np.arange(1, k + 1)
        a = (1 - ((l - 1) / k) ** (2 / 3)) / (2 ** (2 / 3) - 1)
        fz[p - l] = fz[-k - 1] + a * diff
    gamma = min(m / n, n / m)
    fz2 = fz**2
    low = float(np.max(fz))
    high = low + 2.0
    while _screenot_F(high, fz2, gamma) < -4:
        low, high = high, 2 * high
    eps = 10e-6
    mid = high
    while high - low > eps:
        mid = (high + low) / 2
        if _screenot_F(mid, fz2, gamma) < -4:
            low = mid
        else:
            high = mid
    return mid * scale


def screenot_rank_of(s: np.ndarray, shape: tuple[int, int], k="auto") -> int:
    """Number of singular values above ScreeNOT's threshold (the package's third return value)."""
    s = np.asarray(s, dtype=np.float64)
    return int(np.sum(s > screenot_threshold(s, shape, k)))


def _check_k(params):
    check_positive_int("screenot_rank", "k", params["k"], allow=("auto",))


@metric("screenot_rank", label="ScreeNOT rank", family="weight_spectrum", validate=_check_k, k="auto")
def screenot_rank(ctx: WeightContext, k="auto") -> float:
    """Rank estimated by ScreeNOT adaptive hard thresholding (k: upper bound on the signal rank)."""
    return float(screenot_rank_of(ctx.singular_values, ctx.w.shape, k))
