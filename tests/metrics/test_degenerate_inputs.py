"""Every metric on degenerate input (all-zero weights, constant columns, one sample, ...) is defined
or NaN with a warning."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from ckptlens import metrics as M
from tests.helpers import figure

# --------------------------------------------------------------------- degenerate inputs, library
WEIGHT_METRICS = {
    "weight_spectrum": [
        "frobenius_norm",
        "spectral_norm",
        "stable_rank",
        "effective_rank",
        "proportional_effective_rank",
        "screenot_rank",
    ],
    "weight_update": [
        "update_norm_previous",
        "update_norm_initial",
        "relative_update_norm_previous",
        "relative_update_norm_initial",
        "update_cosine",
    ],
}
ACT_METRICS = {
    "activation_similarity": ["cka_to_previous", "cka_to_initial"],
    "activation_spectrum": ["activation_norm", "activation_pca_evr"],
    "activation_pairs": [
        "linearity_score",
        "linearity_score_no_residual",
        "linearity_per_sample",
        "consecutive_cosine",
    ],
}


def _circuits(rng, zero=False):
    w = {"embed": rng.standard_normal((10, 8))}
    for L in range(2):
        for h in range(2):
            for kind in ("qk", "ov"):
                w[f"blocks.{L}.attn.head{h}.{kind}"] = np.zeros((8, 8)) if zero else rng.standard_normal((8, 8))
    return w


def _terms(acts, final):
    """What the extraction keeps for cka_to_final: the similarity terms against the final checkpoint."""
    from ckptlens.extract.similarity import Centred, similarity_terms

    return similarity_terms(acts, {k: Centred(a) for k, a in final.items()})


def _run_all(family, names, current, refs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = M.compute_family(family, {n: {} for n in names}, current, refs, run="deg", step=7)
    return rows, [str(w.message) for w in caught]


def _defined_or_warned(rows, messages):
    assert rows
    for r in rows:
        if math.isnan(r["value"]):
            assert any(repr(r["layer"]) in m and "step 7" in m for m in messages), (r, messages)
        else:
            assert math.isfinite(r["value"]), r


DEGENERATE = [
    "all-zero weights",
    "constant activation column",
    "probe batch of one sample",
    "two identical checkpoints",
    "a single checkpoint",
]


@pytest.mark.parametrize("case", DEGENERATE)
def test_every_metric_on_degenerate_input_is_defined_or_nan_with_warning(case):
    rng = np.random.default_rng(1)
    n = 1 if case == "probe batch of one sample" else 24
    acts = {f"blocks.{i}": rng.standard_normal((n, 6)) for i in range(3)}
    weights = _circuits(rng, zero=case == "all-zero weights")
    if case == "constant activation column":
        for a in acts.values():
            a[:, 2] = 3.0
    grads = {"w": rng.standard_normal((1 if n == 1 else 3, 4, 5))}
    agrads = {"m|out0": rng.standard_normal((n, 6)), "m|out1": rng.standard_normal((n, 6))}
    if case == "a single checkpoint":  # final and initial are the checkpoint itself, no previous
        wref, aref = {"final": weights, "initial": weights}, {"final": acts, "initial": acts}
    else:  # identical checkpoints: every reference holds the same values
        other = _circuits(np.random.default_rng(2), zero=case == "all-zero weights")
        same = case == "two identical checkpoints"
        wref = {r: weights if same else other for r in ("final", "previous", "previous2", "initial")}
        aref = {r: acts if same else {k: v + 1.0 for k, v in acts.items()} for r in ("final", "previous", "initial")}
    results = {}
    for family, names in WEIGHT_METRICS.items():
        results[family] = _run_all(family, names, weights, wref)
    results["circuits"] = _run_all(
        "circuits", ["qk_ov_overlap_max", "qk_ov_diag_zscore", "embed_ov_overlap_max"], weights, {}
    )
    for family, names in ACT_METRICS.items():
        results[family] = _run_all(family, names, acts, aref)
    results["similarity_to_final"] = _run_all("similarity_to_final", ["cka_to_final"], _terms(acts, aref["final"]), {})
    results["gradient"] = _run_all("gradient", ["gradient_norm", "gradient_cosine"], grads, {})
    results["gradient_pca"] = _run_all("gradient_pca", ["gradient_pca_evr", "gradient_pca_cosine"], agrads, {})
    for family, (rows, messages) in results.items():
        _defined_or_warned(rows, messages)
    v = {(r["layer"], r["metric"]): r["value"] for rows, _ in results.values() for r in rows}
    layer = "blocks.1.attn.head0.ov"
    if case == "all-zero weights":
        assert (
            v[(layer, "frobenius_norm")] == 0 and v[(layer, "effective_rank")] == 0 and v[(layer, "stable_rank")] == 0
        )
        assert v[(layer, "update_norm_previous")] == 0 and v[(layer, "update_cosine")] == 0
    if case == "two identical checkpoints":
        assert v[(layer, "update_norm_previous")] == 0 and v[(layer, "relative_update_norm_initial")] == 0
        assert v[("blocks.1", "cka_to_previous")] == pytest.approx(1.0)
    if case == "a single checkpoint":
        assert v[("blocks.1", "cka_to_final")] == pytest.approx(1.0) and v[(layer, "update_norm_initial")] == 0
        assert not any(m == "cka_to_previous" for _, m in v)  # no previous checkpoint: no value at all
    if case == "probe batch of one sample":
        assert math.isnan(v[("blocks.1", "cka_to_final")])  # one centred sample is zero: undefined, warned
        assert math.isnan(v[("w", "gradient_cosine")])  # one probe batch: no pair to compare
    if case == "constant activation column":  # a constant feature centres to zero: it changes nothing
        plain = {k: np.delete(a, 2, axis=1) for k, a in acts.items()}
        rows, _ = _run_all(
            "activation_similarity", ["cka_to_initial"], acts, {"initial": {k: a * 2 for k, a in plain.items()}}
        )
        assert rows[1]["value"] == pytest.approx(1.0)
        rows, _ = _run_all(
            "similarity_to_final", ["cka_to_final"], _terms(acts, {k: a * 2 for k, a in plain.items()}), {}
        )
        assert rows[1]["value"] == pytest.approx(1.0)
    figure("degenerate input", case, "defined values, or NaN with a warning naming run, step, layer")
