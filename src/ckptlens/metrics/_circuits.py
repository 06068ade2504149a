"""The linear algebra of the ``circuits`` metrics (:mod:`.circuits`), numpy only: principal angles
between subspaces and their expected values for random subspaces, numerical rank, statistics of a
low-rank product P·Qᵀ computed without forming it, and the rotary QK circuit W_QK(r) with its SVD
from QR factors. The conventions (rotary layout, rank tolerance) are described in :mod:`.circuits`.
"""

from __future__ import annotations

import functools
import math

import numpy as np

# ---------------------------------------------------------------- principal angles


def overlap_singular_values(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Singular values of aᵀb for orthonormal-column a [d, k], b [d, k]: the cosines of the
    principal angles between their spans."""
    return np.linalg.svd(a.T @ b, compute_uv=False)


def _baseline_samples(k: int) -> int:
    return int(min(2000, max(32, 2**27 // k**3)))


def overlap_monte_carlo(d: int, k: int, n_samples: int, seed: int = 0) -> tuple[float, float]:
    """E[max s], E[sqrt(mean s²)] over ``n_samples`` draws, s = cosines of the principal angles
    between two independent uniformly random k-dim subspaces of R^d.

    By rotation invariance one subspace is span(e₁..e_k) and the other span(G), G ~ N(0, 1)^{d×k};
    then s² are the eigenvalues of (A + B)⁻¹A with A = G_topᵀG_top ~ Wishart_k(k) and
    B = G_botᵀG_bot ~ Wishart_k(d − k), independent. B is drawn by the Bartlett decomposition, so
    the cost is O(n_samples·k³), independent of d."""
    if k > d or k < 1:
        return math.nan, math.nan
    if k == d:
        return 1.0, 1.0
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_samples, k, k))
    a = np.swapaxes(x, 1, 2) @ x
    df = d - k
    if df >= k:
        lower = np.tril(rng.standard_normal((n_samples, k, k)), -1)
        idx = np.arange(k)
        lower[:, idx, idx] = np.sqrt(rng.chisquare(df - idx, size=(n_samples, k)))
        b = lower @ np.swapaxes(lower, 1, 2)
    else:
        y = rng.standard_normal((n_samples, df, k))
        b = np.swapaxes(y, 1, 2) @ y
    chol = np.linalg.cholesky(a + b)
    z = np.linalg.solve(chol, a)  # L⁻¹A
    m = np.linalg.solve(chol, np.swapaxes(z, 1, 2))  # L⁻¹AL⁻ᵀ (A symmetric)
    s2 = np.clip(np.linalg.eigvalsh((m + np.swapaxes(m, 1, 2)) / 2), 0.0, 1.0)
    return float(np.sqrt(s2.max(axis=1)).mean()), float(np.sqrt(s2.mean(axis=1)).mean())


@functools.cache
def random_overlap_baseline(d: int, k: int) -> tuple[float, float]:
    """Expected (max s, sqrt(mean s²)) for random k-dim subspaces of R^d; computed once per (d, k)
    and cached for the process. k = 1: exact, E|cos θ| = Γ(d/2) / (√π·Γ((d+1)/2)); k > 1: Monte
    Carlo with a fixed seed (2000 draws, fewer for k > 40 where the statistics concentrate;
    standard error below 1e-3). E[mean s²] is exactly k/d."""
    d, k = int(d), int(k)
    if k == 1 and d >= 1:
        e = math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)
        return e, e
    return overlap_monte_carlo(d, k, _baseline_samples(k), seed=0)


# ---------------------------------------------------------------- numerical rank


def numerical_rank(s: np.ndarray, shape, eps: float) -> int:
    """Number of singular values above max(shape)·eps·σ₁ (numpy's matrix_rank rule)."""
    return int(np.sum(s > max(shape) * eps * s[0])) if s.size else 0


def stored_eps(*arrays) -> float:
    """The largest machine epsilon among the stored dtypes (float64's for non-float arrays)."""
    return max(np.finfo(x.dtype).eps if x.dtype.kind == "f" else np.finfo(np.float64).eps for x in arrays)


# ---------------------------------------------------------------- low-rank products


def lowrank_diag_zscore(p: np.ndarray, q: np.ndarray) -> float:
    """(mean diag − mean) / std of the n×n matrix T = p·qᵀ, without forming T (p, q: [n, r])."""
    n = p.shape[0]
    diag_mean = float(np.einsum("ij,ij->", p, q)) / n
    mean = float(p.sum(axis=0) @ q.sum(axis=0)) / n**2
    meansq = float(np.sum((p.T @ p) * (q.T @ q))) / n**2
    var = max(meansq - mean**2, 0.0)
    num = diag_mean - mean
    if var == 0:
        return 0.0 if abs(num) <= 1e-12 * math.sqrt(max(meansq, 0.0)) else math.nan
    return num / math.sqrt(var)


def lowrank_argmax_mismatch(p: np.ndarray, q: np.ndarray, rows: np.ndarray) -> float:
    """Share of ``rows`` t with T[t, t] < max_s T[t, s], T = p·qᵀ (chunks of rows, never all of T)."""
    n = q.shape[0]
    chunk = max(1, 2**22 // max(n, 1))
    mismatched = 0
    for start in range(0, len(rows), chunk):
        idx = rows[start : start + chunk]
        t = p[idx] @ q.T
        mismatched += int(np.sum(t[np.arange(len(idx)), idx] < t.max(axis=1)))
    return mismatched / len(rows)


# ---------------------------------------------------------------- rotary QK circuit


def rotary_angles(d_head: int, offset: float, base: float) -> np.ndarray:
    """offset·ω_i, ω_i = base^(−2i/d_head), i < d_head/2 (float64; the toy model's inv_freq)."""
    return offset * float(base) ** (-np.arange(0, d_head, 2, dtype=np.float64) / d_head)


def rotate_pairs(w: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """R(angles)·w for w [d_head, n]: rows (2i, 2i+1) rotated by [[cos, −sin], [sin, cos]] of angle i,
    as ``ckptlens.sources.trained.transformer.apply_rotary`` rotates the features of q and k."""
    c, s = np.cos(angles)[:, None], np.sin(angles)[:, None]
    out = np.empty(w.shape, dtype=np.float64)
    out[0::2] = c * w[0::2] - s * w[1::2]
    out[1::2] = s * w[0::2] + c * w[1::2]
    return out


def rotary_qk(w_q: np.ndarray, w_k: np.ndarray, offset: float, base: float) -> np.ndarray:
    """W_QK(r) = W_Qᵀ·R(−r·ω)·W_K/√d_head (d_model × d_model, formed explicitly): the score of a
    query x_q at position p on a key x_k at position p − r is x_qᵀ·W_QK(r)·x_k. For tests and
    analysis; the metric uses the factored form (:func:`rotary_qk_svd`)."""
    w_q, w_k = np.asarray(w_q, dtype=np.float64), np.asarray(w_k, dtype=np.float64)
    rk = rotate_pairs(w_k, rotary_angles(w_q.shape[0], -offset, base))
    return w_q.T @ rk / math.sqrt(w_q.shape[0])


def rotary_qk_svd(w_q: np.ndarray, w_k: np.ndarray, offset: float, base: float):
    """(U, s, V) of W_QK(r) = W_Qᵀ·B, B = R(−r·ω)·W_K/√d_head, truncated to the numerical rank of
    the d_model × d_model matrix (tolerance with the eps of the stored dtype of W_Q/W_K), from
    W_Qᵀ = Q_a·R_a and Bᵀ = Q_b·R_b: W_QK(r) = Q_a·(R_a·R_bᵀ)·Q_bᵀ, so the SVD of the small core
    U_c·S·V_cᵀ = R_a·R_bᵀ gives U = Q_a·U_c, V = Q_b·V_c."""
    eps = stored_eps(w_q, w_k)
    a = np.asarray(w_q, dtype=np.float64)
    d_head, d = a.shape
    b = rotate_pairs(np.asarray(w_k, dtype=np.float64), rotary_angles(d_head, -offset, base)) / math.sqrt(d_head)
    qa, ra = np.linalg.qr(a.T)
    qb, rb = np.linalg.qr(b.T)
    uc, s, vct = np.linalg.svd(ra @ rb.T)
    r = numerical_rank(s, (d, d), eps)
    return qa @ uc[:, :r], s[:r], qb @ vct[:r].T
