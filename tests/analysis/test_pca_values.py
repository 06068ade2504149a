"""Values (not just shapes) of the cross-metric PCA (ckptlens.analysis.pca), against the
eigenvalues of the correlation matrix computed plainly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ckptlens.analysis import (
    EXPLAINED_COLUMNS,
    LOADINGS_COLUMNS,
    pca_explained_variance,
)
from tests.analysis.helpers import LAYERS, STEPS, make_table


def plain_ratios(x: np.ndarray) -> np.ndarray:
    """Explained variance ratios of a PCA on z-scored columns, written out plainly:
    eigenvalues of the correlation matrix, descending, normalized to sum 1."""
    corr = np.corrcoef(x, rowvar=False)
    eig = np.sort(np.linalg.eigvalsh(corr))[::-1]
    eig = np.clip(eig, 0, None)
    return eig / eig.sum()


# ------------------------------------------------------------------------------------ PCA


def test_pca_layer_mean_matches_correlation_eigenvalues(synthetic):
    table, base = synthetic
    explained, loadings, notes = pca_explained_variance(table)
    assert list(explained.columns) == EXPLAINED_COLUMNS
    assert list(loadings.columns) == LOADINGS_COLUMNS

    # matrix (a): mean over layers, one column per usable metric (alphabetical a, b, c)
    x = np.column_stack([base[m].mean(axis=1) for m in ("a", "b", "c")])
    got = explained[explained.matrix == "layer_mean"].sort_values("component")
    assert got.component.tolist() == [1, 2, 3]
    np.testing.assert_allclose(got.explained_variance_ratio, plain_ratios(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got.cumulative, np.cumsum(plain_ratios(x)), rtol=1e-9)
    assert (got.run == "toy").all()

    # the first loading vector is the top eigenvector of the correlation matrix (up to sign)
    _, vecs = np.linalg.eigh(np.corrcoef(x, rowvar=False))
    top = vecs[:, -1]
    l1 = loadings[(loadings.matrix == "layer_mean") & (loadings.component == 1)]
    assert l1.column.tolist() == ["a", "b", "c"]
    assert abs(float(l1.loading.to_numpy() @ top)) == pytest.approx(1.0, abs=1e-9)
    # sign convention: the largest-magnitude loading is positive
    assert l1.loading.to_numpy()[np.argmax(np.abs(l1.loading.to_numpy()))] > 0


def test_pca_layer_metric_matches_correlation_eigenvalues(synthetic):
    table, base = synthetic
    explained, loadings, _ = pca_explained_variance(table)
    # matrix (b): columns (layer, metric) in depth order; PCA ratios don't depend on the order
    x = np.column_stack([base[m][:, j] for j in range(len(LAYERS)) for m in ("a", "b", "c")])
    got = explained[explained.matrix == "layer_metric"].sort_values("component")
    n = min(x.shape)
    assert len(got) == n
    np.testing.assert_allclose(got.explained_variance_ratio, plain_ratios(x)[:n], rtol=1e-7, atol=1e-12)
    # loadings only for the first 3 components, named "layer|metric", unit norm
    lb = loadings[loadings.matrix == "layer_metric"]
    assert sorted(lb.component.unique()) == [1, 2, 3]
    assert "blocks.10.attn|b" in set(lb.column)
    for _, comp in lb.groupby("component"):
        assert float((comp.loading**2).sum()) == pytest.approx(1.0)
    # depth order: blocks.2 before blocks.10 (not string order)
    cols = lb[lb.component == 1].column.tolist()
    assert cols.index("blocks.2.attn|a") < cols.index("blocks.10.attn|a")


def test_pca_drops_constant_and_nan_columns_with_notes(synthetic):
    table, _ = synthetic
    explained, loadings, notes = pca_explained_variance(table)
    text = "\n".join(notes)
    # matrix (a): both bad metrics are named with their reason
    assert any("layer_mean" in n and "'const'" in n and "constant" in n for n in notes), text
    assert any("layer_mean" in n and "'hasnan'" in n and "NaN" in n for n in notes), text
    # matrix (b): every one of their (layer, metric) columns too
    for layer in LAYERS:
        assert any(f"'{layer}|const'" in n for n in notes), text
        assert any(f"'{layer}|hasnan'" in n for n in notes), text
    assert not set(loadings.column) & {"const", "hasnan"}
    assert not any(c.endswith(("|const", "|hasnan")) for c in loadings.column)


def test_pca_too_few_columns_gives_no_rows_and_note():
    rng = np.random.default_rng(1)
    shape = (len(STEPS), 1)
    table = make_table({"a": rng.normal(size=shape), "flat": np.ones(shape)}, layers=["l.0"])
    explained, loadings, notes = pca_explained_variance(table)
    # one usable column in both matrices: nothing to decompose, no crash
    assert explained.empty and loadings.empty
    assert sum("no PCA" in n for n in notes) == 2


def test_pca_too_few_steps_and_empty_table():
    table = make_table({"a": np.array([[1.0, 2.0]]), "b": np.array([[3.0, 1.0]])}, layers=["l.0", "l.1"], steps=[5])
    explained, _, notes = pca_explained_variance(table)
    assert explained.empty and any("no PCA" in n for n in notes)
    explained, loadings, notes = pca_explained_variance(table.iloc[0:0])
    assert explained.empty and loadings.empty and notes


def test_pca_layer_mean_uses_layers_finite_at_every_step():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(len(STEPS), 3))
    b = rng.normal(size=(len(STEPS), 3))
    a_holed = a.copy()
    a_holed[3, 2] = np.nan  # layer 2 of "a" has one NaN: left out of a's layer mean everywhere
    table = make_table({"a": a_holed, "b": b}, layers=["l.0", "l.1", "l.2"])
    explained, _, notes = pca_explained_variance(table)
    x = np.column_stack([a[:, :2].mean(axis=1), b.mean(axis=1)])
    got = explained[explained.matrix == "layer_mean"].explained_variance_ratio
    np.testing.assert_allclose(got, plain_ratios(x), rtol=1e-9)
    assert any("'a'" in n and "l.2" in n and "layer mean" in n for n in notes)


def test_pca_layer_mean_note_counts_the_layers_nan_steps():
    """A metric undefined at the first step (no previous checkpoint) in every layer: the note says
    each layer is NaN at 1 of the steps, not only that the mean is NaN at all of them."""
    rng = np.random.default_rng(3)
    a = rng.normal(size=(len(STEPS), 3))
    a[0, :] = np.nan
    b = rng.normal(size=(len(STEPS), 3))
    table = make_table({"a": a, "b": b}, layers=["l.0", "l.1", "l.2"])
    _, _, notes = pca_explained_variance(table)
    note = next(n for n in notes if "layer_mean" in n and "'a'" in n and "no layer" in n)
    assert f"at 1 of {len(STEPS)} step(s)" in note and "3 layer(s)" in note


def test_pca_rejects_several_runs(synthetic):
    table, _ = synthetic
    two = pd.concat([table, table.assign(run="other")])
    with pytest.raises(ValueError, match="one run"):
        pca_explained_variance(two)
