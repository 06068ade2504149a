"""Gradient metrics: the existing per-batch ones against plain formulas; gradient PCA of two
outputs against scikit-learn's PCA (explained variance, ratios, components)."""

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ckptlens import metrics as M
from ckptlens.metrics.gradient_pca import gradient_pca, pca_top


def test_gradient_norm_and_cosine_plain():
    g = np.random.default_rng(0).standard_normal((4, 3, 5))
    rows = M.compute_family("gradient", {"gradient_norm": {}, "gradient_cosine": {}}, {"l": g})
    got = {r["metric"]: r["value"] for r in rows}
    flat = g.reshape(4, -1)
    assert got["gradient_norm"] == pytest.approx(np.mean([np.linalg.norm(f) for f in flat]))
    cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(flat[:-1], flat[1:])]
    assert got["gradient_cosine"] == pytest.approx(np.mean(cos))


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


# ---------------------------------------------------------------- gradient signal-to-noise ratio


def snr_plain(g, form):
    """The definitions written out over the K per-batch gradients g_k (flattened)."""
    g = g.reshape(len(g), -1)
    k = len(g)
    mean = sum(g) / k
    if form == "norm":  # ‖ḡ‖² / ((1/(K−1)) Σ_k ‖g_k − ḡ‖²)
        return float(mean @ mean / (sum((row - mean) @ (row - mean) for row in g) / (k - 1)))
    var = sum((row - mean) ** 2 for row in g) / (k - 1)  # Liu et al.'s GSNR per parameter, averaged
    return float(np.mean(mean**2 / var))


@pytest.mark.parametrize("form", ["norm", "parameter"])
def test_gradient_snr_matches_plain_formulas(form):
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((3, 5))
    g = signal + 0.7 * rng.standard_normal((6, 3, 5))  # 6 probe batches sharing a signal
    rows = M.compute_family(
        "gradient",
        {"gradient_snr": {"form": form}},
        {"l": g, "noise": rng.standard_normal((6, 3, 5))},
    )
    got = {r["layer"]: r["value"] for r in rows}
    assert got["l"] == pytest.approx(snr_plain(g, form), rel=1e-12)
    assert got["l"] > 1.0 > got["noise"]
    debiased = M.compute_family("gradient", {"gradient_snr": {"form": form, "debiased": True}}, {"l": g})
    assert debiased[0]["value"] == pytest.approx(snr_plain(g, form) - 1 / 6, rel=1e-12)


def test_gradient_snr_of_pure_noise_is_about_one_over_k():
    """E‖ḡ‖² = tr Σ / K without signal: SNR ≈ 1/K, the debiased one ≈ 0."""
    g = np.random.default_rng(2).standard_normal((4, 20000))
    rows = M.compute_family("gradient", {"gradient_snr": {"debiased": True}}, {"l": g, "m": g[:2]})
    got = {r["layer"]: r["value"] for r in rows}
    assert abs(got["l"]) < 0.02 and abs(got["m"]) < 0.03


def test_gradient_snr_degenerate_inputs():
    g = np.random.default_rng(3).standard_normal((1, 4, 3))
    same = np.repeat(np.random.default_rng(4).standard_normal((1, 6)), 3, axis=0)
    with pytest.warns(RuntimeWarning) as rec:
        rows = M.compute_family(
            "gradient",
            {"gradient_snr": {}},
            {"one_batch": g, "zero": np.zeros((3, 6)), "identical": same},
        )
    assert all(math.isnan(r["value"]) for r in rows)
    text = " ".join(str(w.message) for w in rec)
    assert "1 probe batch" in text and "all-zero gradients" in text and "no noise" in text
    with pytest.raises(M.MetricConfigError, match=r"metrics\.gradient_snr\.form"):
        M.resolve_params("gradient_snr", {"form": "sample"})
