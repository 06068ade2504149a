"""Activation-similarity metrics on a fixed probe batch (activations as [n_samples, features]):
the same layer at the current checkpoint (X, n × d₁) against a reference checkpoint (Y, n × d₂),
over the same probe samples (rows).

Registered metrics (family ``activation_similarity``; each as ``*_to_final``, reference "final",
and ``*_to_previous``, reference "previous"; CKA as ``cka_to_previous`` and ``cka_to_initial``,
reference "initial"; ``cka_to_final`` is its own family, :mod:`.similarity_to_final`, computed from
the terms the extraction keeps instead of the activations):
    cka_to_*           (debiased=False) linear CKA; debiased=True: with the unbiased HSIC estimator
    svcca_to_*         (variance=0.99) SVCCA, Raghu et al. 2017
    pwcca_to_*         PWCCA, Morcos et al. 2018, as pico-analyze computes it
    mutual_knn_to_*    (k=10) mutual k-nearest-neighbour alignment, Huh et al. 2024 (platonic-rep)

Linear CKA (Kornblith et al., 2019) = HSIC(K, L) / sqrt(HSIC(K, K)·HSIC(L, L)) with K = XXᵀ,
L = YYᵀ, HSIC(K, L) = tr(KHLH) (the 1/(n−1)² factors cancel), H = I − 11ᵀ/n. It is computed in
feature space, ‖XᶜᵀYᶜ‖²_F / (‖XᶜᵀXᶜ‖_F‖YᶜᵀYᶜ‖_F) (Xᶜ = centred X), when n² ≥ d² (n ≫ d), and from
the centred Gram matrices otherwise; both equal the HSIC form. Constant activations (a layer of
dead units) make the denominator 0: the value is NaN, with a warning (CKA is undefined there).
The products (XXᵀ, YYᵀ in the Gram form; XᵀY, XᵀX, YᵀY in feature space) run through torch on
the metric job's GPU when it has one (:mod:`._linalg`; float64, same values to 1e-10), the O(n²)
and O(d²) reductions after them on numpy.

Debiased CKA (``debiased=True``; Song et al. 2012's unbiased HSIC₁, as ckatorch ``unbiased=True``,
pico-analyze/Kornblith ``debiased=True``): with K̃, L̃ the Gram matrices with zeroed diagonals,
HSIC₁(K, L) = [tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n−1)(n−2)) − 2/(n−2)·1ᵀK̃L̃1] / (n(n−3)), and in feature
space (Kornblith's form) n(n−3)·HSIC₁ = ‖XᵀY‖²_F − n/(n−2)·Σ_i‖x_i‖²‖y_i‖² + ‖X‖²_F‖Y‖²_F/((n−1)(n−2))
on centred X, Y. Its ratio removes the upward bias of CKA with few samples (biased CKA of two
independent representations is ≈ d/n, debiased ≈ 0), can be slightly negative, and needs n ≥ 4.
The default stays biased, so that existing results do not change.

SVCCA (Raghu et al. 2017, "SVCCA: Singular Vector Canonical Correlation Analysis"; pico-analyze has
none, so this is the paper's definition): centre X and Y, keep the top singular directions that
explain ``variance`` (99 %) of each one's variance (k_x, k_y of them), and average the
min(k_x, k_y) canonical correlations between the two reduced representations. The canonical
correlations of two column spaces are the singular values of U_xᵀU_y (orthonormal bases), so the
CCA step is one small SVD. The reduced spaces live in the n − 1 dimensions of centred samples: with
k_x + k_y ≥ n, k_x + k_y − n + 1 correlations are 1 by construction, so that is NaN with a warning.
(platonic-rep's ``svcca`` differs: z-scored features, 10 fixed directions, sklearn CCA, random
jitter.)

PWCCA (Morcos, Raghu & Bengio 2018) exactly as pico-analyze's ``compute_pwcca(source=X,
target=Y)`` (Google's svcca code): neurons × samples, Σ = np.cov, Σxx, Σyy divided by their largest
|entry| and Σxy by √(both), CCA by the SVD of Σxx^{-1/2}ΣxyΣyy^{-1/2} (pinv), canonical
correlations ρ; the directions h = coef·(X − μ) + μ of the narrower side, P = qr(hᵀ).Q, weights
α_i = Σ_j |⟨P_i, x_j⟩| over that side's neurons, normalised; PWCCA = Σ α_i ρ_i (asymmetric: the
weights come from the current checkpoint's side for equal widths). Differences: pico's code uses
the first input's activations for the second's directions when the second is narrower (an
IndexError where the widths differ; it never arises for one layer across checkpoints), and takes
the square root of the pinv's tiny negative eigenvalues (NaN for a singular Σxx, e.g. dead units):
here the narrower side's own activations, and negatives clipped to 0. CCA needs more samples than
neurons: n ≤ max(d₁, d₂) is NaN with a warning (pico asserts), never a number.

Mutual k-NN (Huh et al. 2024, "The Platonic Representation Hypothesis", platonic-rep
``AlignmentMetrics.mutual_knn`` on L2-normalised rows, as their ``measure_alignment`` calls it):
N_X(i) = the k rows most similar to row i by cosine (itself excluded); score =
mean_i |N_X(i) ∩ N_Y(i)| / k ∈ [0, 1]. Ties are broken by the lower row index (torch's argsort is
not stable). platonic-rep also clips features at their 95th |x| percentile before this; not here.
Zero rows (no direction) or identical rows (no neighbourhoods) are NaN with a warning.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from . import _linalg
from ._common import _fail, check_bool, check_positive_int, hsic1_of
from .registry import Degenerate, family, metric


@family("activation_similarity", needs="activations")
class ActivationContext:
    """One layer's activations on the probe batch, centred per feature (the raw rows on demand)."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        self.mean = x.mean(axis=0, keepdims=True)
        self.x = x - self.mean
        self._cache: dict = {}

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def raw(self) -> np.ndarray:
        """The activations as extracted (centred + mean)."""
        return self.x + self.mean

    @cached_property
    def dev(self):
        """The centred X as a float64 torch tensor on the job's GPU (:mod:`._linalg`), or None
        on the numpy path."""
        return _linalg.to_device(self.x) if _linalg.on_torch() else None

    @cached_property
    def gram(self) -> np.ndarray:
        if self.dev is not None:
            return _linalg.to_numpy(self.dev @ self.dev.T)
        return self.x @ self.x.T

    @cached_property
    def feature_gram_norm(self) -> float:
        """‖XᵀX‖_F (the feature-space CKA's normaliser)."""
        if self.dev is not None:
            return float(_fro(self.dev.T @ self.dev))
        return float(np.linalg.norm(self.x.T @ self.x))

    @cached_property
    def row_sq_norms(self) -> np.ndarray:
        return np.einsum("ij,ij->i", self.x, self.x)

    def svd_basis(self, variance: float) -> np.ndarray:
        """Orthonormal n × k basis of the top singular directions of the centred X explaining
        ``variance`` of its variance (from the eigenvectors of the smaller Gram matrix)."""
        key = ("svd", variance)
        if key not in self._cache:
            x = self.x
            if x.shape[0] >= x.shape[1]:
                lam, v = np.linalg.eigh(x.T @ x)
            else:
                lam, v = np.linalg.eigh(self.gram)
            lam, v = np.clip(lam[::-1], 0.0, None), v[:, ::-1]
            total = lam.sum()
            if total <= 0:
                self._cache[key] = None
            else:
                k = int(np.searchsorted(np.cumsum(lam) / total, variance - 1e-12) + 1)
                k = min(k, int(np.sum(lam > lam[0] * max(x.shape) * np.finfo(np.float64).eps)))
                u = x @ v[:, :k] if x.shape[0] >= x.shape[1] else v[:, :k]
                self._cache[key] = np.linalg.qr(u)[0]  # orthonormalise (n ≥ d: U = X V Λ^{-1/2})
        return self._cache[key]

    def knn(self, k: int) -> np.ndarray:
        """Indices [n, k] of the k nearest rows by cosine of the raw rows, self excluded, ties to
        the lower index."""
        key = ("knn", k)
        if key not in self._cache:
            raw = self.raw
            norms = np.linalg.norm(raw, axis=1)
            if np.any(norms == 0):
                raise Degenerate(f"{int(np.sum(norms == 0))} of {self.n} rows are zero: no cosine neighbours")
            f = raw / norms[:, None]
            spread = np.linalg.norm(f - f.mean(axis=0))
            if spread <= 1e-12 * np.sqrt(self.n):
                raise Degenerate("every row points the same way: no nearest-neighbour structure")
            s = f @ f.T
            np.fill_diagonal(s, -np.inf)
            self._cache[key] = np.argsort(-s, axis=1, kind="stable")[:, :k]
        return self._cache[key]


def _same_samples(a: ActivationContext, b: ActivationContext, what: str) -> None:
    if a.n != b.n:
        raise ValueError(f"{what} needs the same probe samples: {a.n} vs {b.n} rows")


# ---------------------------------------------------------------- CKA


def _fro(t):
    import torch

    return torch.linalg.matrix_norm(t).item()


def cross_sq_norm(a: ActivationContext, b: ActivationContext) -> float:
    """‖XᵀY‖²_F of the centred activations (on the job's GPU where it has one)."""
    if a.dev is not None:
        return _fro(a.dev.T @ b.dev) ** 2
    return float(np.linalg.norm(a.x.T @ b.x) ** 2)


def linear_cka_features(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of centred x [n, d1], y [n, d2] in feature space (cheap when n >> d)."""
    cross = np.linalg.norm(x.T @ y) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def linear_cka_gram(kx: np.ndarray, ky: np.ndarray) -> float:
    """Linear CKA from the Gram matrices of centred inputs (cheap when d >> n)."""
    return float(np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky)))


def _use_gram(a: ActivationContext, b: ActivationContext) -> bool:
    d = a.x.shape[1] + b.x.shape[1]
    return a.n * a.n < d * d


def linear_cka(a: ActivationContext, b: ActivationContext) -> float:
    """Linear CKA (Kornblith et al., 2019), in whichever form is cheaper for the shapes."""
    _same_samples(a, b, "CKA")
    if _use_gram(a, b):
        return linear_cka_gram(a.gram, b.gram)
    if a.dev is None:
        return linear_cka_features(a.x, b.x)
    return float(cross_sq_norm(a, b) / (a.feature_gram_norm * b.feature_gram_norm))


def hsic1_gram(k: np.ndarray, l: np.ndarray) -> float:
    """n(n−3)·HSIC₁(K, L), Song et al. 2012 eq. 5 (the common factor cancels in CKA)."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    k1, l1 = kt.sum(axis=1), lt.sum(axis=1)
    return float(np.sum(kt * lt) + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * np.dot(k1, l1))


def hsic1_features(a: ActivationContext, b: ActivationContext) -> float:
    """n(n−3)·HSIC₁ of the linear kernels, in feature space (Kornblith's debiased dot product)."""
    ra, rb = a.row_sq_norms, b.row_sq_norms
    return hsic1_of(a.n, cross_sq_norm(a, b), float(np.dot(ra, rb)), float(ra.sum()), float(rb.sum()))


def debiased_linear_cka(a: ActivationContext, b: ActivationContext) -> float:
    """CKA with the unbiased HSIC₁ estimator (module docstring), in the cheaper form."""
    _same_samples(a, b, "CKA")
    if a.n < 4:
        raise Degenerate(f"debiased CKA needs at least 4 probe samples, not {a.n}")
    if _use_gram(a, b):
        kl, kk, ll = hsic1_gram(a.gram, b.gram), hsic1_gram(a.gram, a.gram), hsic1_gram(b.gram, b.gram)
    else:
        kl, kk, ll = hsic1_features(a, b), hsic1_features(a, a), hsic1_features(b, b)
    if kk <= 0 or ll <= 0:
        raise Degenerate("the unbiased HSIC of a representation with itself is not positive (constant activations)")
    return kl / float(np.sqrt(kk * ll))


def cka(a: ActivationContext, b: ActivationContext, debiased: bool = False) -> float:
    return debiased_linear_cka(a, b) if debiased else linear_cka(a, b)


def _check_bool(name, key):
    def check(params):
        check_bool(name, key, params[key])

    return check


@metric(
    "cka_to_previous",
    label="linear CKA to the previous checkpoint",
    reference="previous",
    validate=_check_bool("cka_to_previous", "debiased"),
)
def cka_to_previous(ctx: ActivationContext, ref: ActivationContext, debiased=False) -> float:
    """Linear CKA between the layer's activations and those of the previous checkpoint."""
    return cka(ctx, ref, debiased)


@metric(
    "cka_to_initial",
    label="linear CKA to the initial checkpoint",
    reference="initial",
    validate=_check_bool("cka_to_initial", "debiased"),
)
def cka_to_initial(ctx: ActivationContext, ref: ActivationContext, debiased=False) -> float:
    """Linear CKA between the layer's activations and those of the first checkpoint (step 0)."""
    return cka(ctx, ref, debiased)


# ---------------------------------------------------------------- SVCCA


def svcca(a: ActivationContext, b: ActivationContext, variance: float = 0.99) -> float:
    """Mean canonical correlation of the SV-reduced representations (Raghu et al. 2017)."""
    _same_samples(a, b, "SVCCA")
    ua, ub = a.svd_basis(variance), b.svd_basis(variance)
    if ua is None or ub is None:
        raise Degenerate("constant activations: no singular directions")
    ka, kb = ua.shape[1], ub.shape[1]
    if ka + kb >= a.n:
        raise Degenerate(
            f"{ka} + {kb} kept directions for {a.n} probe samples: {ka + kb - a.n + 1} canonical correlations "
            "would be 1 by construction; use more probe samples"
        )
    rho = np.linalg.svd(ua.T @ ub, compute_uv=False)
    return float(np.mean(np.clip(rho, 0.0, 1.0)))


def _check_variance(name):
    def check(params):
        v = params["variance"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
            _fail(name, "variance", f"must be a number in (0, 1], not {v!r}")

    return check


@metric(
    "svcca_to_final",
    label="SVCCA to the final checkpoint",
    reference="final",
    validate=_check_variance("svcca_to_final"),
)
def svcca_to_final(ctx: ActivationContext, ref: ActivationContext, variance=0.99) -> float:
    """SVCCA (mean canonical correlation of the top-variance singular directions) to the final checkpoint."""
    return svcca(ctx, ref, variance)


@metric(
    "svcca_to_previous",
    label="SVCCA to the previous checkpoint",
    reference="previous",
    validate=_check_variance("svcca_to_previous"),
)
def svcca_to_previous(ctx: ActivationContext, ref: ActivationContext, variance=0.99) -> float:
    """SVCCA to the previous checkpoint."""
    return svcca(ctx, ref, variance)


# ---------------------------------------------------------------- PWCCA


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def pwcca(a: ActivationContext, b: ActivationContext) -> float:
    """Projection-weighted CCA of a (source) against b (target), pico-analyze's arithmetic."""
    _same_samples(a, b, "PWCCA")
    n, d1, d2 = a.n, a.x.shape[1], b.x.shape[1]
    if n <= max(d1, d2):
        raise Degenerate(f"PWCCA needs more probe samples than neurons: {n} samples, {max(d1, d2)} neurons")
    acts1, acts2 = a.raw.T, b.raw.T  # neurons × samples
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:d1, :d1], cov[:d1, d1:], cov[d1:, d1:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    if xmax == 0 or ymax == 0:
        raise Degenerate("constant activations: no canonical correlations")
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)
    inv_xx, inv_yy = _psd_sqrt(np.linalg.pinv(sxx)), _psd_sqrt(np.linalg.pinv(syy))
    u, s, vh = np.linalg.svd(inv_xx @ (sxy @ inv_yy))
    rho = np.abs(s)
    if d1 <= d2:
        mu = acts1.mean(axis=1, keepdims=True)
        dirns, acts = u.T @ (acts1 - mu) + mu, acts1
    else:
        mu = acts2.mean(axis=1, keepdims=True)
        dirns, acts = vh @ (acts2 - mu) + mu, acts2
    p = np.linalg.qr(dirns.T)[0]
    weights = np.sum(np.abs(p.T @ acts.T), axis=1)
    weights = weights / np.sum(weights)
    return float(np.sum(weights * rho))


@metric("pwcca_to_final", label="PWCCA to the final checkpoint", reference="final")
def pwcca_to_final(ctx: ActivationContext, ref: ActivationContext) -> float:
    """Projection-weighted CCA (Morcos et al. 2018, pico-analyze's computation) to the final checkpoint."""
    return pwcca(ctx, ref)


@metric("pwcca_to_previous", label="PWCCA to the previous checkpoint", reference="previous")
def pwcca_to_previous(ctx: ActivationContext, ref: ActivationContext) -> float:
    """Projection-weighted CCA to the previous checkpoint."""
    return pwcca(ctx, ref)


# ---------------------------------------------------------------- mutual k-NN


def mutual_knn(a: ActivationContext, b: ActivationContext, k: int = 10) -> float:
    """mean_i |N_a(i) ∩ N_b(i)| / k over the k cosine nearest neighbours (platonic-rep)."""
    _same_samples(a, b, "mutual k-NN")
    if k >= a.n:
        raise Degenerate(f"k = {k} neighbours need more than {k} probe samples (have {a.n})")
    na, nb = a.knn(k), b.knn(k)
    mask = np.zeros((a.n, a.n), dtype=bool)
    np.put_along_axis(mask, na, True, axis=1)
    return float(np.take_along_axis(mask, nb, axis=1).sum() / (a.n * k))


def _check_k(name):
    def check(params):
        check_positive_int(name, "k", params["k"])

    return check


@metric(
    "mutual_knn_to_final",
    label="mutual k-NN alignment to the final checkpoint",
    reference="final",
    validate=_check_k("mutual_knn_to_final"),
)
def mutual_knn_to_final(ctx: ActivationContext, ref: ActivationContext, k=10) -> float:
    """Fraction of shared k nearest neighbours (cosine) with the final checkpoint (platonic-rep)."""
    return mutual_knn(ctx, ref, int(k))


@metric(
    "mutual_knn_to_previous",
    label="mutual k-NN alignment to the previous checkpoint",
    reference="previous",
    validate=_check_k("mutual_knn_to_previous"),
)
def mutual_knn_to_previous(ctx: ActivationContext, ref: ActivationContext, k=10) -> float:
    """Fraction of shared k nearest neighbours (cosine) with the previous checkpoint."""
    return mutual_knn(ctx, ref, int(k))
