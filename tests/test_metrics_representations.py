"""Representation metrics of the activation families against the peers' code, written out where
the peer is not a pip package (or drags torchvision): SVCCA (Raghu et al.'s recipe on Google's
cca_core arithmetic), PWCCA (pico-analyze's compute_pwcca), mutual k-NN (platonic-rep), RankMe
and α-ReQ (reptrix: needs torchvision), anisotropy and TwoNN (LLM-Microscope: the package itself
where installed, loaded by path), τ-dormant units (ReDo's estimate_neuron_score)."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M


def sim(x, ref, metrics, reference="final"):
    rows = M.compute_family("activation_similarity", metrics, {"l": x}, {reference: {"l": ref}})
    return {r["metric"]: r["value"] for r in rows}


def stats(x, metrics):
    rows = M.compute_family("activation_spectrum", metrics, {"l": x})
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


# ---------------------------------------------------------------- RankMe, α-ReQ (reptrix)


def reptrix_eigenspectrum(acts, max_eigenvals=2048):
    """reptrix ``utils.get_eigenspectrum``: PCA explained-variance ratios of the centred features."""
    from sklearn.decomposition import PCA

    feats = acts.reshape(acts.shape[0], -1)
    feats = feats - feats.mean(axis=0)
    pca = PCA(n_components=min(max_eigenvals, *feats.shape), svd_solver="full").fit(feats)
    return pca.explained_variance_ratio_


def reptrix_rank(eigen):
    """reptrix ``rankme.get_rank``."""
    eigen_norm = eigen / np.sum(np.abs(eigen)) + 1e-7
    return float(np.exp(-np.sum(eigen_norm * np.log(eigen_norm))))


def reptrix_alpha(eigen, trange):
    """reptrix ``alpha.get_powerlaw`` (Stringer & Pachitariu's fit): weights 1/rank in float32."""
    y = np.log(np.abs(eigen))[trange][:, None]
    trange = trange + 1
    x = np.concatenate((-np.log(trange)[:, None], np.ones((trange.size, 1))), axis=1)
    w = 1.0 / trange.astype(np.float32)[:, None]
    return float(np.linalg.solve(x.T @ (x * w), (w * x).T @ y).flatten()[0])


def garrido_rankme(z):
    """RankMe (Garrido et al. 2023, eq. 1): singular values of the raw embeddings, ε = 1e-7."""
    s = np.linalg.svd(z, compute_uv=False)
    p = s / np.sum(np.abs(s)) + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


@pytest.mark.parametrize("n, d", [(600, 200), (150, 300)])
def test_rankme_and_alpha_req_match_reptrix_and_garrido(n, d):
    rng = np.random.default_rng(d)
    z = rng.standard_normal((n, d)) * np.arange(1, d + 1) ** -0.6 + 0.5
    got = stats(z, {"rankme": {}, "alpha_req": {}})
    cov = stats(z, {"rankme": {"variant": "covariance"}})["rankme"]
    eig = reptrix_eigenspectrum(z)
    assert got["rankme"] == pytest.approx(garrido_rankme(z), rel=1e-9)
    assert cov == pytest.approx(reptrix_rank(eig), rel=1e-9)
    assert got["alpha_req"] == pytest.approx(reptrix_alpha(eig, np.arange(10, 100)), rel=1e-6)
    tracing = stats(z, {"alpha_req": {"ranks": [12, 100]}})["alpha_req"]
    assert tracing == pytest.approx(reptrix_alpha(eig, np.arange(11, 100)), rel=1e-6)


def test_alpha_req_needs_enough_eigenvalues():
    z = np.random.default_rng(1).standard_normal((300, 40))
    with pytest.warns(RuntimeWarning, match="40 eigenvalues"):
        assert math.isnan(stats(z, {"alpha_req": {}})["alpha_req"])
    assert stats(z, {"alpha_req": {"ranks": [2, 30]}})["alpha_req"] > 0
    with pytest.raises(M.MetricConfigError, match=r"metrics\.alpha_req\.ranks"):
        M.resolve_params("alpha_req", {"ranks": [100, 10]})


# ---------------------------------------------------------------- anisotropy, TwoNN (LLM-Microscope)


def llm_microscope():
    from test_metrics_activations import _llm_microscope

    mod = _llm_microscope()
    if mod is None:
        pytest.skip("llm-microscope is not installed (pip install llm-microscope==0.0.7 --no-deps)")
    return mod


def test_anisotropy_definitions():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((300, 32))
    e[:, 0] *= 10
    e += 3.0
    got = stats(e, {"anisotropy": {}, "anisotropy_microscope": {}, "activation_pca_evr": {"n_components": 1}})
    unit = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = unit @ unit.T
    assert got["anisotropy"] == pytest.approx((cos.sum() - len(e)) / (len(e) * (len(e) - 1)), rel=1e-12)
    centred = e - e.mean(axis=0)
    s = np.linalg.svd(centred, compute_uv=False)
    assert got["anisotropy_microscope"] == pytest.approx(s[0] ** 2 / np.sum(s**2), rel=1e-12)
    assert got["anisotropy_microscope"] == got["activation_pca_evr.pc1"]
    assert got["anisotropy"] != pytest.approx(got["anisotropy_microscope"], abs=0.01)  # not the same thing
    torch = pytest.importorskip("torch")
    assert got["anisotropy_microscope"] == pytest.approx(
        llm_microscope().calculate_anisotropy_torch(torch.from_numpy(e)), rel=1e-10
    )


def microscope_twonn(emb, reduction_factor=5):
    """LLM-Microscope ``intrinsic_dimension`` written out with numpy (its loop of pairwise distances)."""
    x = emb - emb.mean(axis=0)
    x = x / np.linalg.norm(x, axis=1).mean()
    n = len(x)
    r1, r2 = np.empty(n), np.empty(n)
    for i in range(n):
        d = np.sort(np.delete(np.linalg.norm(x[i] - x, axis=1), i))
        r1[i], r2[i] = d[0], d[1]
    bad = r1 < 1e-8
    mu = np.sort(np.where(bad, -1.0, r2 / np.where(bad, 1e-8, r1)))
    u = int((mu <= 1 + 1e-8).sum())
    mu = mu[u:]
    m = len(mu)
    f = np.arange(1 + u, m + 1 + u) / (m + u)
    k = min(m // reduction_factor, m - 1)
    lm, ld = np.log(mu[:k]), -np.log(1 - f[:k])
    return float((lm * ld).sum() / (lm * lm).sum())


def facco_twonn(emb):
    x = emb
    d = np.linalg.norm(x[:, None] - x[None], axis=2)
    np.fill_diagonal(d, np.inf)
    d.sort(axis=1)
    mu = np.sort(d[:, 1] / d[:, 0])
    k = int(len(mu) * 0.9)
    lm, ld = np.log(mu[:k]), -np.log(1 - np.arange(k) / len(mu))
    return float((lm * ld).sum() / (lm * lm).sum())


@pytest.mark.parametrize("true_dim", [2, 5])
def test_intrinsic_dimension_matches_llm_microscope(true_dim):
    rng = np.random.default_rng(true_dim)
    p = rng.standard_normal((400, true_dim)) @ rng.standard_normal((true_dim, 30)) + 1.0
    facco = stats(p, {"intrinsic_dimension": {"variant": "twonn"}})["intrinsic_dimension"]
    assert facco == pytest.approx(facco_twonn(p), rel=1e-10)
    assert abs(facco - true_dim) < 0.5
    p[7] = p[3]  # a duplicated token: μ = −1, dropped by LLM-Microscope
    got = stats(p, {"intrinsic_dimension": {}})["intrinsic_dimension"]
    assert got == pytest.approx(microscope_twonn(p), rel=1e-10)
    torch = pytest.importorskip("torch")
    peer = llm_microscope().intrinsic_dimension(torch.from_numpy(p), "cpu")
    assert got == pytest.approx(peer, rel=1e-6)  # it keeps r1, r2 in float32 (torch.tensor of a list)


# ---------------------------------------------------------------- dormant units (ReDo)


def redo_dormant_fraction(act, tau):
    """dopamine labs/redo ``estimate_neuron_score`` (mean |activation| per neuron over all but the
    last axis, divided by its mean + 1e-9) and the ≤ τ test."""
    score = np.mean(np.abs(act), axis=tuple(range(act.ndim - 1)))
    score = score / (np.mean(score) + 1e-9)
    return float(np.mean(score <= tau))


@pytest.mark.parametrize("tau", [0.0, 0.025, 0.1])
def test_dormant_fraction_matches_redo(tau):
    rng = np.random.default_rng(3)
    h = np.maximum(rng.standard_normal((256, 64)) + rng.normal(0, 2, 64), 0.0)  # ReLU units
    h[:, :5] = 0.0  # dead
    h[:, 5:9] *= 0.02  # nearly dead
    got = stats(h, {"dormant_fraction": {"tau": tau}})["dormant_fraction"]
    assert got == pytest.approx(redo_dormant_fraction(h, tau))
    assert got >= 5 / 64


def test_dormant_fraction_of_a_dead_layer_and_parameter_check():
    assert stats(np.zeros((10, 4)), {"dormant_fraction": {}})["dormant_fraction"] == 1.0
    with pytest.raises(M.MetricConfigError, match=r"metrics\.dormant_fraction\.tau"):
        M.resolve_params("dormant_fraction", {"tau": -0.1})


def test_constant_activations_are_nan_with_warnings():
    with pytest.warns(RuntimeWarning) as rec:
        got = stats(np.full((20, 6), 2.0), {"rankme": {"variant": "covariance"}, "anisotropy_microscope": {}})
    assert all(math.isnan(v) for v in got.values())
    assert "rankme" in " ".join(str(w.message) for w in rec)
    assert stats(np.full((20, 6), 2.0), {"anisotropy": {}})["anisotropy"] == pytest.approx(1.0)


def test_a_constant_column_leaves_the_similarities_defined():
    """One dead unit (a constant feature) in both checkpoints: every similarity stays a number
    (CCA through the pseudo-inverse on the other units), none crashes."""
    x, y = related(200, 12, 12, seed=9, noise=2.0)
    x[:, 4], y[:, 4] = 0.0, 1.5
    metrics = {
        "cka_to_final": {"debiased": True},
        "svcca_to_final": {},
        "pwcca_to_final": {},
        "mutual_knn_to_final": {},
    }
    got = sim(x, y, metrics)
    assert all(0 < v < 1 for v in got.values()), got
    full = sim(np.delete(x, 4, axis=1), np.delete(y, 4, axis=1), {"svcca_to_final": {}, "cka_to_final": {}})
    assert got["svcca_to_final"] == pytest.approx(full["svcca_to_final"], rel=1e-9)
