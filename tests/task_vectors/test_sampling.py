"""Sampling weights from the task-vector principal components (ckptlens.task_vectors.sampling) against
plainly written numpy / scikit-learn computations (end to end through the workflow:
tests/workflow/test_task_vector_sampling.py)."""

import math
from collections.abc import Mapping

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ckptlens.task_vectors.sampling import (
    TaskVectorSampler,
    check_shared_base,
    fit_layer,
    run_weights,
)
from tests.task_vectors.helpers import runs


def taus(base, ft, layer):
    return np.stack([(f[layer].astype(np.float64) - base[layer].astype(np.float64)).ravel() for f in ft])


def aligned(got, want):
    """got's rows with the sign of want's rows (components are defined up to sign)."""
    return got * np.sign(np.sum(got * want, axis=1, keepdims=True))


@pytest.mark.parametrize("chunk", [1 << 20, 5])
def test_basis_matches_sklearn_pca(chunk):
    base, ft = runs()
    s = TaskVectorSampler(base, ft, chunk=chunk)
    assert s.sampled_layers() == ["a", "b", "frozen"]  # "ids" (integers) is not sampled
    for layer in ("a", "b"):
        t = taus(base, ft, layer)
        pca = PCA().fit(t)
        fit = s.fit(layer)
        assert fit.n_components == 4  # 5 runs, centred: rank 4
        np.testing.assert_allclose(fit.sigma, np.sqrt(pca.explained_variance_[:4]), rtol=1e-9)
        np.testing.assert_allclose(fit.explained_variance_ratio, pca.explained_variance_ratio_[:4], rtol=1e-9)
        pcs = s.components(layer)
        np.testing.assert_allclose(aligned(pcs, pca.components_[:4]), pca.components_[:4], atol=1e-9)
        np.testing.assert_allclose(pcs @ pcs.T, np.eye(4), atol=1e-9)
        # z = 0: the base plus the mean task vector = the plain average of the fine-tuned weights
        mean = s.mean()[layer]
        assert mean.dtype == base[layer].dtype and mean.shape == base[layer].shape
        want = base[layer].astype(np.float64) + pca.mean_.reshape(base[layer].shape)
        np.testing.assert_allclose(mean, want.astype(base[layer].dtype), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(mean, np.mean([f[layer] for f in ft], axis=0), rtol=1e-6, atol=1e-6)
    # a layer without variance across runs has no component: its points are base + τ̄ exactly
    assert s.fit("frozen").n_components == 0
    np.testing.assert_array_equal(s.sample(3)["frozen"], ft[0]["frozen"])
    assert s.sample(0)["ids"] is base["ids"] or np.array_equal(s.sample(0)["ids"], base["ids"])
    n_comp = TaskVectorSampler(base, ft, n_components=2)
    np.testing.assert_allclose(n_comp.fit("a").sigma, s.fit("a").sigma[:2])


@pytest.mark.parametrize("coupling", ["joint", "independent"])
def test_samples_lie_in_the_span_with_the_formula(coupling):
    base, ft = runs(1)
    s = TaskVectorSampler(base, ft, scale=0.7, seed=3, coupling=coupling)
    for i in range(3):
        pt = s.sample(i)
        assert set(pt) == set(base) and len(pt) == len(base)
        for layer in ("a", "b"):
            fit, pcs = s.fit(layer), s.components(layer)
            mean_tau = taus(base, ft, layer).mean(axis=0)
            dev = pt[layer].astype(np.float64).ravel() - base[layer].astype(np.float64).ravel() - mean_tau
            tol = 1e-5 if layer == "a" else 1e-9  # "a" is stored as float32
            np.testing.assert_allclose(dev - pcs.T @ (pcs @ dev), 0, atol=tol)  # in the span
            z = s.z(i, layer)
            np.testing.assert_allclose(pcs @ dev, z * fit.sigma, atol=tol)  # θ = θ_b + τ̄ + Σ z σ pc
            # the same point written as a combination of the runs' task vectors
            a = run_weights(fit, z)
            assert a.sum() == pytest.approx(1.0)
            np.testing.assert_allclose(a @ taus(base, ft, layer), dev + mean_tau, atol=tol)


@pytest.mark.parametrize("coupling", ["joint", "independent"])
def test_empirical_covariance_of_the_samples(coupling):
    base, ft = runs(2, n_runs=4)
    s = TaskVectorSampler(base, ft, coupling=coupling, seed=11)
    n = 6000
    xa = np.stack([s.sample(i)["b"] for i in range(n)])
    xb = np.stack([s.sample(i)["a"].astype(np.float64).ravel() for i in range(n)])
    want = sum(sg**2 * np.outer(p, p) for sg, p in zip(s.fit("b").sigma, s.components("b")))
    got = np.cov(xa, rowvar=False)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() < 0.06 * scale, (np.abs(got - want).max(), scale)
    np.testing.assert_allclose(xa.mean(axis=0), s.mean()["b"], atol=0.06 * math.sqrt(scale))
    # across layers: the runs' own cross-covariance (joint) or none (independent)
    ta, tb = taus(base, ft, "b"), taus(base, ft, "a")
    runs_cross = (ta - ta.mean(0)).T @ (tb - tb.mean(0)) / (len(ft) - 1)
    cross = (xa - xa.mean(0)).T @ (xb - xb.mean(0)) / (n - 1)
    ref = np.sqrt(np.outer(np.diag(want), np.diag(np.cov(xb, rowvar=False)))).max()
    if coupling == "joint":
        assert np.abs(cross - runs_cross).max() < 0.06 * ref
    else:
        assert np.abs(cross).max() < 0.06 * ref and np.abs(runs_cross).max() > 0.3 * ref


def test_seeded_reproducible_and_order_free():
    base, ft = runs(3)
    one = TaskVectorSampler(base, ft, seed=5)
    two = TaskVectorSampler(base, ft, seed=5)
    _ = two.sample(7)["b"]  # another sample first, layers in another order: no influence
    for layer in ("b", "a"):
        np.testing.assert_array_equal(one.sample(2)[layer], two.sample(2)[layer])
    assert not np.allclose(one.sample(2)["b"], one.sample(3)["b"])
    assert not np.allclose(one.sample(2)["b"], TaskVectorSampler(base, ft, seed=6).sample(2)["b"])
    # the joint draw is one vector in run space for all layers; independent draws differ per layer
    assert np.allclose(one.fit("a").loadings @ one.z(0, "a"), one.fit("b").loadings @ one.z(0, "b"))
    ind = TaskVectorSampler(base, ft, seed=5, coupling="independent")
    assert not np.allclose(ind.fit("a").loadings @ ind.z(0, "a"), ind.fit("b").loadings @ ind.z(0, "b"))
    # scale 0: every sample is the mean
    zero = TaskVectorSampler(base, ft, scale=0.0)
    np.testing.assert_array_equal(zero.sample(4)["b"], zero.mean()["b"])


def test_lazy_reads_layers_and_restricted_patterns():
    class Counting(Mapping):
        def __init__(self, d, log):
            self.d, self.log = d, log

        def __getitem__(self, k):
            self.log.append(k)
            return self.d[k]

        def __iter__(self):
            return iter(self.d)

        def __len__(self):
            return len(self.d)

    base, ft = runs(4)
    log = []
    s = TaskVectorSampler(Counting(base, log), {f"r{j}": Counting(f, log) for j, f in enumerate(ft)}, layers=["b"])
    assert s.runs == [f"r{j}" for j in range(5)] and log == []
    _ = s.sample(0)["b"]
    assert set(log) == {"b"}
    log.clear()
    np.testing.assert_array_equal(s.sample(0)["a"], base["a"])  # not selected: the base's
    assert log == ["a"]


def test_shared_base_check_and_errors():
    base, ft = runs(5, n_runs=3)
    starts = {"same": dict(base), "other": {**base, "b": base["b"] + 1}}
    assert check_shared_base(base, starts) == {"other": ["b"]}
    assert check_shared_base(base, starts, layers=["a"]) == {}
    with pytest.raises(ValueError, match="at least 2"):
        TaskVectorSampler(base, ft[:1])
    with pytest.raises(ValueError, match="shape"):
        TaskVectorSampler(base, [ft[0], {**ft[1], "a": np.zeros(3)}]).mean()["a"]
    with pytest.raises(ValueError, match="run 'run1' has no layer 'b'"):
        TaskVectorSampler(base, [ft[0], {"a": ft[1]["a"]}])
    with pytest.raises(ValueError, match="NaN"):
        TaskVectorSampler(base, [ft[0], {**ft[1], "b": ft[1]["b"] * np.nan}]).sample(0)["b"]
    with pytest.raises(ValueError, match="match none"):
        TaskVectorSampler(base, ft, layers=["nothing.*"])
    with pytest.raises(ValueError, match="coupling"):
        TaskVectorSampler(base, ft, coupling="shared")
    assert fit_layer(base["b"], [f["b"] for f in ft], 1).n_components == 1
    from ckptlens.config import sample_settings

    config = {
        "runs": {"r": {"source": {"type": "table", "path": "x"}}},
        "task_vectors": {"t": {"base_run": "r", "runs": ["r", "r"], "sample": {"evaluate": "minilm_sentiment"}}},
    }
    assert sample_settings(config, "t") == {
        "n_samples": 8,
        "scale": 1.0,
        "seed": 0,
        "n_components": None,
        "coupling": "joint",
        "layers": ["**"],
        "evaluate": {"task": "minilm_sentiment", "tokenizer": None, "max_len": 32},
    }
