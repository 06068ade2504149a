"""The weight_spectrum context's laziness (no decomposition a metric does not need, one shared by
those that do) and the two backends of the heavy kernels (:mod:`ckptlens.metrics._linalg`):
numpy, and torch (run here on the CPU, ``CKPTLENS_METRIC_DEVICE=torch:cpu``; on a GPU it is the
same code on ``cuda:0``) give the same values.

Tolerances, torch vs numpy: eigenvalues of the Gram route within 1e-12·λ_max; every
weight_spectrum metric within 1e-9 relative (1e-12 absolute near 0), but condition_number where
it comes from the Gram route (κ ≤ 1e5): 10·ε·κ² relative, that route's own accuracy (see
:func:`rel_tolerance`); CKA within 1e-10 relative, the other activation_similarity metrics 1e-9."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from ckptlens import metrics as M
from ckptlens.metrics import _esd, _linalg
from ckptlens.metrics import weight_spectrum as WS

FAMILY = sorted(n for n, m in M.METRICS.items() if m.family == "weight_spectrum")
SPECTRAL = [
    "spectral_norm", "stable_rank", "effective_rank", "proportional_effective_rank", "screenot_rank", "alpha",
    "alpha_xmin", "alpha_ks_distance", "alpha_weighted", "log_spectral_norm", "mp_softrank", "num_spikes",
    "condition_number", "nuclear_norm",
]  # fmt: skip
NO_SPECTRUM = ["frobenius_norm", "gini", "hoyer"]


def test_the_family_is_what_these_tests_cover():
    assert sorted(SPECTRAL + NO_SPECTRUM) == FAMILY


@pytest.fixture
def backend(monkeypatch):
    """Switch the kernels' backend for one test: backend("numpy") / backend("torch:cpu")."""

    def use(spec):
        monkeypatch.setenv(_linalg.ENV, spec)
        _linalg.reset()

    yield use
    monkeypatch.delenv(_linalg.ENV, raising=False)
    _linalg.reset()


def matrices():
    rng = np.random.default_rng(20)
    u = np.linalg.qr(rng.standard_normal((90, 40)))[0]
    v = np.linalg.qr(rng.standard_normal((40, 40)))[0]
    heavy = rng.standard_t(3, (120, 50))  # a heavy-tailed ESD: a real power-law fit
    return {
        "tall": rng.standard_normal((80, 30)),
        "wide": rng.standard_normal((25, 70)),
        "heavy": heavy,
        "float32": (0.02 * rng.standard_t(2, (64, 96))).astype(np.float32),
        "ill": (u * np.logspace(0, -7, 40)) @ v.T,  # κ = 1e7: condition_number takes the exact SVD
        "cond1e4": (u * np.logspace(0, -4, 40)) @ v.T,  # κ = 1e4: condition_number from the Gram route
        "rank5": rng.standard_normal((60, 5)) @ rng.standard_normal((5, 45)),
    }


def values(mats, metrics, **params):
    rows = M.compute_family("weight_spectrum", {m: params.get(m, {}) for m in metrics}, mats)
    return {(r["layer"], r["metric"]): r["value"] for r in rows}


# ---------------------------------------------------------------- laziness


@pytest.fixture
def calls(monkeypatch):
    """Count the decompositions and fits the family runs."""
    counts = {"gram_eigvalsh": 0, "svdvals": 0, "ww_power_law": 0, "hill_power_law": 0, "mp_fit": 0}

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kw):
            counts[name] += 1
            return real(*args, **kw)

        monkeypatch.setattr(module, name, wrapper)

    for name in ("gram_eigvalsh", "svdvals"):
        counting(_linalg, name)
    for name in ("ww_power_law", "hill_power_law", "mp_fit"):
        counting(_esd, name)
    return counts


def test_norms_and_entry_statistics_run_no_decomposition(calls):
    mats = matrices()
    got = values(mats, NO_SPECTRUM)
    assert calls == {"gram_eigvalsh": 0, "svdvals": 0, "ww_power_law": 0, "hill_power_law": 0, "mp_fit": 0}
    for name, w in mats.items():
        assert got[(name, "frobenius_norm")] == pytest.approx(np.linalg.norm(np.asarray(w, np.float64)), rel=1e-13)
        s = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
        assert got[(name, "frobenius_norm")] == pytest.approx(math.sqrt(np.sum(s**2)), rel=1e-12)


def test_frobenius_alone_builds_no_spectrum(calls):
    ctx = WS.WeightContext(np.random.default_rng(1).standard_normal((30, 20)))
    WS.frobenius_norm(ctx)
    assert "eigenvalues" not in vars(ctx) and calls["gram_eigvalsh"] == 0


def test_the_whole_family_shares_one_decomposition_and_one_fit_each(calls):
    mats = {k: v for k, v in matrices().items() if k not in ("ill", "rank5")}  # no exact SVD
    values(mats, FAMILY)
    n = len(mats)
    assert calls == {"gram_eigvalsh": n, "svdvals": 0, "ww_power_law": n, "hill_power_law": 0, "mp_fit": n}


def test_hill_metrics_share_their_fit_and_the_spectrum(calls):
    mats = {"heavy": matrices()["heavy"]}
    alpha_metrics = ["alpha", "alpha_xmin", "alpha_ks_distance", "alpha_weighted"]
    values(mats, alpha_metrics + ["nuclear_norm"], **{m: {"estimator": "hill"} for m in alpha_metrics})
    assert calls == {"gram_eigvalsh": 1, "svdvals": 0, "ww_power_law": 0, "hill_power_law": 1, "mp_fit": 0}


def test_only_an_ill_conditioned_condition_number_takes_the_svd(calls):
    values(matrices(), ["condition_number"])
    assert calls["svdvals"] == 2  # "ill" (κ = 1e7) and "rank5" (singular); the others from the Gram route
    assert calls["gram_eigvalsh"] == len(matrices())


def test_gini_sort_through_torch_is_the_numpy_sort(backend, monkeypatch):
    """On a GPU, gini's sort runs there (exact: the same array, so the same value bit for bit);
    the same code on the CPU here."""
    pytest.importorskip("torch")
    mats = matrices()
    backend("numpy")
    ref = values(mats, ["gini"])
    backend("torch:cpu")
    monkeypatch.setattr(_linalg, "_SORT_ON", ("cpu", "cuda"))
    x = np.abs(mats["float32"]).ravel()
    assert np.array_equal(_linalg.sort_nonnegative(x), np.sort(x))
    assert values(mats, ["gini"]) == ref


def test_magnitudes_sort_as_their_bit_patterns():
    rng = np.random.default_rng(3)
    for dtype in (np.float16, np.float32, np.float64):
        x = np.abs(rng.standard_normal(5000).astype(dtype))
        x[:50] = 0.0
        x[50:60] = np.finfo(dtype).tiny / 4  # subnormals
        assert np.array_equal(WS._sort_magnitudes(x), np.sort(x))


# ---------------------------------------------------------------- numpy vs torch


@pytest.mark.parametrize("visible", [None, "", "-1"])
def test_auto_backend_without_a_gpu_stays_on_numpy_without_torch(visible):
    code = (
        "import sys, numpy as np; from ckptlens import metrics as M; from ckptlens.metrics import _linalg;"
        "M.compute_family('weight_spectrum', {'alpha': {}, 'gini': {}}, {'w': np.eye(20) + 0.1});"
        "x = np.random.default_rng(0).standard_normal((30, 5));"
        "M.compute_family('activation_similarity', {'cka_to_initial': {}}, {'l': x}, {'initial': {'l': x ** 2}});"
        "assert _linalg.device() is None; print('torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env[_linalg.ENV] = "auto"
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unknown_backend_is_an_error(backend):
    backend("tpu")
    with pytest.raises(ValueError, match=_linalg.ENV):
        _linalg.device()


@pytest.mark.parametrize("name", list(matrices()))
def test_gram_eigenvalues_numpy_and_torch_agree(backend, name):
    pytest.importorskip("torch")
    w = np.asarray(matrices()[name], dtype=np.float64)
    backend("numpy")
    ref = WS.gram_eigenvalues(w)
    exact_ref = WS.WeightContext(w).exact_singular_values
    backend("torch:cpu")
    assert _linalg.device() is not None
    got = WS.gram_eigenvalues(w)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12 * ref[0])
    np.testing.assert_allclose(WS.WeightContext(w).exact_singular_values, exact_ref, rtol=0, atol=1e-13 * exact_ref[0])


@pytest.mark.parametrize("metric", FAMILY)
def test_every_weight_spectrum_metric_numpy_and_torch_agree(backend, metric):
    pytest.importorskip("torch")
    mats = matrices()
    backend("numpy")
    ref = values(mats, [metric])
    backend("torch:cpu")
    got = values(mats, [metric])
    assert got.keys() == ref.keys()
    for key, v in ref.items():
        if math.isnan(v):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(v, rel=rel_tolerance(metric, v), abs=1e-12), key


def rel_tolerance(metric, value):
    """1e-9, but condition_number from the Gram route (κ ≤ 1e5): σ_min² is known to ~ε·λ_max only,
    so each backend's κ is within ~ε·κ² of the exact one (5e-7 at κ = 8e4 on MiniLM's attention),
    and the two agree to that, not better."""
    if metric == "condition_number" and value <= WS._GRAM_KAPPA:
        return max(1e-9, 10 * np.finfo(np.float64).eps * value**2)
    return 1e-9


@pytest.mark.parametrize("metric", ["alpha", "alpha_xmin", "alpha_ks_distance", "alpha_weighted"])
def test_hill_estimator_numpy_and_torch_agree(backend, metric):
    pytest.importorskip("torch")
    mats = matrices()
    backend("numpy")
    ref = values(mats, [metric], **{metric: {"estimator": "hill"}})
    backend("torch:cpu")
    got = values(mats, [metric], **{metric: {"estimator": "hill"}})
    for key, v in ref.items():
        assert got[key] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), key


def cka_inputs(n, d1, d2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d1))
    y = np.tanh(x[:, : min(d1, d2)] @ rng.standard_normal((min(d1, d2), d2))) + 0.3 * rng.standard_normal((n, d2))
    return x, y


@pytest.mark.parametrize("debiased", [False, True], ids=["biased", "debiased"])
@pytest.mark.parametrize(
    "shape", [(200, 16, 24), (12, 40, 30), (30, 30, 30)], ids=["feature-space", "gram-form", "square"]
)
@pytest.mark.parametrize("metric", ["cka_to_previous", "cka_to_initial"])
def test_cka_numpy_and_torch_agree(backend, metric, shape, debiased):
    pytest.importorskip("torch")
    x, y = cka_inputs(*shape)
    ref_name = M.METRICS[metric].reference
    run = lambda: M.compute_family(  # noqa: E731
        "activation_similarity", {metric: {"debiased": debiased}}, {"l": x}, {ref_name: {"l": y}}
    )[0]["value"]
    backend("numpy")
    ref = run()
    backend("torch:cpu")
    got = run()
    assert math.isfinite(ref) and got == pytest.approx(ref, rel=1e-10, abs=1e-13)


def test_cka_forms_on_torch_match_the_numpy_functions(backend):
    pytest.importorskip("torch")
    from ckptlens.metrics.activation_similarity import (
        ActivationContext,
        debiased_linear_cka,
        linear_cka,
        linear_cka_features,
        linear_cka_gram,
    )

    x, y = cka_inputs(150, 20, 12, seed=4)
    backend("numpy")
    a0, b0 = ActivationContext(x), ActivationContext(y)
    feat, gram = linear_cka_features(a0.x, b0.x), linear_cka_gram(a0.gram, b0.gram)
    deb = debiased_linear_cka(a0, b0)
    backend("torch:cpu")
    a, b = ActivationContext(x), ActivationContext(y)
    assert a.dev is not None
    assert linear_cka(a, b) == pytest.approx(feat, rel=1e-10)
    assert linear_cka_gram(a.gram, b.gram) == pytest.approx(gram, rel=1e-10)
    np.testing.assert_allclose(a.gram, a0.gram, rtol=0, atol=1e-12 * np.abs(a0.gram).max())
    assert debiased_linear_cka(a, b) == pytest.approx(deb, rel=1e-10)


@pytest.mark.parametrize("metric", sorted(n for n, m in M.METRICS.items() if m.family == "activation_similarity"))
@pytest.mark.parametrize("shape", [(120, 16, 24), (20, 40, 30)], ids=["n>d", "n<d"])
def test_every_activation_similarity_metric_numpy_and_torch_agree(backend, metric, shape):
    """CKA's products move to torch; the metrics sharing the context (SVCCA's basis from the Gram
    matrix where n < d) must not change beyond rounding either."""
    pytest.importorskip("torch")
    x, y = cka_inputs(*shape, seed=7)
    refs = {r: {"l": y} for r in M.METRICS[metric].references}
    run = lambda: M.compute_family("activation_similarity", {metric: {}}, {"l": x}, refs)  # noqa: E731
    backend("numpy")
    ref = {r["metric"]: r["value"] for r in run()}
    backend("torch:cpu")
    got = {r["metric"]: r["value"] for r in run()}
    assert got.keys() == ref.keys()
    for key, v in ref.items():
        assert got[key] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), key
