"""weight_spectrum metrics against plain formulas and, for ScreeNOT, the PyPI package `screenot`
(Donoho, Gavish & Romanov's reference implementation)."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M
from ckptlens.metrics.weight_spectrum import screenot_k, screenot_rank_of, screenot_threshold

SPECTRAL = [
    "frobenius_norm",
    "spectral_norm",
    "stable_rank",
    "effective_rank",
    "proportional_effective_rank",
    "screenot_rank",
]


def values(w, metrics, **params):
    rows = M.compute_family("weight_spectrum", {m: params.get(m, {}) for m in metrics}, {"w": w})
    return {r["metric"]: r["value"] for r in rows}


def plain_effective_rank(w):
    s = np.linalg.svd(w, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    return math.exp(-(p * np.log(p)).sum())


@pytest.mark.parametrize("shape", [(7, 5), (5, 7), (12, 12), (1, 9)])
def test_spectral_metrics_match_plain_formulas(shape):
    w = np.random.default_rng(sum(shape)).standard_normal(shape)
    v = values(w, SPECTRAL[:-1], proportional_effective_rank={"r": 4})
    fro, two = np.linalg.norm(w, "fro"), np.linalg.norm(w, 2)
    assert v["frobenius_norm"] == pytest.approx(fro, rel=1e-12)
    assert v["spectral_norm"] == pytest.approx(two, rel=1e-12)
    assert v["stable_rank"] == pytest.approx(fro**2 / two**2, rel=1e-12)
    assert v["effective_rank"] == pytest.approx(plain_effective_rank(w), rel=1e-12)
    assert v["proportional_effective_rank"] == pytest.approx(plain_effective_rank(w) / 4, rel=1e-12)


def test_per_default_divides_by_min_dimension():
    w = np.random.default_rng(1).standard_normal((9, 6))
    assert values(w, ["proportional_effective_rank"])["proportional_effective_rank"] == pytest.approx(
        plain_effective_rank(w) / 6
    )


def test_known_spectrum():
    w = np.diag([4.0, 2.0, 2.0, 0.0])
    v = values(w, SPECTRAL[:-1])
    assert v["frobenius_norm"] == pytest.approx(math.sqrt(24))
    assert v["spectral_norm"] == 4.0
    assert v["stable_rank"] == pytest.approx(24 / 16)
    p = np.array([0.5, 0.25, 0.25])
    assert v["effective_rank"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))


def test_zero_matrix_has_zero_norms_and_ranks():
    v = values(np.zeros((6, 4)), SPECTRAL)
    assert all(v[m] == 0.0 for m in SPECTRAL), v


def test_one_decomposition_shared_by_all_spectral_metrics(monkeypatch):
    """One Gram eigendecomposition per matrix serves every spectral metric (no SVD at all)."""
    calls = {"eigvalsh": 0, "svd": 0}
    real_eig, real_svd = np.linalg.eigvalsh, np.linalg.svd

    def counting_eig(*a, **k):
        calls["eigvalsh"] += 1
        return real_eig(*a, **k)

    def counting_svd(*a, **k):
        calls["svd"] += 1
        return real_svd(*a, **k)

    monkeypatch.setattr(np.linalg, "eigvalsh", counting_eig)
    monkeypatch.setattr(np.linalg, "svd", counting_svd)
    w = np.random.default_rng(2).standard_normal((20, 10))
    values(w, SPECTRAL + ["alpha", "alpha_weighted", "mp_softrank", "num_spikes", "condition_number", "nuclear_norm"])
    assert calls == {"eigvalsh": 1, "svd": 0}


def test_circuit_matrices_are_ordinary_weights():
    rng = np.random.default_rng(3)
    d, dh = 16, 4
    qk = rng.standard_normal((dh, d)).T @ rng.standard_normal((dh, d)) / 2
    rows = M.compute_family(
        "weight_spectrum",
        {"proportional_effective_rank": {"r": dh}, "screenot_rank": {}},
        {"blocks.0.attn.head0.qk": qk},
    )
    v = {r["metric"]: r["value"] for r in rows}
    assert v["proportional_effective_rank"] == pytest.approx(plain_effective_rank(qk) / dh)
    assert v["screenot_rank"] == dh  # exactly rank d_head: the null space is below any threshold


# ---------------------------------------------------------------- ScreeNOT vs the `screenot` package


def planted(rng, m, n, r, noise=1.0):
    x = rng.standard_normal((m, r)) @ np.diag(rng.uniform(1.5, 6, r)) @ rng.standard_normal((r, n)) / math.sqrt(n)
    return x + noise * rng.standard_normal((m, n)) / math.sqrt(n)


def test_screenot_matches_package_on_normalised_spectra():
    screenot = pytest.importorskip("screenot")
    rng = np.random.default_rng(0)
    for _ in range(25):
        m, n = rng.integers(12, 90, 2)
        y = planted(rng, m, n, rng.integers(0, 6))
        s = np.linalg.svd(y, compute_uv=False)
        y = y / s[0] * 0.9  # top singular value in [0.5, 1): our rescaling is the identity
        s = s / s[0] * 0.9
        k = screenot_k(min(m, n))
        _, t_ref, r_ref = screenot.adaptiveHardThresholding(y, k)
        assert screenot_threshold(s, (m, n), k) == pytest.approx(t_ref, rel=1e-10, abs=1e-12)
        assert screenot_rank_of(s, (m, n), k) == r_ref


@pytest.mark.parametrize("k", ["auto", 1, 3, 5])
def test_screenot_rank_matches_package(k):
    screenot = pytest.importorskip("screenot")
    rng = np.random.default_rng({"auto": 10, 1: 11, 3: 12, 5: 13}[k])
    for _ in range(15):
        m, n = rng.integers(20, 100, 2)
        r = int(rng.integers(0, 5))
        y = planted(rng, m, n, r) * rng.choice([1e-3, 1.0, 40.0])
        s = np.linalg.svd(y, compute_uv=False)
        kk = screenot_k(min(m, n), k)
        _, t_ref, r_ref = screenot.adaptiveHardThresholding(y, kk)
        # the package bisects to an absolute 1e-5; we do it on the spectrum divided by the power of
        # two 2^e just above σ₁, i.e. to 1e-5·2^e: the thresholds agree within both tolerances
        tol = 1e-5 + 1e-5 * 2.0 ** math.frexp(s[0])[1]
        assert abs(screenot_threshold(s, (m, n), k) - t_ref) <= tol
        assert M.compute_family("weight_spectrum", {"screenot_rank": {"k": k}}, {"y": y})[0]["value"] == r_ref


def test_screenot_is_scale_invariant_and_finds_planted_rank():
    rng = np.random.default_rng(5)
    y = planted(rng, 200, 150, 4, noise=0.5)
    s = np.linalg.svd(y, compute_uv=False)
    assert screenot_rank_of(s, y.shape) == 4
    assert screenot_rank_of(s * 1e-6, y.shape) == 4
    assert screenot_rank_of(s * 1e6, y.shape) == 4


def test_screenot_k_is_capped_for_small_matrices():
    assert screenot_k(100) == 25 and screenot_k(100, 10) == 10 and screenot_k(10, 50) == 4
    assert screenot_k(2) == 0 and screenot_k(1, 3) == 0
    for shape in [(1, 1), (2, 5), (3, 3)]:
        w = np.random.default_rng(0).standard_normal(shape)
        v = values(w, ["screenot_rank"], screenot_rank={"k": 7})["screenot_rank"]
        assert 0 <= v <= min(shape)
