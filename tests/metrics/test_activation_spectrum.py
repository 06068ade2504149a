"""Activation spectra (ckptlens.metrics.activation_spectrum): PCA against scikit-learn, RankMe,
alpha-ReQ, anisotropy, intrinsic dimension, dormant fraction against the peers' code."""

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ckptlens import metrics as M

# ---------------------------------------------------------------- activation_spectrum


@pytest.mark.parametrize("n, d", [(300, 12), (15, 40)])
def test_pca_spectrum_matches_sklearn(n, d):
    rng = np.random.default_rng(d)
    x = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + 5.0
    rows = M.compute_family(
        "activation_spectrum", {"activation_pca_evr": {"n_components": 6}, "activation_norm": {}}, {"l": x}
    )
    got = {r["metric"]: r["value"] for r in rows}
    ref = PCA().fit(x).explained_variance_ratio_
    for i in range(6):
        assert got[f"activation_pca_evr.pc{i + 1}"] == pytest.approx(ref[i], rel=1e-8, abs=1e-12)
    assert got["activation_norm"] == pytest.approx(np.mean([np.linalg.norm(row) for row in x]))


def test_pca_components_beyond_rank_explain_nothing_and_constant_is_nan():
    x = np.random.default_rng(1).standard_normal((4, 10))
    rows = M.compute_family("activation_spectrum", {"activation_pca_evr": {"n_components": 6}}, {"l": x})
    got = [r["value"] for r in rows]
    assert sum(got) == pytest.approx(1.0) and got[3] == pytest.approx(0.0, abs=1e-12) and got[4:] == [0.0, 0.0]
    with pytest.warns(RuntimeWarning):
        rows = M.compute_family(
            "activation_spectrum",
            {"activation_pca_evr": {"n_components": 2}, "activation_norm": {}},
            {"l": np.full((5, 3), 2.0)},
        )
    got = {r["metric"]: r["value"] for r in rows}
    assert math.isnan(got["activation_pca_evr.pc1"]) and got["activation_norm"] == pytest.approx(math.sqrt(12))


def stats(x, metrics):
    rows = M.compute_family("activation_spectrum", metrics, {"l": x})
    return {r["metric"]: r["value"] for r in rows}


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
    from tests.metrics.helpers import _llm_microscope

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
