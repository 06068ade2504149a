"""Activation metrics: CKA against the HSIC definition with the centring matrix H written out,
PCA spectra against scikit-learn's PCA, linearity against a plain least-squares fit and the
study's per-sample loop, cosines against a plain loop."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import PCA

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
    cur, prev, init, final = (rng.standard_normal((50, 6)) for _ in range(4))
    rows = M.compute_family(
        "activation_similarity",
        {"cka_to_final": {}, "cka_to_previous": {}, "cka_to_initial": {}},
        {"l": cur},
        {"final": {"l": final}, "previous": {"l": prev}, "initial": {"l": init}},
    )
    got = {r["metric"]: r["value"] for r in rows}
    assert got["cka_to_final"] == pytest.approx(cka_by_definition(cur, final))
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


# ---------------------------------------------------------------- linearity and cosine between layers


def normalised(x):
    x = x - x.mean(axis=0)
    return x / np.linalg.norm(x)


def plain_linearity(x, y):
    xn, yn = normalised(x), normalised(y)
    a = np.linalg.lstsq(xn, yn, rcond=None)[0]
    return 1 - np.sum((xn @ a - yn) ** 2), xn, yn, a


def study_loop(x, y):
    """The per-sample loop of the study: one sample at a time."""
    _, xn, yn, a = plain_linearity(x, y)
    return np.array([1 - np.sum((a.T @ xn[i] - yn[i]) ** 2) for i in range(len(xn))])


def make_layers(n=120, d=10, seed=0):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, d))
    layers = {}
    for i in range(4):
        layers[f"blocks.{i}"] = h
        h = h + np.tanh(h @ rng.standard_normal((d, d))) + 0.1 * rng.standard_normal((n, d))
    # given out of order, with a two-digit index: layer order is by the first integer
    return {k: layers[k] for k in ["blocks.2", "blocks.0", "blocks.3", "blocks.1"]}


def pair_rows(layers, metrics):
    rows = M.compute_family("activation_pairs", metrics, layers, run="r", step=2)
    return {(r["layer"], r["metric"]): r["value"] for r in rows}


def test_linearity_scores_match_least_squares():
    layers = make_layers()
    got = pair_rows(layers, {"linearity_score": {}, "linearity_score_no_residual": {}})
    assert sorted({label for label, _ in got}) == ["blocks.0~blocks.1", "blocks.1~blocks.2", "blocks.2~blocks.3"]
    for i in range(3):
        x, y = layers[f"blocks.{i}"], layers[f"blocks.{i + 1}"]
        label = f"blocks.{i}~blocks.{i + 1}"
        assert got[(label, "linearity_score")] == pytest.approx(plain_linearity(x, y)[0], abs=1e-10)
        assert got[(label, "linearity_score_no_residual")] == pytest.approx(plain_linearity(x, y - x)[0], abs=1e-10)
        assert 0 < got[(label, "linearity_score_no_residual")] < got[(label, "linearity_score")] < 1


def test_linear_layers_score_one():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((50, 6))
    got = pair_rows({"a.0": x, "a.1": 3 * x @ rng.standard_normal((6, 8)) + 1.0}, {"linearity_score": {}})
    assert got[("a.0~a.1", "linearity_score")] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("scale", ["n", "none"])
def test_per_sample_linearity_matches_the_study_loop(scale):
    layers = make_layers(seed=4)
    qs = [0.05, 0.5, 0.9]
    got = pair_rows(layers, {"linearity_per_sample": {"quantiles": qs, "scale": scale}})
    for i in range(3):
        x, y = layers[f"blocks.{i}"], layers[f"blocks.{i + 1}"]
        loop = study_loop(x, y)
        if scale == "n":
            loop = 1 - len(x) * (1 - loop)
            assert np.mean(loop) == pytest.approx(plain_linearity(x, y)[0])
        label = f"blocks.{i}~blocks.{i + 1}"
        assert got[(label, "linearity_per_sample.mean")] == pytest.approx(loop.mean(), abs=1e-10)
        for q, key in zip(qs, ["p5", "p50", "p90"]):
            assert got[(label, f"linearity_per_sample.{key}")] == pytest.approx(np.quantile(loop, q), abs=1e-10)


def test_consecutive_cosine_matches_loop():
    layers = make_layers(seed=5)
    layers["blocks.1"][3] = 0.0  # a zero output vector: left out
    got = pair_rows(layers, {"consecutive_cosine": {"quantiles": [0.25, 0.75]}})
    for i in range(3):
        x, y = layers[f"blocks.{i}"], layers[f"blocks.{i + 1}"]
        cos = np.array(
            [
                a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
                for a, b in zip(x, y)
                if np.linalg.norm(a) and np.linalg.norm(b)
            ]
        )
        label = f"blocks.{i}~blocks.{i + 1}"
        assert got[(label, "consecutive_cosine.mean")] == pytest.approx(cos.mean())
        assert got[(label, "consecutive_cosine.p25")] == pytest.approx(np.quantile(cos, 0.25))
        assert got[(label, "consecutive_cosine.p75")] == pytest.approx(np.quantile(cos, 0.75))


def test_degenerate_pairs_are_nan_with_warning():
    rng = np.random.default_rng(6)
    layers = {"l.0": np.ones((20, 4)), "l.1": rng.standard_normal((20, 4)), "l.2": rng.standard_normal((20, 5))}
    with pytest.warns(RuntimeWarning):
        got = pair_rows(
            layers, {"linearity_score": {}, "linearity_score_no_residual": {}, "consecutive_cosine": {"quantiles": []}}
        )
    assert math.isnan(got[("l.0~l.1", "linearity_score")])  # constant layer
    assert not math.isnan(got[("l.1~l.2", "linearity_score")])
    assert math.isnan(got[("l.1~l.2", "linearity_score_no_residual")])  # widths differ: no Y − X
    assert math.isnan(got[("l.1~l.2", "consecutive_cosine.mean")])


def test_linearity_warns_when_the_probe_has_no_more_samples_than_features():
    import warnings

    from ckptlens.metrics import compute_family

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 32))
    store = {"blocks.0": x, "blocks.1": np.tanh(x @ rng.normal(size=(32, 32)))}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = compute_family("activation_pairs", {"linearity_score": {}}, store)
    assert rows[0]["value"] == pytest.approx(1.0)  # exact fit by construction: n - 1 < d
    assert any("20 probe samples for 32 features" in str(w.message) for w in caught)


def test_minilm_probe_with_every_task_sentence(tmp_path):
    from ckptlens.sources.minilm import task_sentences, write_probe

    lines = write_probe(tmp_path / "all.txt", which="all").read_text().splitlines()
    assert lines == [f"{y}\t{t}" for y, t in task_sentences()] and len(lines) == 384
    assert len(write_probe(tmp_path / "eval.txt").read_text().splitlines()) == 64
    with pytest.raises(ValueError, match="which"):
        write_probe(tmp_path / "x.txt", which="train")


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
        {"cka_to_final": {"debiased": True}, "cka_to_previous": {}},
        {"l": x},
        {"final": {"l": y}, "previous": {"l": y}},
    )
    got = {r["metric"]: r["value"] for r in rows}
    assert got["cka_to_final"] == pytest.approx(expected, rel=1e-9)
    assert got["cka_to_previous"] == pytest.approx(cka_by_definition(x, y), rel=1e-10)  # default: biased
    ckatorch = pytest.importorskip("ckatorch")  # pip install ckatorch==1.0.3 (in the test extra)
    import torch

    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    assert got["cka_to_final"] == pytest.approx(ckatorch.cka_base(tx, ty, unbiased=True).item(), rel=1e-9)
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
            "activation_similarity", {"cka_to_final": {"debiased": True}}, {"l": np.eye(3)}, {"final": {"l": np.eye(3)}}
        )
    assert math.isnan(rows[0]["value"])
    with pytest.raises(M.MetricConfigError, match=r"metrics\.cka_to_final\.debiased"):
        M.resolve_params("cka_to_final", {"debiased": "yes"})


# ---------------------------------------------------------------- linearity on a rank-deficient layer


def microscope_procrustes(x, y, dtype):
    """LLM-Microscope's ``procrustes_similarity`` (``get_est_svd``) written out: the reciprocal of
    every singular value of X, no rank cutoff."""
    x = (x - x.mean(0)).astype(dtype)
    y = (y - y.mean(0)).astype(dtype)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    u, s, vh = np.linalg.svd(x, full_matrices=False)
    a = (vh.T * (1 / s)[None, :]) @ u.T @ y
    return float(1 - np.sum((x @ a - y) ** 2))


def test_linearity_score_is_right_on_a_rank_deficient_layer():
    """X of rank 8 in 64 features (float32 activations), Y a noisy linear map of X: least squares
    explains 98 % of Y. LLM-Microscope's formula inverts the ~1e-8 singular values of X's null
    space too, and its float32 result is far off (−5.3 with numpy's LAPACK here, 0.60 with torch's;
    in float64 the error is ~2e-5)."""
    rng = np.random.default_rng(0)
    n, d, r = 500, 64, 8
    x = (rng.standard_normal((n, r)) @ rng.standard_normal((r, d))).astype(np.float32)
    y = x @ rng.standard_normal((d, d)) + 1.2 * rng.standard_normal((n, d)) * np.linalg.norm(x) / np.sqrt(n * d)
    y = y.astype(np.float32)
    got = pair_rows({"l.0": x, "l.1": y}, {"linearity_score": {}})[("l.0~l.1", "linearity_score")]
    expected = plain_linearity(x.astype(np.float64), y.astype(np.float64))[0]  # min-norm lstsq (rcond)
    assert got == pytest.approx(expected, abs=1e-9) and 0.97 < got < 0.99
    assert microscope_procrustes(x, y, np.float32) < 0.9  # far from 0.98
    assert microscope_procrustes(x, y, np.float64) == pytest.approx(got, abs=1e-4)  # 1/σ amplifies rounding
    micro = _llm_microscope()
    if micro is not None:  # the package itself (torch, float32 as given): as wrong
        import torch

        assert micro.procrustes_similarity(torch.from_numpy(x), torch.from_numpy(y)) < 0.9


def _llm_microscope():
    """llm-microscope 0.0.7's functions.py, loaded by path (``import llm_microscope`` fails: its
    __init__ imports a module it does not ship); None where it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_microscope")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = f"{spec.submodule_search_locations[0]}/functions.py"
    mod_spec = importlib.util.spec_from_file_location("llm_microscope_functions", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod
