"""Activation similarity (ckptlens.metrics.activation_similarity): CKA against the HSIC definition
with the centring matrix written out, debiased CKA, SVCCA (Raghu et al.'s recipe), PWCCA, mutual
k-NN against the peers' code."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckptlens import metrics as M
from ckptlens.metrics.activation_similarity import ActivationContext, linear_cka, linear_cka_features, linear_cka_gram

# ---------------------------------------------------------------- CKA


def hsic(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def cka_by_definition(x, y):
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


@pytest.mark.parametrize("n, d1, d2", [(200, 5, 7), (8, 60, 40), (30, 30, 30)])
def test_cka_forms_agree_with_hsic_definition(n, d1, d2):
    rng = np.random.default_rng(n + d1)
    x = rng.standard_normal((n, d1))
    y = x[:, :1] * rng.standard_normal(d2) + 0.5 * rng.standard_normal((n, d2)) + 3.0  # offset: centring matters
    expected = cka_by_definition(x, y)
    a, b = ActivationContext(x), ActivationContext(y)
    assert linear_cka_features(a.x, b.x) == pytest.approx(expected, rel=1e-10)
    assert linear_cka_gram(a.gram, b.gram) == pytest.approx(expected, rel=1e-10)
    assert linear_cka(a, b) == pytest.approx(expected, rel=1e-10)


arrays = st.tuples(st.integers(0, 2**31 - 1), st.integers(3, 40), st.integers(1, 12), st.integers(1, 12))


@settings(max_examples=40, deadline=None)
@given(arrays, st.floats(1e-3, 1e3), st.booleans())
def test_cka_invariant_to_orthogonal_transforms_and_isotropic_scaling(params, scale, gram_form):
    seed, n, d1, d2 = params
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d1)), rng.standard_normal((n, d2))
    q = np.linalg.qr(rng.standard_normal((d2, d2)))[0]
    form = (lambda a, b: linear_cka_gram(a.gram, b.gram)) if gram_form else (lambda a, b: linear_cka_features(a.x, b.x))
    base = form(ActivationContext(x), ActivationContext(y))
    moved = form(ActivationContext(x), ActivationContext(scale * y @ q + rng.standard_normal(d2)))
    assert moved == pytest.approx(base, rel=1e-7, abs=1e-9)
    assert 0 <= base <= 1 + 1e-12
    assert form(ActivationContext(x), ActivationContext(-2.0 * x)) == pytest.approx(1.0)


def test_cka_metrics_against_each_reference():
    rng = np.random.default_rng(0)
    cur, prev, init = (rng.standard_normal((50, 6)) for _ in range(3))
    rows = M.compute_family(
        "activation_similarity",
        {"cka_to_previous": {}, "cka_to_initial": {}},
        {"l": cur},
        {"previous": {"l": prev}, "initial": {"l": init}},
    )
    got = {r["metric"]: r["value"] for r in rows}
    assert got["cka_to_previous"] == pytest.approx(cka_by_definition(cur, prev))
    assert got["cka_to_initial"] == pytest.approx(cka_by_definition(cur, init))


def test_cka_of_constant_activations_is_nan_with_warning():
    with pytest.warns(RuntimeWarning, match="cka_to_previous"):
        rows = M.compute_family(
            "activation_similarity",
            {"cka_to_previous": {}},
            {"l": np.ones((10, 3))},
            {"previous": {"l": np.eye(10)[:, :3]}},
        )
    assert math.isnan(rows[0]["value"])


# ---------------------------------------------------------------- debiased CKA, against ckatorch


def hsic1(k, l):
    """Song et al. 2012, eq. 5: the unbiased HSIC estimator, written out."""
    n = k.shape[0]
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0)
    np.fill_diagonal(l, 0)
    one = np.ones(n)
    return (
        np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one
    ) / (n * (n - 3))


@pytest.mark.parametrize("n, d1, d2", [(200, 5, 7), (8, 60, 40), (30, 30, 30)])
def test_debiased_cka_matches_song_hsic_and_ckatorch(n, d1, d2):
    rng = np.random.default_rng(n + d2)
    x = rng.standard_normal((n, d1)) + 2.0
    y = x[:, :1] * rng.standard_normal(d2) + 0.5 * rng.standard_normal((n, d2)) - 1.0
    k, l = x @ x.T, y @ y.T  # uncentred: HSIC₁ does not depend on the features' means
    expected = hsic1(k, l) / math.sqrt(hsic1(k, k) * hsic1(l, l))
    rows = M.compute_family(
        "activation_similarity",
        {"cka_to_initial": {"debiased": True}, "cka_to_previous": {}},
        {"l": x},
        {"initial": {"l": y}, "previous": {"l": y}},
    )
    got = {r["metric"]: r["value"] for r in rows}
    assert got["cka_to_initial"] == pytest.approx(expected, rel=1e-9)
    assert got["cka_to_previous"] == pytest.approx(cka_by_definition(x, y), rel=1e-10)  # default: biased
    ckatorch = pytest.importorskip("ckatorch")  # pip install ckatorch==1.0.3 (in the test extra)
    import torch

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert got["cka_to_initial"] == pytest.approx(ckatorch.cka_base(tx, ty, unbiased=True).item(), rel=1e-9)
    assert got["cka_to_previous"] == pytest.approx(ckatorch.cka_base(tx, ty).item(), rel=1e-9)


def test_debiased_cka_removes_the_small_sample_bias():
    """Two independent representations: biased CKA ≈ d/n-ish, debiased ≈ 0."""
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((40, 30)), rng.standard_normal((40, 30))
    a, b = ActivationContext(x), ActivationContext(y)
    from ckptlens.metrics.activation_similarity import debiased_linear_cka

    assert linear_cka(a, b) > 0.4 and abs(debiased_linear_cka(a, b)) < 0.05


def test_debiased_cka_degenerate_and_parameter_check():
    with pytest.warns(RuntimeWarning, match="at least 4 probe samples"):
        rows = M.compute_family(
            "activation_similarity",
            {"cka_to_initial": {"debiased": True}},
            {"l": np.eye(3)},
            {"initial": {"l": np.eye(3)}},
        )
    assert math.isnan(rows[0]["value"])
    with pytest.raises(M.MetricConfigError, match=r"metrics\.cka_to_initial\.debiased"):
        M.resolve_params("cka_to_initial", {"debiased": "yes"})


def sim(x, ref, metrics, reference="final"):
    rows = M.compute_family("activation_similarity", metrics, {"l": x}, {reference: {"l": ref}})
    return {r["metric"]: r["value"] for r in rows}


def related(n, d1, d2, seed, noise=1.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 8)) @ rng.standard_normal((8, d1)) + 0.3 * rng.standard_normal((n, d1)) + 2.0
    y = x @ rng.standard_normal((d1, d2)) + noise * rng.standard_normal((n, d2)) - 1.0
    return x, y


# ---------------------------------------------------------------- SVCCA


def cca_core_similarity(acts1, acts2, epsilon):
    """Google svcca ``cca_core.get_cca_similarity`` (as vendored by pico-analyze) on neurons ×
    datapoints: covariances scaled by their max, ε on the diagonals, pinv square roots, SVD."""
    n1 = acts1.shape[0]
    cov = np.cov(acts1, acts2)
    sxx, sxy, syy = cov[:n1, :n1], cov[:n1, n1:], cov[n1:, n1:]
    xmax, ymax = np.max(np.abs(sxx)), np.max(np.abs(syy))
    sxx, syy, sxy = (
        sxx / xmax + epsilon * np.eye(n1),
        syy / ymax + epsilon * np.eye(len(syy)),
        sxy / np.sqrt(xmax * ymax),
    )

    def inv_sqrt(a):
        w, v = np.linalg.eigh(np.linalg.pinv(a))
        return v @ np.diag(np.sqrt(w)) @ v.T

    ix, iy = inv_sqrt(sxx), inv_sqrt(syy)
    u, s, vh = np.linalg.svd(ix @ sxy @ iy)
    return u, np.abs(s), vh


def raghu_svcca(x, y, keep=0.99):
    """SVCCA as in Raghu et al. 2017 / Google's tutorial: centre, keep the top SVD directions
    (99 % of the variance), CCA of the reduced data (epsilon 1e-10), mean correlation."""
    reduced = []
    for a in (x.T, y.T):
        a = a - a.mean(axis=1, keepdims=True)
        u, s, v = np.linalg.svd(a, full_matrices=False)
        k = int(np.searchsorted(np.cumsum(s**2) / np.sum(s**2), keep) + 1)
        reduced.append(np.dot(s[:k] * np.eye(k), v[:k]))
    return float(np.mean(cca_core_similarity(*reduced, epsilon=1e-10)[1]))


@pytest.mark.parametrize("n, d1, d2", [(500, 40, 30), (300, 20, 20)])
def test_svcca_matches_raghu_recipe(n, d1, d2):
    x, y = related(n, d1, d2, seed=n)
    got = sim(x, y, {"svcca_to_final": {}})["svcca_to_final"]
    assert got == pytest.approx(raghu_svcca(x, y), rel=1e-7)  # (their ε = 1e-10 regulariser aside)
    assert sim(
        x, 3 * x @ np.linalg.qr(np.random.default_rng(0).standard_normal((d1, d1)))[0] + 1, {"svcca_to_final": {}}
    )["svcca_to_final"] == pytest.approx(1.0)


def test_svcca_with_too_few_samples_is_nan():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 40)), rng.standard_normal((30, 40))  # 99 %: ~27 directions each
    with pytest.warns(RuntimeWarning, match="svcca_to_previous.*more probe samples"):
        got = sim(x, y, {"svcca_to_previous": {}}, reference="previous")
    assert math.isnan(got["svcca_to_previous"])
    with pytest.raises(M.MetricConfigError, match=r"metrics\.svcca_to_final\.variance"):
        M.resolve_params("svcca_to_final", {"variance": 1.5})


# ---------------------------------------------------------------- PWCCA


def pico_pwcca(acts1, acts2):
    """pico-analyze ``lib/svcca/pwcca.compute_pwcca`` (its robust_cca_similarity forwards no ε,
    so the CCA runs with ε = 0), widths d1 ≤ d2 (its other branch indexes acts1 by acts2's neurons)."""
    u, s, vh = cca_core_similarity(acts1, acts2, epsilon=0.0)
    mu = np.mean(acts1, axis=1, keepdims=True)
    dirns = np.dot(u.T, acts1 - mu) + mu
    p, _ = np.linalg.qr(dirns.T)
    weights = np.sum(np.abs(np.dot(p.T, acts1.T)), axis=1)
    weights = weights / np.sum(weights)
    return float(np.sum(weights * s))


@pytest.mark.parametrize("n, d1, d2", [(300, 10, 10), (200, 12, 30), (120, 40, 40)])
def test_pwcca_matches_pico(n, d1, d2):
    x, y = related(n, d1, d2, seed=n + d1, noise=2.0)
    got = sim(x, y, {"pwcca_to_final": {}})["pwcca_to_final"]
    assert got == pytest.approx(pico_pwcca(x.T, y.T), rel=1e-9)
    assert 0 < got < 1


def test_pwcca_is_asymmetric_and_refuses_fewer_samples_than_neurons():
    x, y = related(200, 10, 10, seed=5, noise=3.0)
    forward, backward = sim(x, y, {"pwcca_to_final": {}}), sim(y, x, {"pwcca_to_final": {}})
    assert forward["pwcca_to_final"] != pytest.approx(backward["pwcca_to_final"], rel=1e-4)
    x, y = related(20, 32, 32, seed=6)
    with pytest.warns(RuntimeWarning, match=r"pwcca_to_final.*20 samples, 32 neurons"):
        got = sim(x, y, {"pwcca_to_final": {}})
    assert math.isnan(got["pwcca_to_final"])
    with pytest.warns(RuntimeWarning, match="pwcca_to_final"):
        got = sim(np.ones((50, 4)), y[:, :4].repeat(1, axis=0)[:20].repeat(3, axis=0)[:50], {"pwcca_to_final": {}})
    assert math.isnan(got["pwcca_to_final"])  # constant activations


# ---------------------------------------------------------------- mutual k-NN


def platonic_mutual_knn(a, b, topk):
    """platonic-rep ``AlignmentMetrics.mutual_knn`` on F.normalize'd rows, written with numpy
    (its metrics module imports torchaudio); a stable argsort stands in for torch's."""

    def knn(f):
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        s = f @ f.T
        np.fill_diagonal(s, -1e8)
        return np.argsort(-s, axis=1, kind="stable")[:, :topk]

    ka, kb = knn(a), knn(b)
    n = len(a)
    mask_a, mask_b = np.zeros((n, n)), np.zeros((n, n))
    mask_a[np.arange(n)[:, None], ka] = 1.0
    mask_b[np.arange(n)[:, None], kb] = 1.0
    return float(((mask_a * mask_b).sum(axis=1) / topk).mean())


@pytest.mark.parametrize("k", [1, 5, 10])
def test_mutual_knn_matches_platonic_rep(k):
    x, y = related(80, 16, 24, seed=k, noise=4.0)
    got = sim(x, y, {"mutual_knn_to_final": {"k": k}})["mutual_knn_to_final"]
    assert got == pytest.approx(platonic_mutual_knn(x, y, k), abs=1e-12)
    assert 0 < got < 1
    assert sim(x, 5 * x, {"mutual_knn_to_final": {"k": k}})["mutual_knn_to_final"] == 1.0


def test_mutual_knn_degenerate_inputs():
    x, y = related(12, 4, 4, seed=2)
    with pytest.warns(RuntimeWarning, match="k = 12 neighbours"):
        assert math.isnan(sim(x, y, {"mutual_knn_to_final": {"k": 12}})["mutual_knn_to_final"])
    z = x.copy()
    z[3] = 0.0
    with pytest.warns(RuntimeWarning, match="rows are zero"):
        assert math.isnan(sim(z, y, {"mutual_knn_to_final": {"k": 3}})["mutual_knn_to_final"])
    with pytest.raises(M.MetricConfigError, match=r"metrics\.mutual_knn_to_previous\.k"):
        M.resolve_params("mutual_knn_to_previous", {"k": 0})


def test_a_constant_column_leaves_the_similarities_defined():
    """One dead unit (a constant feature) in both checkpoints: every similarity stays a number
    (CCA through the pseudo-inverse on the other units), none crashes."""
    x, y = related(200, 12, 12, seed=9, noise=2.0)
    x[:, 4], y[:, 4] = 0.0, 1.5
    metrics = {
        "svcca_to_final": {},
        "pwcca_to_final": {},
        "mutual_knn_to_final": {},
    }
    got = sim(x, y, metrics)
    assert all(0 < v < 1 for v in got.values()), got
    full = sim(np.delete(x, 4, axis=1), np.delete(y, 4, axis=1), {"svcca_to_final": {}})
    assert got["svcca_to_final"] == pytest.approx(full["svcca_to_final"], rel=1e-9)
