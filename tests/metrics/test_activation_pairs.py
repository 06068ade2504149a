"""Activation pairs (ckptlens.metrics.activation_pairs): linearity against a plain least-squares fit
and the study's per-sample loop, consecutive cosine."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M
from tests.metrics.helpers import _llm_microscope

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
