"""task_vector_pca against scikit-learn's PCA (centred) and a plain SVD (uncentred)."""

import math

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ckptlens.task_vectors.pca import task_vector_pca


def runs(seed=0, n_runs=5):
    rng = np.random.default_rng(seed)
    base = {"a": rng.standard_normal((6, 4)), "b": rng.standard_normal(7), "frozen": rng.standard_normal((3, 3))}
    shared = rng.standard_normal((6, 4))
    ft = []
    for _ in range(n_runs):
        ft.append(
            {
                "a": base["a"] + shared + 0.3 * rng.standard_normal((6, 4)),
                "b": base["b"] + rng.standard_normal(7),
                "frozen": base["frozen"].copy(),
            }
        )
    return base, ft


def table(rows):
    return {(r["layer"], r["metric"]): r["value"] for r in rows}


def test_matches_sklearn_pca_per_layer():
    base, ft = runs()
    with pytest.warns(RuntimeWarning, match="frozen"):
        got = table(task_vector_pca(base, ft, n_components=3, run="seeds"))
    for layer in ("a", "b"):
        taus = np.stack([(f[layer] - base[layer]).ravel() for f in ft])
        pca = PCA(n_components=3).fit(taus)
        for i in range(3):
            assert got[(layer, f"task_vector_pca_evr.pc{i + 1}")] == pytest.approx(
                pca.explained_variance_ratio_[i], rel=1e-9
            )
            assert got[(layer, f"task_vector_pca_variance.pc{i + 1}")] == pytest.approx(
                pca.explained_variance_[i], rel=1e-9
            )
        assert got[(layer, "task_vector_pca_evr.sum")] == pytest.approx(pca.explained_variance_ratio_.sum(), rel=1e-9)
        assert got[(layer, "task_vector_pca_variance.sum")] == pytest.approx(pca.explained_variance_.sum(), rel=1e-9)
    # all-zero task vectors: zeros, not NaN
    assert all(got[("frozen", f"task_vector_pca_evr.pc{i}")] == 0.0 for i in (1, 2, 3))
    assert got[("frozen", "task_vector_pca_variance.sum")] == 0.0


def test_uncentred_against_plain_svd_and_extra_components():
    base, ft = runs(1, n_runs=3)
    with pytest.warns(RuntimeWarning):
        got = table(task_vector_pca(base, ft, n_components=4, center=False))
    taus = np.stack([(f["a"] - base["a"]).ravel() for f in ft])
    s = np.linalg.svd(taus, compute_uv=False)
    for i in range(3):
        assert got[("a", f"task_vector_pca_evr.pc{i + 1}")] == pytest.approx(s[i] ** 2 / (s**2).sum(), rel=1e-9)
        assert got[("a", f"task_vector_pca_variance.pc{i + 1}")] == pytest.approx(s[i] ** 2 / 3, rel=1e-9)
    assert got[("a", "task_vector_pca_evr.pc4")] == 0.0  # only 3 runs
    assert got[("a", "task_vector_pca_evr.pc1")] > 0.9  # the shared direction dominates uncentred


@pytest.mark.filterwarnings("ignore:.*all task vectors are zero")
def test_rows_nan_policy_and_errors():
    base, ft = runs(2, n_runs=2)
    ft[1]["b"] = ft[1]["b"] * np.nan
    with pytest.warns(RuntimeWarning, match="layer 'b': task vectors have NaN"):
        rows = task_vector_pca(base, ft, n_components=1, run="r", step=9)
    assert {(r["run"], r["step"]) for r in rows} == {("r", 9)}
    got = table(rows)
    assert math.isnan(got[("b", "task_vector_pca_evr.pc1")]) and not math.isnan(got[("a", "task_vector_pca_evr.pc1")])
    with pytest.raises(ValueError, match="at least 2"):
        task_vector_pca(base, ft[:1])
    with pytest.raises(ValueError, match="shape"):
        task_vector_pca(base, [ft[0], {**ft[0], "a": np.zeros(3)}])
    with pytest.raises(ValueError, match="no layer"):
        task_vector_pca(base, [ft[0], {"a": ft[0]["a"]}])
