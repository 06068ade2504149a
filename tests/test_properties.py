"""Property-based tests (hypothesis) of the metric functions and the cross-metric analysis on random
shapes and values: finite outputs wherever the value is defined (NaN only with a warning naming
the layer), symmetry of CKA, invariances (CKA and activation PCA under orthogonal transforms,
isotropic scaling and translation; rank metrics under scaling; gradient cosine under scaling),
NaN/Inf inputs giving NaN with a warning naming run, step and layer, and an analysis that never
crashes on NaN/Inf/constant columns.

The CKA invariance of the two computational forms themselves is also tested in
tests/metrics/test_activation_similarity.py; here it goes through the registered metric, as a job calls it.
"""

import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ckptlens import metrics as M
from ckptlens.analysis import metric_correlations, pca_explained_variance
from ckptlens.metrics.activation_similarity import ActivationContext, linear_cka

EXAMPLES = int(os.environ.get("CKPTLENS_PROPERTY_EXAMPLES", "30"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(
    min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64
)
dims = st.integers(1, 10)


def matrices(min_rows=1, min_cols=1, max_side=10):
    return st.tuples(st.integers(min_rows, max_side), st.integers(min_cols, max_side)).flatmap(
        lambda shape: arrays(np.float64, shape, elements=finite)
    )


def gaussian(seed, shape, scale=1.0):
    return scale * np.random.default_rng(seed).standard_normal(shape)


seeds = st.integers(0, 2**31 - 1)


def run_family(family, metrics, current, references=None, step=3):
    """(rows as {(layer, metric): value}, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = M.compute_family(family, metrics, current, references, run="prop", step=step)
    return {(r["layer"], r["metric"]): r["value"] for r in rows}, [str(w.message) for w in caught]


def assert_finite_or_warned(values, messages):
    """Every value is finite, or NaN with a warning that names its layer."""
    for (layer, metric), v in values.items():
        if math.isnan(v):
            assert any(repr(layer) in m or f"layer {layer}" in m for m in messages), (layer, metric, messages)
        else:
            assert math.isfinite(v), (layer, metric, v)


LAYER_FAMILIES = {
    "weight_spectrum": {
        m: {}
        for m in [
            "frobenius_norm",
            "spectral_norm",
            "stable_rank",
            "effective_rank",
            "proportional_effective_rank",
            "screenot_rank",
        ]
    },
    "activation_spectrum": {"activation_norm": {}, "activation_pca_evr": {"n_components": 3}},
}
RANK_METRICS = ["stable_rank", "effective_rank", "proportional_effective_rank"]


# ------------------------------------------------------------------ finite where defined
@SETTINGS
@given(matrices())
def test_weight_metrics_are_finite_or_nan_with_warning(w):
    values, messages = run_family("weight_spectrum", LAYER_FAMILIES["weight_spectrum"], {"blocks.0.w": w})
    assert len(values) == 6
    assert_finite_or_warned(values, messages)
    # every spectral metric of a finite matrix is defined: no NaN at all
    assert not any(math.isnan(v) for v in values.values()), values
    assert values[("blocks.0.w", "stable_rank")] <= min(w.shape) + 1e-9
    assert values[("blocks.0.w", "effective_rank")] <= min(w.shape) + 1e-9


same_samples = st.tuples(st.integers(1, 10), dims, dims).flatmap(
    lambda s: st.tuples(
        arrays(np.float64, (s[0], s[1]), elements=finite), arrays(np.float64, (s[0], s[2]), elements=finite)
    )
)


@SETTINGS
@given(same_samples)
def test_activation_metrics_are_finite_or_nan_with_warning(xy):
    x, y = xy
    values, messages = run_family("activation_spectrum", LAYER_FAMILIES["activation_spectrum"], {"a": x})
    assert_finite_or_warned(values, messages)
    values, messages = run_family("activation_similarity", {"cka_to_initial": {}}, {"a": x}, {"initial": {"a": y}})
    assert_finite_or_warned(values, messages)
    cka = values[("a", "cka_to_initial")]
    centred_x, centred_y = x - x.mean(0), y - y.mean(0)
    if math.isnan(cka):  # undefined only for a constant side (no variance): then warned
        assert (
            not np.any(centred_x)
            or not np.any(centred_y)
            or x.shape[0] == 1
            or min(np.linalg.norm(centred_x.T @ centred_x), np.linalg.norm(centred_y.T @ centred_y)) == 0
        )
    else:
        assert -1e-9 <= cka <= 1 + 1e-9


@SETTINGS
@given(st.integers(1, 5), matrices())
def test_gradient_metrics_are_finite_or_nan_with_warning(n_batches, w):
    g = np.stack([w * (i + 1) - i for i in range(n_batches)])
    values, messages = run_family("gradient", {"gradient_norm": {}, "gradient_cosine": {}}, {"l": g})
    assert_finite_or_warned(values, messages)
    assert math.isfinite(values[("l", "gradient_norm")])


@SETTINGS
@given(matrices(), matrices(), matrices())
def test_update_metrics_are_finite_or_nan_with_warning(w, p, p2):
    metrics = {
        m: {}
        for m in [
            "update_norm_previous",
            "update_norm_initial",
            "relative_update_norm_previous",
            "relative_update_norm_initial",
            "update_cosine",
        ]
    }
    values, messages = run_family(
        "weight_update", metrics, {"w": w}, {"previous": {"w": p}, "previous2": {"w": p2}, "initial": {"w": p}}
    )
    assert_finite_or_warned(values, messages)


# ------------------------------------------------------------------ NaN / Inf inputs
@SETTINGS
@given(
    matrices(min_rows=2),
    st.data(),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.sampled_from(["weight_spectrum", "activation_spectrum"]),
)
def test_nan_or_inf_input_gives_nan_and_a_warning_naming_run_step_layer(w, data, bad, family):
    i = data.draw(st.integers(0, w.shape[0] - 1))
    j = data.draw(st.integers(0, w.shape[1] - 1))
    w = w.copy()
    w[i, j] = bad
    values, messages = run_family(family, LAYER_FAMILIES[family], {"blocks.1.mlp": w, "ok": np.eye(3)}, step=17)
    assert all(math.isnan(v) for (layer, _), v in values.items() if layer == "blocks.1.mlp")
    assert all(math.isfinite(v) for (layer, _), v in values.items() if layer == "ok")
    assert any("'prop'" in m and "step 17" in m and "'blocks.1.mlp'" in m for m in messages), messages


# ------------------------------------------------------------------ CKA: symmetry, invariances
@SETTINGS
@given(seeds, st.integers(2, 30), dims, dims)
def test_cka_is_symmetric(seed, n, d1, d2):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d1))
    y = x[:, :1] * rng.standard_normal(d2) + rng.standard_normal((n, d2))
    a, b = ActivationContext(x), ActivationContext(y)
    assert linear_cka(a, b) == pytest.approx(linear_cka(b, a), rel=1e-9, abs=1e-12)
    xy, _ = run_family("activation_similarity", {"cka_to_initial": {}}, {"l": x}, {"initial": {"l": y}})
    yx, _ = run_family("activation_similarity", {"cka_to_initial": {}}, {"l": y}, {"initial": {"l": x}})
    assert xy[("l", "cka_to_initial")] == pytest.approx(yx[("l", "cka_to_initial")], rel=1e-9, abs=1e-12)
    assert linear_cka(a, a) == pytest.approx(1.0)


@SETTINGS
@given(seeds, st.integers(3, 30), dims, dims, st.floats(1e-3, 1e3))
def test_registered_cka_invariant_under_orthogonal_maps_scaling_and_translation(seed, n, d1, d2, scale):
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((n, d1)), rng.standard_normal((n, d2))
    q1 = np.linalg.qr(rng.standard_normal((d1, d1)))[0]
    q2 = np.linalg.qr(rng.standard_normal((d2, d2)))[0]
    base, _ = run_family("activation_similarity", {"cka_to_initial": {}}, {"l": x}, {"initial": {"l": y}})
    moved, _ = run_family(
        "activation_similarity",
        {"cka_to_initial": {}},
        {"l": scale * x @ q1 + 5.0},
        {"initial": {"l": y @ q2 / scale - 2.0}},
    )
    assert moved[("l", "cka_to_initial")] == pytest.approx(base[("l", "cka_to_initial")], rel=1e-7, abs=1e-9)


@SETTINGS
@given(seeds, st.integers(2, 30), dims, st.floats(1e-3, 1e3))
def test_activation_pca_invariant_under_orthogonal_maps_scaling_and_translation(seed, n, d, scale):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d)
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    params = {"activation_pca_evr": {"n_components": 4}}
    base, _ = run_family("activation_spectrum", params, {"l": x})
    moved, _ = run_family("activation_spectrum", params, {"l": scale * x @ q + 7.0})
    for k, v in base.items():
        assert moved[k] == pytest.approx(v, rel=1e-7, abs=1e-9)
        assert -1e-12 <= v <= 1 + 1e-12
    assert sum(base.values()) <= 1 + 1e-9


# ------------------------------------------------------------------ rank metrics under scaling
@SETTINGS
@given(matrices(), st.floats(1e-3, 1e3))
def test_rank_metrics_are_invariant_and_norms_homogeneous_under_scaling(w, c):
    assume(np.abs(w).max() > 1e-3)
    metrics = LAYER_FAMILIES["weight_spectrum"]
    base, _ = run_family("weight_spectrum", metrics, {"w": w})
    scaled, _ = run_family("weight_spectrum", metrics, {"w": c * w})
    for m in RANK_METRICS:
        assert scaled[("w", m)] == pytest.approx(base[("w", m)], rel=1e-8, abs=1e-10), m
    for m in ("frobenius_norm", "spectral_norm"):
        assert scaled[("w", m)] == pytest.approx(c * base[("w", m)], rel=1e-9), m


@SETTINGS
@given(matrices(min_rows=3, min_cols=3, max_side=16), st.integers(-30, 30))
def test_screenot_rank_is_invariant_under_power_of_two_scaling(w, k):
    # 2**k scales every floating-point operation exactly: the integer rank must not move at all
    base, _ = run_family("weight_spectrum", {"screenot_rank": {}}, {"w": w})
    scaled, _ = run_family("weight_spectrum", {"screenot_rank": {}}, {"w": np.ldexp(w, k)})
    assert scaled == base


@SETTINGS
@given(seeds, st.integers(2, 5), dims, dims, st.floats(1e-3, 1e3))
def test_gradient_cosine_invariant_and_norm_homogeneous_under_scaling(seed, b, r, c, scale):
    g = gaussian(seed, (b, r, c))
    metrics = {"gradient_norm": {}, "gradient_cosine": {}}
    base, _ = run_family("gradient", metrics, {"l": g})
    scaled, _ = run_family("gradient", metrics, {"l": scale * g})
    assert scaled[("l", "gradient_cosine")] == pytest.approx(base[("l", "gradient_cosine")], rel=1e-8, abs=1e-10)
    assert scaled[("l", "gradient_norm")] == pytest.approx(scale * base[("l", "gradient_norm")], rel=1e-9)


@SETTINGS
@given(seeds, dims, dims, st.floats(1e-3, 1e3))
def test_update_norms_symmetric_and_relative_norms_scale_invariant(seed, r, c, scale):
    rng = np.random.default_rng(seed)
    w, p = rng.standard_normal((r, c)), rng.standard_normal((r, c))
    metrics = {"update_norm_previous": {}, "relative_update_norm_previous": {}}
    fwd, _ = run_family("weight_update", metrics, {"w": w}, {"previous": {"w": p}})
    back, _ = run_family("weight_update", metrics, {"w": p}, {"previous": {"w": w}})
    scaled, _ = run_family("weight_update", metrics, {"w": scale * w}, {"previous": {"w": scale * p}})
    assert fwd[("w", "update_norm_previous")] == pytest.approx(back[("w", "update_norm_previous")], rel=1e-12)
    assert scaled[("w", "relative_update_norm_previous")] == pytest.approx(
        fwd[("w", "relative_update_norm_previous")], rel=1e-9
    )


# ------------------------------------------------------------------ analysis never crashes
cell = st.one_of(finite, st.just(np.nan), st.just(np.inf), st.just(-np.inf), st.just(1.0))


@st.composite
def tidy_tables(draw):
    steps = sorted(draw(st.sets(st.integers(0, 1000), min_size=1, max_size=6)))
    layers = [f"blocks.{i}" for i in range(draw(st.integers(1, 3)))]
    metrics = [f"m{i}" for i in range(draw(st.integers(1, 4)))]
    rows = []
    for metric in metrics:
        constant = draw(st.booleans()) and draw(st.booleans())  # ~1 in 4 metrics constant over steps
        for layer in layers:
            for s in steps:
                if draw(st.integers(0, 9)) == 0:
                    continue  # a missing (step, layer, metric) value
                rows.append(
                    {"run": "r", "step": s, "layer": layer, "metric": metric, "value": 2.5 if constant else draw(cell)}
                )
    return pd.DataFrame(rows, columns=["run", "step", "layer", "metric", "value"])


@SETTINGS
@given(tidy_tables())
def test_analysis_never_crashes_and_reports_every_dropped_column(table):
    explained, loadings, notes = pca_explained_variance(table)
    for _, g in explained.groupby("matrix"):
        ratios = g["explained_variance_ratio"].to_numpy()
        assert np.isfinite(ratios).all() and (ratios >= -1e-12).all()
        assert ratios.sum() == pytest.approx(1.0, abs=1e-6)
    assert np.isfinite(loadings["loading"].to_numpy(dtype=float)).all()
    used = set(loadings["column"])
    if len(table):
        steps = sorted(table["step"].unique())
        for (layer, metric), g in table.groupby(["layer", "metric"]):
            col = f"{layer}|{metric}"
            values = g.groupby("step")["value"].mean().reindex(steps).to_numpy(dtype=float)
            if not np.isfinite(values).all():  # NaN/Inf or missing at some step: dropped, and said so
                assert col not in used and any(repr(col) in n for n in notes), (col, notes)
    corr, corr_notes = metric_correlations(table, None)
    assert set(corr.columns) >= {"pearson_r", "r_squared"}
    r = corr["pearson_r"].to_numpy(dtype=float)
    assert (np.isnan(r) | ((r >= -1) & (r <= 1))).all()
