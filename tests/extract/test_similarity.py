"""Similarity terms (ckptlens.extract.similarity): what linear CKA to the final checkpoint is a
function of, against the plain formulas on the centred activations."""

import numpy as np
import pytest

from ckptlens.extract.similarity import TERMS, Centred, layer_terms, similarity_terms


def centred(a):
    return a - a.mean(axis=0)


@pytest.mark.parametrize("n, d1, d2", [(300, 6, 9), (10, 50, 40)], ids=["feature-form", "gram-form"])
def test_terms_are_the_plain_formulas(n, d1, d2):
    rng = np.random.default_rng(n)
    x, y = rng.standard_normal((n, d1)) + 3.0, rng.standard_normal((n, d2)) - 1.0
    got = dict(zip(TERMS, layer_terms(Centred(x), Centred(y))))
    xc, yc = centred(x), centred(y)
    rx, ry = (xc**2).sum(axis=1), (yc**2).sum(axis=1)
    want = {
        "xy": np.linalg.norm(xc.T @ yc) ** 2,
        "xx": np.linalg.norm(xc.T @ xc) ** 2,
        "yy": np.linalg.norm(yc.T @ yc) ** 2,
        "rxry": rx @ ry,
        "rxrx": rx @ rx,
        "ryry": ry @ ry,
        "sx": rx.sum(),
        "sy": ry.sum(),
        "n": n,
    }
    for k in TERMS:
        assert got[k] == pytest.approx(want[k], rel=1e-11), k


def test_float32_captures_are_promoted_before_centring():
    """Activations arrive as float32 captures; the terms are float64 throughout (a float32
    centring of values around 1e3 would lose the small differences)."""
    rng = np.random.default_rng(5)
    x = (1e3 + rng.standard_normal((64, 8))).astype(np.float32)
    y = (rng.standard_normal((64, 8)) - 1e3).astype(np.float32)
    got = layer_terms(Centred(x), Centred(y))
    exact = layer_terms(Centred(x.astype(np.float64)), Centred(y.astype(np.float64)))
    np.testing.assert_allclose(got, exact, rtol=1e-12)


def test_every_layer_and_nan_where_the_reference_has_none():
    rng = np.random.default_rng(1)
    acts = {"a": rng.standard_normal((20, 4)), "b": rng.standard_normal((20, 3))}
    terms = similarity_terms(acts, {"a": Centred(acts["a"])})
    assert list(terms) == ["a", "b"] and terms["a"].dtype == np.float64 and terms["a"].shape == (len(TERMS),)
    assert terms["a"][TERMS.index("xy")] == pytest.approx(terms["a"][TERMS.index("xx")])  # itself
    assert np.isnan(terms["b"]).all()  # the final checkpoint failed: no terms, CKA NaN downstream


def test_other_probe_tokens_are_refused():
    with pytest.raises(ValueError, match="not the same probe tokens"):
        layer_terms(Centred(np.ones((5, 2))), Centred(np.ones((6, 2))))
