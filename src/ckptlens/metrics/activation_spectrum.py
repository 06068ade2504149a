"""Per-layer activation statistics (family ``activation_spectrum``, input: activations
[n_samples, features], higher-rank arrays flattened per sample; rows are tokens for a transformer).

Registered metrics (no reference):
    activation_norm         mean over samples of the Euclidean norm of the (uncentred) output vector
    activation_pca_evr      (n_components=5) explained-variance ratios of the top principal components
                            of the centred activations, as ``.pc1`` … ``.pc{n}`` (what
                            ``sklearn.decomposition.PCA().explained_variance_ratio_[:n]`` gives;
                            components beyond min(n_samples, features) explain 0). Constant
                            activations have no variance to explain: NaN, with a warning.
    rankme                  (variant="garrido") RankMe, Garrido et al. 2023: exp(−Σ p_k log p_k),
                            p_k = σ_k/‖σ‖₁ + 1e-7, σ the singular values of the raw (uncentred)
                            activations (min(n, d) of them). variant="covariance": the same entropy
                            of the top min(2048, n, d) eigenvalues of the centred covariance (λ = σ²
                            of the centred data), as the α-ReQ authors' reptrix and the Tracing-the-
                            representation-geometry code compute "RankMe" (a different number).
    alpha_req               (ranks=[11, 100]) α-ReQ, Agrawal et al. 2022: the decay α of the
                            normalised covariance eigenspectrum λ_r/Σλ ∝ r^(−α), by least squares
                            of log λ_r on −log r weighted 1/r over the 1-based ranks r0 … r1
                            (reptrix ``get_alpha``'s default fit_range = arange(10, 100); the
                            Tracing repo uses ranks 12 … 100). Needs r1 eigenvalues.
    anisotropy              mean cosine between distinct token representations (Ethayarajh 2019):
                            (‖Σ_i x̂_i‖² − n) / (n(n − 1)), x̂_i = x_i/‖x_i‖ of the raw rows, zero
                            rows left out.
    anisotropy_microscope   LLM-Microscope's "anisotropy" (Razzhigaev et al. 2024,
                            ``calculate_anisotropy_torch``): σ₁²/Σσ² of the centred activations,
                            i.e. the explained-variance ratio of the first principal component (the
                            same number as ``activation_pca_evr.pc1``), not a cosine.
    intrinsic_dimension     (variant="microscope") TwoNN intrinsic dimension (Facco et al. 2017)
                            as LLM-Microscope's ``intrinsic_dimension`` computes it; variant="twonn":
                            Facco's / scikit-dimension's ``TwoNN(discard_fraction=0.1)``.
    dormant_fraction        (tau=0.025) fraction of τ-dormant units (ReDo, Sokar et al. 2023):
                            s_i = E|h_i| / mean_k E|h_k| ≤ τ over the probe samples. Meant for
                            post-activation outputs (target the activation function's module,
                            e.g. ``blocks.*.mlp.act``); a layer whose outputs are all zero is
                            fully dormant (1.0).

TwoNN (both variants): r1, r2 = distances of each point to its first and second nearest
neighbours (itself excluded), μ = r2/r1, sorted ascending; the fit is through the origin,
d = Σ log μ_i·(−log(1 − F_i)) / Σ (log μ_i)². "microscope": centre, divide by the mean row norm;
points with r1 < 1e-8 (duplicates) get μ = −1, and the u values μ ≤ 1 + 1e-8 are dropped;
F_i = (u + i)/n for the remaining m (i = 1 … m); only the first min(⌊m/5⌋, m − 1) points are used
(the smallest 20 % of μ, LLM-Microscope's reduction_factor = 5). "twonn": duplicates dropped,
the smallest ⌊0.9·n⌋ values of μ with F_i = i/n (i = 0, 1, …). Distances: the Gram trick picks a
few candidate neighbours per point, whose distances are then recomputed directly (‖x_i − x_j‖), so
that close pairs keep full precision.

Dormant units: ReDo's code (dopamine ``estimate_neuron_score``) divides by mean + 1e-9; here by the
mean alone, so that the score does not depend on the activations' scale (the same result unless the
mean |activation| is ~1e-9 or below).

The covariance spectrum comes from the eigenvalues of the smaller of XᶜᵀXᶜ (features²) and
XᶜXᶜᵀ (samples²), one per layer; RankMe's uncentred spectrum likewise from the raw X.
"""

from __future__ import annotations

import math
from functools import cached_property

import numpy as np

from ._common import _fail, check_choice, check_positive_int, pc_suffixes
from .registry import Degenerate, family, metric


def _gram_eigenvalues(x: np.ndarray) -> np.ndarray:
    g = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    return np.clip(np.linalg.eigvalsh(g)[::-1], 0.0, None)


@family("activation_spectrum", needs="activations")
class ActivationStatsContext:
    """One layer's activations: per-sample norms (uncentred) and the centred data."""

    def __init__(self, x: np.ndarray):
        x = np.array(x, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        self.row_norms = np.linalg.norm(x, axis=1)
        self.mean = x.mean(axis=0, keepdims=True)
        x -= self.mean
        self.x = x

    @property
    def raw(self) -> np.ndarray:
        """The activations as extracted (centred + mean; zero columns stay exactly zero)."""
        return self.x + self.mean

    @cached_property
    def mean_abs(self) -> np.ndarray:
        """E|h_i| per unit over the samples."""
        return np.abs(self.raw).mean(axis=0) if self.x.shape[0] else np.zeros(self.x.shape[1])

    @cached_property
    def unit_sum(self) -> np.ndarray:
        """Σ_i x_i/‖x_i‖ over the nonzero rows."""
        norms = np.where(self.row_norms > 0, self.row_norms, 1.0)
        return (self.raw / norms[:, None]).sum(axis=0)

    @cached_property
    def covariance_eigenvalues(self) -> np.ndarray:
        """Eigenvalues of XᶜᵀXᶜ (unnormalised covariance), decreasing, clipped at 0."""
        return _gram_eigenvalues(self.x)

    @cached_property
    def raw_singular_values(self) -> np.ndarray:
        """Singular values of the uncentred activations, decreasing."""
        return np.sqrt(_gram_eigenvalues(self.raw))

    @cached_property
    def neighbour_ratios(self) -> tuple[np.ndarray, np.ndarray]:
        """(r1, r2) for every row of the centred X divided by its mean row norm (TwoNN)."""
        x = self.x
        scale = np.linalg.norm(x, axis=1).mean()
        if x.shape[0] < 3 or scale == 0:
            raise Degenerate(f"{x.shape[0]} samples of spread {scale:g}: TwoNN needs 3 distinct points")
        return _two_nearest(x / scale)


def _two_nearest(x: np.ndarray, candidates: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Distances to the first and second nearest other row, for every row of x."""
    n, d = x.shape
    sq = np.einsum("ij,ij->i", x, x)
    c = min(candidates, n - 1)
    chunk = max(1, min(512, (1 << 22) // max(c * d, n)))
    r1, r2 = np.empty(n), np.empty(n)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        d2 = sq[rows, None] + sq[None, :] - 2 * (x[rows] @ x.T)
        d2[np.arange(rows.size), rows] = np.inf
        cand = np.argpartition(d2, c - 1, axis=1)[:, :c]
        exact = np.linalg.norm(x[rows][:, None, :] - x[cand], axis=2)
        exact.sort(axis=1)
        r1[rows], r2[rows] = exact[:, 0], exact[:, 1]
    return r1, r2


@metric("activation_norm", label="mean activation norm")
def activation_norm(ctx: ActivationStatsContext) -> float:
    """Mean Euclidean norm of the layer's output vectors over the probe samples."""
    return float(ctx.row_norms.mean()) if ctx.row_norms.size else float("nan")


def _check_pca(params):
    check_positive_int("activation_pca_evr", "n_components", params["n_components"])


@metric(
    "activation_pca_evr", label="explained variance ratio of activation PCs", validate=_check_pca, outputs=pc_suffixes
)
def activation_pca_evr(ctx: ActivationStatsContext, n_components=5) -> dict:
    """Explained-variance ratios of the top principal components of the layer's activations."""
    ev = ctx.covariance_eigenvalues
    total = ev.sum()
    ratios = np.zeros(int(n_components))
    m = min(len(ratios), ev.size)
    ratios[:m] = ev[:m] / total if total > 0 else np.nan
    if total <= 0:
        ratios[:] = np.nan
    return {f"pc{i + 1}": float(r) for i, r in enumerate(ratios)}


# ---------------------------------------------------------------- RankMe, α-ReQ

RANKME_EPS = 1e-7
RANKME_MAX_EIGENVALUES = 2048  # reptrix / Tracing: PCA(n_components=min(2048, n, d))


def _check_rankme(params):
    check_choice("rankme", "variant", params["variant"], ("garrido", "covariance"))


@metric("rankme", label="RankMe effective rank", validate=_check_rankme)
def rankme(ctx: ActivationStatsContext, variant="garrido") -> float:
    """RankMe = exp(−Σ p log p), p = s/‖s‖₁ + 1e-7; s = σ of the raw activations (Garrido et al.)
    or the top-2048 centred covariance eigenvalues (variant "covariance", reptrix)."""
    if variant == "garrido":
        s = ctx.raw_singular_values
    else:
        s = ctx.covariance_eigenvalues[:RANKME_MAX_EIGENVALUES]
    total = float(np.sum(np.abs(s)))
    if total == 0:
        raise Degenerate(
            "all-zero spectrum: RankMe is 0/0" + (" (constant activations)" if variant != "garrido" else "")
        )
    p = s / total + RANKME_EPS
    return float(np.exp(-np.sum(p * np.log(p))))


def _check_ranks(params):
    r = params["ranks"]
    ok = (
        isinstance(r, (list, tuple))
        and len(r) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in r)
        and 1 <= r[0] < r[1]
    )
    if not ok:
        _fail("alpha_req", "ranks", f"must be [first, last] 1-based ranks with 1 <= first < last, not {r!r}")


@metric("alpha_req", label="α-ReQ eigenspectrum decay α", validate=_check_ranks)
def alpha_req(ctx: ActivationStatsContext, ranks=(11, 100)) -> float:
    """Decay α of λ_r/Σλ ∝ r^(−α) (α-ReQ), weighted least squares on log λ_r vs −log r, weight 1/r,
    over ranks r0 … r1 of the centred covariance spectrum (top min(2048, n, d) eigenvalues)."""
    r0, r1 = int(ranks[0]), int(ranks[1])
    total = ctx.covariance_eigenvalues.sum()  # PCA's explained_variance_ratio_ divides by all of them
    ev = ctx.covariance_eigenvalues[:RANKME_MAX_EIGENVALUES]
    if total <= 0:
        raise Degenerate("constant activations: no eigenspectrum")
    if ev.size < r1:
        raise Degenerate(f"{ev.size} eigenvalues (min(samples, features)): the fit over ranks {r0}-{r1} needs {r1}")
    lam = ev[r0 - 1 : r1] / total
    if np.any(lam <= 0):
        raise Degenerate(f"zero eigenvalues within ranks {r0}-{r1}: the spectrum has lower rank")
    r = np.arange(r0, r1 + 1, dtype=np.float64)
    x = np.stack([-np.log(r), np.ones_like(r)], axis=1)
    w = (1.0 / r)[:, None]
    b = np.linalg.solve(x.T @ (x * w), (w * x).T @ np.log(lam))
    return float(b[0])


# ---------------------------------------------------------------- anisotropy


@metric("anisotropy", label="anisotropy (mean cosine between tokens)")
def anisotropy(ctx: ActivationStatsContext) -> float:
    """Mean cosine between distinct rows, (‖Σ x̂_i‖² − n)/(n(n−1)) (Ethayarajh 2019), zero rows out."""
    n = int(np.sum(ctx.row_norms > 0))
    if n < 2:
        raise Degenerate(f"{n} nonzero rows: a mean cosine between tokens needs 2")
    return float((np.dot(ctx.unit_sum, ctx.unit_sum) - n) / (n * (n - 1)))


@metric("anisotropy_microscope", label="anisotropy (LLM-Microscope: PC1 variance ratio)")
def anisotropy_microscope(ctx: ActivationStatsContext) -> float:
    """LLM-Microscope's anisotropy σ₁²/Σσ² of the centred activations (= activation_pca_evr.pc1)."""
    ev = ctx.covariance_eigenvalues
    total = ev.sum()
    if ev.size == 0 or total <= 0:
        raise Degenerate("constant activations: no variance")
    return float(ev[0] / total)


# ---------------------------------------------------------------- intrinsic dimension (TwoNN)

TWONN_EPS = 1e-8


def twonn_microscope(r1: np.ndarray, r2: np.ndarray, reduction_factor: int = 5) -> float:
    """LLM-Microscope's ``intrinsic_dimension`` from the neighbour distances (module docstring)."""
    n_all = r1.size
    bad = r1 < TWONN_EPS
    mu = np.where(bad, -1.0, r2 / np.where(bad, 1.0, r1))
    mu = np.sort(mu)
    useless = int(np.sum(mu <= 1 + TWONN_EPS))
    mu = mu[useless:]
    m = mu.size
    f_emp = np.arange(1 + useless, m + 1 + useless) / (m + useless)
    k = min(m // reduction_factor, m - 1)
    if k < 1:
        raise Degenerate(f"{m} of {n_all} points have distinct nearest neighbours: too few for TwoNN")
    lm, ld = np.log(mu[:k]), -np.log(1 - f_emp[:k])
    return float(np.sum(lm * ld) / np.sum(lm * lm))


def twonn_facco(r1: np.ndarray, r2: np.ndarray, discard_fraction: float = 0.1) -> float:
    """Facco et al. 2017 / scikit-dimension ``TwoNN``: the smallest 90 % of μ, F_i = i/n."""
    keep = r1 >= TWONN_EPS
    mu = np.sort(r2[keep] / r1[keep])
    n = mu.size
    k = int(n * (1 - discard_fraction))
    if k < 2:
        raise Degenerate(f"{n} distinct points: too few for TwoNN")
    lm, ld = np.log(mu[:k]), -np.log(1 - np.arange(k) / n)
    denom = np.sum(lm * lm)
    if denom == 0:
        raise Degenerate("every point's two nearest neighbours are equidistant: no TwoNN fit")
    return float(np.sum(lm * ld) / denom)


def _check_id(params):
    check_choice("intrinsic_dimension", "variant", params["variant"], ("microscope", "twonn"))


@metric("intrinsic_dimension", label="intrinsic dimension (TwoNN)", validate=_check_id)
def intrinsic_dimension(ctx: ActivationStatsContext, variant="microscope") -> float:
    """TwoNN intrinsic dimension, d = Σ log μ·(−log(1−F)) / Σ (log μ)², μ = r2/r1 (module docstring)."""
    r1, r2 = ctx.neighbour_ratios
    return twonn_microscope(r1, r2) if variant == "microscope" else twonn_facco(r1, r2)


# ---------------------------------------------------------------- dormant units (ReDo)


def _check_tau(params):
    t = params["tau"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (t >= 0 and math.isfinite(t)):
        _fail("dormant_fraction", "tau", f"must be a number >= 0, not {t!r}")


@metric("dormant_fraction", label="fraction of τ-dormant units", validate=_check_tau)
def dormant_fraction(ctx: ActivationStatsContext, tau=0.025) -> float:
    """Fraction of units with E|h_i| / mean_k E|h_k| ≤ τ over the probe samples (ReDo's τ-dormant)."""
    m = ctx.mean_abs
    if m.size == 0 or ctx.row_norms.size == 0:
        raise Degenerate("no units or no samples")
    avg = float(m.mean())
    if avg == 0:
        return 1.0  # every unit outputs exactly 0: all dormant
    return float(np.mean(m / avg <= tau))
