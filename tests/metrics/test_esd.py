"""The ESD metrics of ``weight_spectrum`` (alpha, its xmin and KS distance D, alpha_weighted,
log_spectral_norm, mp_softrank, num_spikes) against WeightWatcher 0.7.7's ``analyze()`` on the same
matrices (random ones with a planted low-rank signal; MiniLM's weights in tests/workflow/test_esd_minilm.py), the Hill estimator
against AlphaPruning/TempBalance's formula written out, and pico-analyze's weight metrics
(condition_number, nuclear_norm, gini, hoyer) against its code re-typed with torch.

WeightWatcher: ``pip install weightwatcher==0.7.7`` (in the test extra). Its column names are
WeightWatcher's: ``spectral_norm`` there is λ_max = σ_max² (ours is σ_max), ``log_spectral_norm``
log10 λ_max (ours too). It must be imported with CUDA hidden (with a GPU it casts weights to
float16); its import turns all warnings off globally, so it is imported inside catch_warnings.
"""

import contextlib
import io
import math
import os
import warnings

import numpy as np
import pytest

from ckptlens import metrics as M
from ckptlens.metrics import _esd
from ckptlens.metrics.weight_spectrum import gram_eigenvalues
from tests.metrics.helpers import ESD, MP_COLUMNS, WW_COLUMNS, analyze, values


@pytest.fixture(scope="module")
def ww():
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with warnings.catch_warnings():  # its import calls warnings.simplefilter("ignore")
        return pytest.importorskip("weightwatcher")


def planted(rng, m, n, r, strength=4.0):
    """Gaussian noise plus a rank-r signal strong enough to leave the Marchenko-Pastur bulk."""
    signal = rng.standard_normal((m, r)) @ rng.standard_normal((r, n)) * strength / math.sqrt(n)
    return rng.standard_normal((m, n)) + signal


def random_set():
    rng = np.random.default_rng(0)
    return {
        "planted": planted(rng, 300, 100, 3),  # 3 spikes above the bulk, alpha < 3
        "square": rng.standard_normal((100, 100)),  # Q = 1: the quarter-circle fit
        "wide": rng.standard_normal((64, 200)),  # orientation does not matter
        "small_n": rng.standard_normal((60, 15)),  # 15 eigenvalues: WW's small-N fit
        "heavy": rng.standard_t(3, (200, 80)),  # heavy-tailed entries, heavy-tailed ESD
    }


def test_esd_metrics_match_weightwatcher_on_random_and_planted_matrices(ww):
    mats = random_set()
    ref = analyze(ww, mats)
    ref_mp = analyze(ww, {k: mats[k] for k in ("planted", "square")}, mp_fit=True)  # ~1 s per matrix
    got = values(mats, ESD + ["stable_rank", "spectral_norm"])
    for name in mats:
        row = ref[name]
        assert row["status"] == "success"
        for col, ours in WW_COLUMNS.items():
            assert got[(name, ours)] == pytest.approx(float(row[col]), rel=1e-9, abs=1e-12), (name, col)
        assert got[(name, "spectral_norm")] ** 2 == pytest.approx(float(row["spectral_norm"]), rel=1e-12)
    for name, row in ref_mp.items():
        for col, ours in MP_COLUMNS.items():
            assert got[(name, ours)] == pytest.approx(float(row[col]), rel=1e-9, abs=1e-12), (name, col)
    assert got[("planted", "num_spikes")] == 3 and got[("planted", "mp_softrank")] < 0.3
    assert got[("square", "num_spikes")] == 0 and got[("square", "mp_softrank")] > 0.95


def test_rank_deficient_matrix_uses_weightwatchers_fallback_with_a_warning(ww):
    """A rank-5 float32 matrix leaves 5 eigenvalues above 1e-5: WW fits its power law on those 5
    (no tail of 8); ours gives the same number and says so."""
    rng = np.random.default_rng(1)
    mats = {"rank5": (rng.standard_normal((100, 5)) @ rng.standard_normal((5, 50))).astype(np.float32)}
    ref = analyze(ww, mats, mp_fit=True)["rank5"]  # 50 eigenvalues: a quick MP fit
    with pytest.warns(RuntimeWarning, match=r"layer 'rank5': metric 'alpha'.*all 5 eigenvalues above 1e-05"):
        got = values(mats, ["alpha", "alpha_ks_distance", "num_spikes"])
    assert got[("rank5", "alpha")] == pytest.approx(float(ref["alpha"]), rel=1e-9)
    assert got[("rank5", "alpha_ks_distance")] == pytest.approx(float(ref["D"]), rel=1e-9)
    assert got[("rank5", "num_spikes")] == ref["num_spikes"] == 5


def test_zero_matrix_is_nan_where_weightwatcher_reports_minus_one(ww):
    ref = analyze(ww, {"zero": np.zeros((40, 20))})["zero"]
    assert ref["alpha"] == -1 and ref["status"] == "failed"  # a number that reads like a value
    with pytest.warns(RuntimeWarning) as rec:
        got = values({"zero": np.zeros((40, 20))}, ESD + ["nuclear_norm"])
    assert all(math.isnan(got[("zero", m)]) for m in ESD)
    assert got[("zero", "nuclear_norm")] == 0.0
    messages = " ".join(str(w.message) for w in rec)
    assert all(f"metric {m!r}" in messages for m in ESD) and "layer 'zero'" in messages


def test_wwfit_directly_on_our_eigenvalues(ww):
    """The KS-search fit alone (WeightWatcher's WWFit) on the eigenvalues the Gram route gives."""
    from weightwatcher.WW_powerlaw import WWFit

    for seed, shape in [(3, (200, 80)), (4, (120, 40)), (5, (90, 18))]:
        w = np.random.default_rng(seed).standard_normal(shape)
        ev = gram_eigenvalues(w)[::-1]
        with contextlib.redirect_stdout(io.StringIO()):
            ref = WWFit(ev[ev > 1e-5])
        fit = _esd.ww_power_law(ev)
        assert (fit.alpha, fit.xmin, fit.D) == pytest.approx((ref.alpha, ref.xmin, ref.D), rel=1e-12)


# ---------------------------------------------------------------- Hill / median estimator


def tempbalance_median_alpha(eigs):
    """TempBalance ``net_esd_estimator(pl_fitting="median")`` / AlphaPruning ``xmin_mid``, in numpy
    (their code calls .cuda() inside the loop): all eigenvalues, xmin at index N // 2."""
    eigs = np.sort(eigs)
    i = int(len(eigs) / 2)
    n = len(eigs) - i
    alpha = 1 + n / (np.sum(np.log(eigs[i:])) - n * np.log(eigs[i]))
    d = np.max(np.abs(1 - (eigs[i:] / eigs[i]) ** (-alpha + 1) - np.arange(n) / n))
    return alpha, eigs[i], d


def test_hill_estimator_matches_tempbalance_formula():
    mats = random_set()
    got = values(
        mats,
        ["alpha", "alpha_xmin", "alpha_ks_distance", "alpha_weighted"],
        **dict.fromkeys(["alpha", "alpha_xmin", "alpha_ks_distance", "alpha_weighted"], {"estimator": "hill"}),
    )
    for name, w in mats.items():
        eigs = np.linalg.svd(w, compute_uv=False) ** 2
        a, xmin, d = tempbalance_median_alpha(eigs)
        assert got[(name, "alpha")] == pytest.approx(a, rel=1e-10)
        assert got[(name, "alpha_xmin")] == pytest.approx(xmin, rel=1e-10)
        assert got[(name, "alpha_ks_distance")] == pytest.approx(d, rel=1e-9)
        assert got[(name, "alpha_weighted")] == pytest.approx(a * np.log10(eigs.max()), rel=1e-10)
        # the textbook Hill estimate with the k = n - 1 order statistics above xmin: (k+1)/k apart
        k = len(eigs) - int(len(eigs) / 2) - 1
        gamma = np.mean(np.log(np.sort(eigs)[::-1][:k] / xmin))
        assert a - 1 == pytest.approx((k + 1) / k / gamma, rel=1e-10)


def test_hill_and_ww_estimators_differ_and_parameters_are_checked():
    w = random_set()["heavy"]
    ww_alpha = values({"w": w}, ["alpha"])[("w", "alpha")]
    hill = values({"w": w}, ["alpha"], alpha={"estimator": "hill"})[("w", "alpha")]
    assert ww_alpha != pytest.approx(hill, rel=1e-3)
    with pytest.raises(M.MetricConfigError, match=r"metrics\.alpha\.estimator"):
        M.resolve_params("alpha", {"estimator": "powerlaw"})


def test_hill_with_a_null_median_eigenvalue_is_nan():
    rng = np.random.default_rng(6)
    w = rng.standard_normal((40, 6)) @ rng.standard_normal((6, 30))  # 24 of 30 eigenvalues are 0
    with pytest.warns(RuntimeWarning, match="median eigenvalue"):
        got = values({"w": w}, ["alpha"], alpha={"estimator": "hill"})
    assert math.isnan(got[("w", "alpha")])


def test_fewer_than_eight_eigenvalues_is_nan_with_a_warning():
    w = np.random.default_rng(7).standard_normal((50, 5))
    with pytest.warns(RuntimeWarning, match="at least 8"):
        got = values({"w": w}, ["alpha", "mp_softrank"])
    assert math.isnan(got[("w", "alpha")]) and math.isnan(got[("w", "mp_softrank")])


def test_flat_spectrum_does_not_converge():
    q = np.linalg.qr(np.random.default_rng(8).standard_normal((30, 30)))[0]  # orthogonal: all σ = 1
    with pytest.warns(RuntimeWarning, match="did not converge|all equal"):
        got = values({"q": q}, ["alpha"])
    assert math.isnan(got[("q", "alpha")])


def test_mp_kde_matches_sklearn():
    """The KDE WeightWatcher refits at every objective evaluation, computed once here."""
    from sklearn.neighbors import KernelDensity

    x = np.random.default_rng(9).gamma(2.0, 0.5, 300)
    grid = np.linspace(0, x.max() + 0.5, 1000)
    ref = np.exp(KernelDensity(kernel="linear", bandwidth=0.1).fit(x.reshape(-1, 1)).score_samples(grid[:, None]))
    np.testing.assert_allclose(_esd.linear_kde(x, grid, 0.1), ref, rtol=1e-10, atol=1e-300)


# ---------------------------------------------------------------- pico-analyze's weight metrics


def pico(w):
    """pico-analyze's condition_number, norm(nuclear), gini and hoyer ``compute_metric`` bodies,
    re-typed with torch (pico-analyze is not a pip package), in float64."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.asarray(w, dtype=np.float64))
    s = torch.linalg.svdvals(x)
    flat = torch.sort(x.flatten().abs())[0]
    n = flat.numel()
    idx = torch.arange(1, n + 1, dtype=flat.dtype)
    gini = (torch.sum((2 * idx - n - 1) * flat) / (n * torch.sum(flat))).item()
    l1, l2 = torch.norm(x.flatten(), p=1).item(), torch.norm(x.flatten(), p=2).item()
    hoyer = (math.sqrt(n) - l1 / l2) / (math.sqrt(n) - 1)
    return {
        "condition_number": (s.max() / s.min()).item(),
        "nuclear_norm": torch.norm(x, p="nuc").item(),
        "gini": gini,
        "hoyer": hoyer,
    }


PICO = ["condition_number", "nuclear_norm", "gini", "hoyer"]


def test_pico_weight_metrics_match_its_formulas():
    rng = np.random.default_rng(10)
    mats = {
        "gauss": rng.standard_normal((64, 48)),
        "sparse": rng.standard_normal((40, 40)) * (rng.random((40, 40)) < 0.1),
        "float32": rng.standard_t(2, (30, 90)).astype(np.float32),
        # more entries than gini's summation block (2^15), the last block ragged
        "blocks": rng.standard_t(3, (257, 301)).astype(np.float32),
    }
    mats["sparse"] += np.eye(40)  # keep it invertible
    got = values(mats, PICO)
    for name, w in mats.items():
        ref = pico(w)
        for m in PICO:
            assert got[(name, m)] == pytest.approx(ref[m], rel=1e-9), (name, m)
    assert got[("sparse", "gini")] > got[("gauss", "gini")] and got[("sparse", "hoyer")] > got[("gauss", "hoyer")]


def test_known_sparsity_values():
    one_hot = np.zeros((4, 5))
    one_hot[2, 3] = -7.0
    got = values({"e": one_hot, "u": np.full((4, 5), 3.0)}, ["gini", "hoyer"])
    assert got[("e", "hoyer")] == pytest.approx(1.0) and got[("u", "hoyer")] == pytest.approx(0.0, abs=1e-15)
    assert got[("e", "gini")] == pytest.approx(1 - 1 / 20) and got[("u", "gini")] == pytest.approx(0.0, abs=1e-15)


def test_condition_number_of_ill_conditioned_and_singular_matrices():
    rng = np.random.default_rng(11)
    u = np.linalg.qr(rng.standard_normal((60, 60)))[0][:, :30]
    v = np.linalg.qr(rng.standard_normal((30, 30)))[0]
    mats = {f"k{int(np.log10(k))}": (u * np.logspace(0, -np.log10(k), 30)) @ v.T for k in (1e2, 1e4, 1e6, 1e9)}
    got = values(mats, ["condition_number"])
    for name, w in mats.items():  # the Gram route below 1e5, an exact SVD above: both to ~1e-7
        assert got[(name, "condition_number")] == pytest.approx(np.linalg.cond(w), rel=1e-6), name
    singular = rng.standard_normal((20, 3)) @ rng.standard_normal((3, 10))
    with pytest.warns(RuntimeWarning, match="singular"):
        got = values({"s": singular}, ["condition_number"])
    assert math.isnan(got[("s", "condition_number")])


def test_gram_spectrum_accuracy():
    """σ from the Gram eigenvalues against an SVD: full relative precision for a well-conditioned
    matrix, exact zeros for the null space of a rank-deficient one and for the zero matrix."""
    rng = np.random.default_rng(12)
    w = rng.standard_normal((300, 120)) @ np.diag(np.logspace(0, -3, 120))
    np.testing.assert_allclose(np.sqrt(gram_eigenvalues(w)), np.linalg.svd(w, compute_uv=False), rtol=1e-9)
    low = rng.standard_normal((64, 8)) @ rng.standard_normal((8, 96))
    lam = gram_eigenvalues(low)
    assert lam.shape == (64,) and np.all(lam[8:] == 0) and np.all(lam[:8] > 0)
    np.testing.assert_allclose(np.sqrt(lam[:8]), np.linalg.svd(low, compute_uv=False)[:8], rtol=1e-12)
    assert np.all(gram_eigenvalues(np.zeros((5, 7))) == 0)
