"""Gradient PCA (ckptlens.metrics.gradient_pca) against scikit-learn's PCA."""

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ckptlens import metrics as M
from ckptlens.metrics.gradient_pca import gradient_pca, pca_top


def two_outputs(n, d, seed):
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal((d, 2))
    ga = rng.standard_normal((n, 2)) @ shared.T * [3.0] + 0.3 * rng.standard_normal((n, d)) + 1.0
    gb = rng.standard_normal((n, 2)) @ (shared + 0.5 * rng.standard_normal((d, 2))).T + 0.3 * rng.standard_normal(
        (n, d)
    )
    return ga, gb


@pytest.mark.parametrize("n, d", [(400, 12), (10, 50)])
def test_gradient_pca_matches_sklearn(n, d):
    ga, gb = two_outputs(n, d, seed=n)
    out = gradient_pca(ga, gb, n_components=3)
    pa, pb = PCA(n_components=3).fit(ga), PCA(n_components=3).fit(gb)
    np.testing.assert_allclose(out["evr_a"], pa.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(out["evr_b"], pb.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(out["variance_a"], pa.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(np.abs(out["components_a"]), np.abs(pa.components_), atol=1e-7)
    expected = np.abs(np.sum(pa.components_ * pb.components_, axis=1))
    np.testing.assert_allclose(out["cosine"], expected, atol=1e-7)


def test_registered_gradient_pca_metrics():
    ga, gb = two_outputs(200, 8, seed=1)
    gc = np.random.default_rng(2).standard_normal((200, 8))
    store = {"blocks.1.mlp|out0": ga, "blocks.1.mlp|out1": gb, "blocks.2.mlp|out0": gc, "blocks.2.mlp|out1": gc}
    rows = M.compute_family(
        "gradient_pca",
        {"gradient_pca_evr": {}, "gradient_pca_variance": {}, "gradient_pca_cosine": {"n_components": 2}},
        store,
    )
    got = {(r["layer"], r["metric"]): r["value"] for r in rows}
    ref = gradient_pca(ga, gb, 3)
    for i in range(3):
        assert got[("blocks.1.mlp|out0", f"gradient_pca_evr.pc{i + 1}")] == pytest.approx(ref["evr_a"][i])
        assert got[("blocks.1.mlp|out1", f"gradient_pca_variance.pc{i + 1}")] == pytest.approx(ref["variance_b"][i])
    for i in range(2):
        assert got[("blocks.1.mlp|out0~blocks.1.mlp|out1", f"gradient_pca_cosine.pc{i + 1}")] == pytest.approx(
            ref["cosine"][i]
        )
        assert got[("blocks.2.mlp|out0~blocks.2.mlp|out1", f"gradient_pca_cosine.pc{i + 1}")] == pytest.approx(1.0)
    assert ("blocks.1.mlp|out0~blocks.2.mlp|out0", "gradient_pca_cosine.pc1") not in got  # pairs within a layer only


def test_degenerate_gradients():
    # rank 1 after centring: later components explain 0 and have no direction
    g = np.outer(np.arange(6.0), np.ones(4))
    p = pca_top(g, 3)
    assert p["ratio"][0] == pytest.approx(1.0) and p["ratio"][1] == pytest.approx(0.0, abs=1e-12)
    assert np.isnan(p["components"][1]).all()
    with pytest.warns(RuntimeWarning):
        rows = M.compute_family("gradient_pca", {"gradient_pca_evr": {"n_components": 2}}, {"l|a": np.zeros((5, 3))})
    assert all(math.isnan(r["value"]) for r in rows) and len(rows) == 2
