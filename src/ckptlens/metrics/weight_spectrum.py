"""Weight-matrix metrics (family ``weight_spectrum``). The context is lazy: each shared quantity
is computed on the first metric that reads it, and only then — a job whose enabled metrics need no
spectrum (``frobenius_norm`` = √Σw², ``gini``, ``hoyer``) runs no decomposition at all; every
spectral metric of a matrix reuses one spectrum, the power-law metrics (``alpha``, ``alpha_xmin``,
``alpha_ks_distance``, ``alpha_weighted``) one fit per estimator, ``mp_softrank``/``num_spikes``
one Marchenko–Pastur fit. The decompositions run on numpy, or through torch on the metric job's
GPU when it has one (:mod:`._linalg`: the same eigenvalues to 1e-12·λ_max). The metrics run on
any 2-D weight, including the attention circuits ``<attn>.head{h}.qk`` / ``.ov`` and the token
embedding ``embed`` that the architecture adapter adds to the weights extraction (see
``circuits.py``).

Cost on MiniLM-L6's 39 matrices (``bench/bench_spectra.py --breakdown``): the spectrum (the Gram
products and eigendecompositions) and ``gini``'s exact sort of every entry (22.7 M of them) are
the two large items; everything else together is small beside either.

The spectrum: every metric here needs singular values only, so instead of an SVD the context takes
the eigenvalues λ of the smaller Gram matrix (WᵀW or WWᵀ, min(m, n)², float64, formed by one
``syrk``) and σ = √λ: about 3× less work than the SVD WeightWatcher runs (no bidiagonalisation).
The eigensolver is backward stable, so λ is accurate to ~ε·λ_max in absolute terms: σ to full
relative precision wherever σ ≫ √ε·σ_max, and eigenvalues at the rounding level
(λ ≤ max(m, n)·ε·λ_max, i.e. σ ≲ 1e-6·σ_max: the null space of a rank-deficient matrix) are set
to exactly 0, negatives clipped, so the zero matrix keeps exact zeros. ``condition_number``, the
one metric that needs σ_min precisely, takes an exact SVD where the spectrum is too
ill-conditioned for the Gram route (σ_max/σ_min > 1e5).

Registered metrics (no reference):
    frobenius_norm                ‖W‖_F
    spectral_norm                 ‖W‖₂ = σ₁
    stable_rank                   ‖W‖²_F / ‖W‖²₂ (0 for the zero matrix)
    effective_rank                exp(entropy of σ/Σσ) (Roy & Vetterli 2007; 0 for the zero matrix)
    proportional_effective_rank   effective_rank / r, r = "min" (min(m, n)) or an int (e.g. d_head)
    screenot_rank                 rank kept by ScreeNOT (Donoho, Gavish & Romanov 2023), k = "auto"
  WeightWatcher's ESD metrics (Martin & Mahoney 2021; λ = σ², see :mod:`._esd` for the fits):
    alpha                         power-law exponent α of the ESD tail, estimator = "ww" (default:
                                  WeightWatcher 0.7.7's KS-optimal xmin search) or "hill" (xmin at
                                  the median eigenvalue, as AlphaPruning and TempBalance)
    alpha_xmin                    the xmin of that fit (an eigenvalue λ), estimator as above
    alpha_ks_distance             its Kolmogorov–Smirnov distance D (WW's one-sided form)
    alpha_weighted                α·log10 λ_max (WW "alpha_weighted", AlphaPruning "alphahat")
    log_spectral_norm             log10 λ_max = log10 ‖W‖₂² (WW's column; note: of the squared norm)
    mp_softrank                   λ₊/λ_max, λ₊ the bulk edge of WW's Marchenko–Pastur fit
    num_spikes                    #{λ > λ₊ + Tracy–Widom margin} of that fit
  pico-analyze's weight metrics:
    condition_number              σ_max/σ_min over the min(m, n) singular values (NaN: singular)
    nuclear_norm                  ‖W‖_* = Σσ
    gini                          Gini coefficient of the entries' magnitudes |w_ij|
    hoyer                         Hoyer sparsity (√N − ‖w‖₁/‖w‖₂)/(√N − 1) of the N entries

Which α is the default, and why: ``estimator="ww"``, WeightWatcher's fit, because it is the α the
literature's thresholds (2 ≲ α ≲ 6 for a well-trained layer) and the WeightWatcher tables refer to,
and the one ckptlens is checked against number for number; its O(M²) xmin search costs a few
milliseconds per matrix here, small beside the spectrum itself (O(N·M²)). ``"hill"`` is the
median-xmin estimator AlphaPruning and TempBalance schedule with: O(M), and more stable from one
checkpoint to the next (xmin does not jump), but a different number (a fixed half of the
spectrum, zeros included, versus WW's searched tail).

Degenerate inputs give NaN with a warning (:class:`~ckptlens.metrics.registry.Degenerate`): fewer
than 8 eigenvalues for the ESD fits (WeightWatcher's ``min_evals``), no eigenvalue above 1e-5 or a
flat tail for α, a null median eigenvalue for the Hill estimator, the zero matrix for every
logarithm, ratio and fit (its norms stay 0), a singular matrix for ``condition_number``.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from . import _esd, _linalg
from ._common import check_choice, check_positive_int
from .registry import Degenerate, family, metric

#: eigenvalues below this multiple of ε·λ_max·max(m, n) are rounding noise of the Gram route
_GRAM_ZERO = 1.0
#: σ_max/σ_min above which condition_number takes an exact SVD (Gram-route σ_min error ~ ε·κ²)
_GRAM_KAPPA = 1e5


def gram_eigenvalues(w: np.ndarray) -> np.ndarray:
    """λ = σ² of a float64 m×n matrix from the eigenvalues of its smaller Gram matrix, decreasing,
    min(m, n) of them; negatives and values at the rounding level set to 0 (module docstring).
    On numpy, or through torch on the job's GPU (:mod:`._linalg`)."""
    m, n = w.shape
    if w.size == 0:
        return np.zeros(0)
    lam = _linalg.gram_eigvalsh(w)[::-1]
    tol = _GRAM_ZERO * max(m, n) * np.finfo(np.float64).eps * max(float(lam[0]), 0.0)
    lam = np.where(lam > tol, lam, 0.0)
    return np.ascontiguousarray(lam)


@family("weight_spectrum", needs="weights")
class WeightContext:
    """One weight matrix (2-D; higher-rank tensors are flattened to [out, rest]) and what its
    metrics share, each computed on first use only: the float64 copy, the sum of squares, the
    spectrum (one eigendecomposition, only for a metric that needs singular values), the power-law
    and Marchenko–Pastur fits (one each, shared by the metrics reading them), the magnitudes."""

    def __init__(self, w: np.ndarray):
        raw = np.asarray(w)
        raw = raw.reshape(raw.shape[0], -1) if raw.ndim > 2 else np.atleast_2d(raw)
        self.raw = raw  # the stored dtype, for the entry statistics (gini, hoyer)
        self.shape = raw.shape
        self._fits: dict = {}

    @cached_property
    def w(self) -> np.ndarray:
        """The matrix in float64."""
        return np.asarray(self.raw, dtype=np.float64)

    @cached_property
    def sum_squares(self) -> float:
        """Σ w_ij² = ‖W‖²_F in float64, without a decomposition."""
        flat = self.w.ravel()
        return float(np.dot(flat, flat))

    @cached_property
    def eigenvalues(self) -> np.ndarray:
        """λ_i = σ_i², decreasing (the ESD WeightWatcher fits)."""
        return gram_eigenvalues(self.w)

    @cached_property
    def singular_values(self) -> np.ndarray:
        """σ_i, decreasing, min(m, n) of them."""
        return np.sqrt(self.eigenvalues)

    @cached_property
    def exact_singular_values(self) -> np.ndarray:
        """σ_i from an SVD (only for what the Gram route cannot resolve)."""
        return _linalg.svdvals(self.w)

    @cached_property
    def abs_entries(self) -> np.ndarray:
        """|w_ij| flattened, in the stored floating dtype (float32 stays float32: the sort is exact)."""
        raw = self.raw if self.raw.dtype.kind == "f" else self.w
        return np.abs(raw.ravel())

    def power_law(self, estimator: str) -> _esd.PowerLawFit:
        """The power-law fit of the ESD, cached per estimator (a Degenerate is cached too)."""
        key = ("pl", estimator)
        if key not in self._fits:
            fit = _esd.ww_power_law if estimator == "ww" else _esd.hill_power_law
            try:
                self._fits[key] = fit(self.eigenvalues[::-1])
            except Degenerate as exc:
                self._fits[key] = exc
        out = self._fits[key]
        if isinstance(out, Degenerate):
            raise out
        return out

    @cached_property
    def _mp(self):
        try:
            return _esd.mp_fit(self.eigenvalues[::-1], self.shape)
        except Degenerate as exc:
            return exc

    def mp(self) -> _esd.MPFit:
        out = self._mp
        if isinstance(out, Degenerate):
            raise out
        return out


def _rank_denominator(ctx: WeightContext, r) -> float:
    """``r`` of PER: "min" = min(m, n), or an explicit integer (e.g. the head dimension)."""
    if r in (None, "min"):
        return float(min(ctx.shape))
    return float(r)


@metric("frobenius_norm", label="Frobenius norm ‖W‖_F")
def frobenius_norm(ctx: WeightContext) -> float:
    """Frobenius norm ‖W‖_F = √(Σ w_ij²) (no decomposition)."""
    return math.sqrt(ctx.sum_squares)


@metric("spectral_norm", label="spectral norm ‖W‖₂")
def spectral_norm(ctx: WeightContext) -> float:
    """Spectral norm ‖W‖₂, the largest singular value."""
    s = ctx.singular_values
    return float(s[0]) if s.size else 0.0


@metric("stable_rank", label="stable rank ‖W‖²_F / ‖W‖²₂")
def stable_rank(ctx: WeightContext) -> float:
    """Stable rank ‖W‖²_F / ‖W‖²₂ (0 for the zero matrix)."""
    s = ctx.singular_values
    if s.size == 0 or s[0] == 0:
        return 0.0
    return float(np.sum((s / s[0]) ** 2))


@metric("effective_rank", label="effective rank")
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


@metric("proportional_effective_rank", label="effective rank / dimension", validate=_check_r)
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


@metric("screenot_rank", label="ScreeNOT rank", validate=_check_k)
def screenot_rank(ctx: WeightContext, k="auto") -> float:
    """Rank estimated by ScreeNOT adaptive hard thresholding (k: upper bound on the signal rank)."""
    return float(screenot_rank_of(ctx.singular_values, ctx.shape, k))


# ---------------------------------------------------------------- WeightWatcher's ESD metrics

ESTIMATORS = ("ww", "hill")


def _check_estimator(name):
    def check(params):
        check_choice(name, "estimator", params["estimator"], ESTIMATORS)

    return check


@metric("alpha", label="ESD power-law exponent α", validate=_check_estimator("alpha"))
def alpha(ctx: WeightContext, estimator="ww") -> float:
    """Power-law exponent α of the tail of the ESD, p(λ) ∝ λ^(−α) for λ ≥ xmin (α from the MLE
    1 + n/Σ ln(λ_j/xmin); xmin by WeightWatcher's KS search, or the median for "hill")."""
    return ctx.power_law(estimator).alpha


@metric("alpha_xmin", label="xmin of the ESD power-law fit (λ)", validate=_check_estimator("alpha_xmin"))
def alpha_xmin(ctx: WeightContext, estimator="ww") -> float:
    """The eigenvalue xmin where the fitted power-law tail of the ESD starts (WW "xmin")."""
    return ctx.power_law(estimator).xmin


@metric(
    "alpha_ks_distance", label="KS distance D of the ESD power-law fit", validate=_check_estimator("alpha_ks_distance")
)
def alpha_ks_distance(ctx: WeightContext, estimator="ww") -> float:
    """Fit quality D = max_j |1 − (λ_j/xmin)^(1−α) − j/n| over the tail (WW "D"; lower is better)."""
    return ctx.power_law(estimator).D


def _log_lambda_max(ctx: WeightContext) -> float:
    lam = ctx.eigenvalues
    if lam.size == 0 or lam[0] <= 0:
        raise Degenerate("the zero matrix has no log spectral norm")
    return math.log10(float(lam[0]))


@metric("alpha_weighted", label="weighted alpha α·log10 λ_max", validate=_check_estimator("alpha_weighted"))
def alpha_weighted(ctx: WeightContext, estimator="ww") -> float:
    """α·log10 λ_max, λ_max = σ_max² (WW "alpha_weighted", AlphaPruning/TempBalance "alphahat")."""
    return ctx.power_law(estimator).alpha * _log_lambda_max(ctx)


@metric("log_spectral_norm", label="log10 λ_max = log10 ‖W‖₂²")
def log_spectral_norm(ctx: WeightContext) -> float:
    """log10 λ_max = 2·log10 σ_max: WeightWatcher's "log_spectral_norm" (of the squared norm)."""
    return _log_lambda_max(ctx)


@metric("mp_softrank", label="MP soft rank λ₊ / λ_max")
def mp_softrank(ctx: WeightContext) -> float:
    """λ₊/λ_max with λ₊ = σ²(1 + 1/√Q)² the bulk edge of WW's Marchenko–Pastur fit (can exceed 1)."""
    return ctx.mp().softrank


@metric("num_spikes", label="eigenvalues above the MP bulk edge")
def num_spikes(ctx: WeightContext) -> float:
    """#{λ > λ₊ + √TW}: eigenvalues above WW's MP bulk edge and Tracy–Widom margin (WW "num_spikes")."""
    return float(ctx.mp().num_spikes)


# ---------------------------------------------------------------- pico-analyze's weight metrics


@metric("condition_number", label="condition number σ_max / σ_min")
def condition_number(ctx: WeightContext) -> float:
    """σ_max/σ_min over the min(m, n) singular values (pico-analyze ``condition_number``). A matrix
    with σ_min ≤ max(m, n)·ε·σ_max is singular to float64 precision: NaN with a warning (pico gives
    inf, or a meaningless large number in float32)."""
    s = ctx.singular_values
    if s.size == 0 or s[0] == 0:
        raise Degenerate("the zero matrix has no condition number (0/0)")
    if s[-1] * _GRAM_KAPPA < s[0]:
        s = ctx.exact_singular_values
    if s[-1] <= max(ctx.shape) * np.finfo(np.float64).eps * s[0]:
        raise Degenerate(f"the matrix is singular (σ_min/σ_max = {s[-1] / s[0]:.1e}): condition number infinite")
    return float(s[0] / s[-1])


@metric("nuclear_norm", label="nuclear norm ‖W‖_*")
def nuclear_norm(ctx: WeightContext) -> float:
    """Nuclear (trace) norm ‖W‖_* = Σσ_i (pico-analyze ``norm`` with ``norm_type: nuclear``)."""
    return float(ctx.singular_values.sum())


_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def _sort_magnitudes(x: np.ndarray) -> np.ndarray:
    """``np.sort(x)`` of non-negative finite IEEE floats, sorted as their bit patterns (unsigned
    integers of the same width order exactly as the non-negative floats do, and sort faster), or on
    the job's GPU (:func:`._linalg.sort_nonnegative`): the same array, bit for bit."""
    on_gpu = _linalg.sort_nonnegative(x)
    if on_gpu is not None:
        return on_gpu
    if x.dtype.kind == "f" and x.dtype.itemsize in _UINT:
        return np.sort(x.view(_UINT[x.dtype.itemsize])).view(x.dtype)
    return np.sort(x)


@metric("gini", label="Gini coefficient of |W|")
def gini(ctx: WeightContext) -> float:
    """Gini coefficient of the magnitudes: with x = |w| sorted ascending (N entries),
    G = Σ_i (2i − N − 1)·x_i / (N·Σx) ∈ [0, 1) (pico-analyze ``gini``; 0: all equal, → 1: sparse).
    The all-zero matrix is NaN with a warning (pico returns 0)."""
    x = _sort_magnitudes(ctx.abs_entries)
    n = x.size
    weighted, total = _rank_weighted_sum(x)
    if n == 0 or total == 0:
        raise Degenerate("all entries are zero: the Gini coefficient is 0/0")
    return weighted / (n * total)


_BLOCK = 1 << 15
_BLOCK_RANKS = np.arange(_BLOCK, dtype=np.float64)


def _rank_weighted_sum(x: np.ndarray) -> tuple[float, float]:
    """(Σ_i (2i − N − 1)·x_i, Σ_i x_i) of a sorted 1-D array, i = 1…N, in float64, block by block:
    over a block starting at s, Σ (2(s + j) + 1 − N)·x = (2s + 1 − N)·Σx + 2·Σ j·x, so no N-long
    float64 coefficient or copy is ever allocated (on the 30522×384 embedding those two cost more
    than the sort)."""
    n = x.size
    weighted = total = 0.0
    for start in range(0, n, _BLOCK):
        block = x[start : start + _BLOCK].astype(np.float64)
        s = float(block.sum())
        weighted += (2 * start + 1 - n) * s + 2.0 * float(np.dot(_BLOCK_RANKS[: block.size], block))
        total += s
    return weighted, total


@metric("hoyer", label="Hoyer sparsity of W")
def hoyer(ctx: WeightContext) -> float:
    """Hoyer (2004) sparsity (√N − ‖w‖₁/‖w‖₂)/(√N − 1) of the N entries ∈ [0, 1] (pico-analyze
    ``hoyer``; 0: all magnitudes equal, 1: one nonzero entry). The all-zero matrix and N = 1 are NaN
    with a warning (pico raises ZeroDivisionError)."""
    x = ctx.abs_entries
    n = x.size
    if n < 2:
        raise Degenerate(f"{n} entries: Hoyer sparsity needs at least 2")
    l2 = math.sqrt(ctx.sum_squares)  # = np.linalg.norm(w.ravel()): √(w·w)
    if l2 == 0:
        raise Degenerate("all entries are zero: Hoyer sparsity is 0/0")
    l1 = float(np.sum(x, dtype=np.float64))
    return (math.sqrt(n) - l1 / l2) / (math.sqrt(n) - 1)
