"""weight_update metrics against plain formulas."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M

ALL = [
    "update_norm_previous",
    "update_norm_initial",
    "relative_update_norm_previous",
    "relative_update_norm_initial",
    "update_cosine",
]


def run(cur, prev=None, prev2=None, init=None, metrics=ALL):
    refs = {k: {"w": v} for k, v in {"previous": prev, "previous2": prev2, "initial": init}.items() if v is not None}
    rows = M.compute_family("weight_update", {m: {} for m in metrics}, {"w": cur}, refs)
    return {r["metric"]: r["value"] for r in rows}


def test_update_metrics_match_plain_formulas():
    rng = np.random.default_rng(0)
    w0, w1, w2, w3 = (rng.standard_normal((6, 4)) for _ in range(4))
    v = run(w3, prev=w2, prev2=w1, init=w0)
    fro = lambda a: math.sqrt((a**2).sum())  # noqa: E731
    assert v["update_norm_previous"] == pytest.approx(fro(w3 - w2), rel=1e-12)
    assert v["update_norm_initial"] == pytest.approx(fro(w3 - w0), rel=1e-12)
    assert v["relative_update_norm_previous"] == pytest.approx(fro(w3 - w2) / fro(w3), rel=1e-12)
    assert v["relative_update_norm_initial"] == pytest.approx(fro(w3 - w0) / fro(w3), rel=1e-12)
    a, b = (w3 - w2).ravel(), (w2 - w1).ravel()
    assert v["update_cosine"] == pytest.approx(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), rel=1e-12)


def test_update_cosine_of_steady_and_reversing_updates():
    w = np.arange(6.0).reshape(2, 3)
    d = np.ones((2, 3))
    assert run(w + 2 * d, prev=w + d, prev2=w, metrics=["update_cosine"])["update_cosine"] == pytest.approx(1.0)
    assert run(w, prev=w + d, prev2=w, metrics=["update_cosine"])["update_cosine"] == pytest.approx(-1.0)


def test_references_missing_at_first_checkpoints():
    w = np.ones((2, 2))
    assert run(w, init=w) == {
        "update_norm_initial": 0.0,
        "relative_update_norm_initial": 0.0,
    }
    assert set(run(w, prev=w, init=w)) == set(ALL) - {"update_cosine"}


def test_degenerate_updates():
    w = np.ones((3, 3))
    v = run(w, prev=w, prev2=w - 1, init=w)
    assert v["update_norm_previous"] == 0.0 and v["relative_update_norm_previous"] == 0.0
    assert v["update_cosine"] == 0.0  # frozen at this step: cosine 0, not NaN
    z = np.zeros((3, 3))
    assert run(z, prev=z, init=z, metrics=["relative_update_norm_previous"])["relative_update_norm_previous"] == 0.0
    with pytest.warns(RuntimeWarning, match="relative_update_norm_initial"):
        v = run(z, init=w, metrics=["relative_update_norm_initial"])
    assert math.isnan(v["relative_update_norm_initial"])
    with pytest.warns(RuntimeWarning):
        v = run(w, prev=np.ones((2, 3)), metrics=["update_norm_previous"])
    assert math.isnan(v["update_norm_previous"])
