"""Circuit metrics (family ``circuits``) against plain formulas written here: full SVDs of the
circuit matrices, the product matrices formed explicitly, a plain Monte-Carlo estimate of the
random-subspace baseline, and the closed form E|cos| for k = 1."""

import math

import numpy as np
import pytest
from scipy.special import gammaln

from ckptlens import metrics as M
from ckptlens.metrics.circuits import overlap_monte_carlo, random_overlap_baseline, token_rows

D, DH, HEADS, VOCAB = 24, 6, 2, 40


def make_model(seed=0, layers=3, vocab=VOCAB, dtype=np.float64):
    rng = np.random.default_rng(seed)
    w = {"embed": rng.standard_normal((vocab, D)).astype(dtype)}
    for layer in range(layers):
        for h in range(HEADS):
            wq, wk, wv = (rng.standard_normal((DH, D)) for _ in range(3))
            wo = rng.standard_normal((D, DH))
            w[f"blocks.{layer}.attn.head{h}.qk"] = (wq.T @ wk / math.sqrt(DH)).astype(dtype)
            w[f"blocks.{layer}.attn.head{h}.ov"] = (wo @ wv).astype(dtype)
    w["blocks.0.mlp.weight"] = rng.standard_normal((D, 4 * D))  # not a circuit: ignored
    return w


def run(w, metrics):
    rows = M.compute_family("circuits", metrics, w, run="r", step=5)
    return {(r["layer"], r["metric"]): r["value"] for r in rows}


def plain_overlap(a, b, k):
    """Singular values of V_a[:, :k]ᵀ U_b[:, :k] from full SVDs."""
    _, _, vta = np.linalg.svd(a)
    ub, _, _ = np.linalg.svd(b)
    return np.linalg.svd(vta[:k] @ ub[:, :k], compute_uv=False)


def plain_zscore(m):
    return (np.diag(m).mean() - m.mean()) / m.std()


def test_labels_and_pairs():
    w = make_model()
    got = run(w, {"qk_ov_diag_zscore": {}})
    labels = sorted({layer for layer, _ in got})
    expected = sorted(
        f"blocks.{L}.attn.head{h}.qk~blocks.{L - 1}.attn.head{h2}.ov"
        for L in (1, 2)
        for h in range(HEADS)
        for h2 in range(HEADS)
    )
    assert labels == expected
    same = run(w, {"qk_ov_diag_zscore": {"pairs": "same"}})
    assert sorted({layer for layer, _ in same}) == [x for x in expected if x.split(".head")[1][0] == x.split(".head")[2][0]]


@pytest.mark.parametrize("ks", [[1, 3, 6]])
def test_qk_ov_overlap_matches_full_svds(ks):
    w = make_model(1)
    got = run(w, {"qk_ov_overlap_max": {"ks": ks}, "qk_ov_overlap_rms": {"ks": ks}})
    for L in (1, 2):
        for h in range(HEADS):
            for h2 in range(HEADS):
                qk, ov = f"blocks.{L}.attn.head{h}.qk", f"blocks.{L - 1}.attn.head{h2}.ov"
                for k in ks:
                    s = plain_overlap(w[qk], w[ov], k)
                    assert got[(f"{qk}~{ov}", f"qk_ov_overlap_max.k{k}")] == pytest.approx(s.max(), abs=1e-9)
                    assert got[(f"{qk}~{ov}", f"qk_ov_overlap_rms.k{k}")] == pytest.approx(
                        math.sqrt((s**2).mean()), abs=1e-9
                    )
                    assert got[(f"{qk}~{ov}", f"qk_ov_overlap_max.k{k}_random")] == random_overlap_baseline(D, k)[0]
                    assert got[(f"{qk}~{ov}", f"qk_ov_overlap_rms.k{k}_random")] == random_overlap_baseline(D, k)[1]


def test_overlap_is_one_for_a_head_reading_what_the_previous_writes():
    rng = np.random.default_rng(2)
    basis = np.linalg.qr(rng.standard_normal((D, DH)))[0]
    w = {
        "l.0.head0.ov": basis @ rng.standard_normal((DH, D)),  # writes into span(basis)
        "l.1.head0.qk": rng.standard_normal((D, DH)) @ basis.T,  # keys read span(basis)
    }
    got = run(w, {"qk_ov_overlap_max": {"ks": [DH]}, "qk_ov_overlap_rms": {"ks": [DH]}})
    assert got[("l.1.head0.qk~l.0.head0.ov", f"qk_ov_overlap_max.k{DH}")] == pytest.approx(1.0)
    assert got[("l.1.head0.qk~l.0.head0.ov", f"qk_ov_overlap_rms.k{DH}")] == pytest.approx(1.0)


def test_k_above_rank_is_nan_with_warning():
    w = make_model(3, layers=2)
    with pytest.warns(RuntimeWarning, match="k7"):
        got = run(w, {"qk_ov_overlap_max": {"ks": [DH + 1]}})
    assert all(math.isnan(v) for (_, m), v in got.items() if m.endswith("k7"))
    assert all(v == random_overlap_baseline(D, DH + 1)[0] for (_, m), v in got.items() if m.endswith("k7_random"))


def test_embed_ov_overlap_matches_full_svds():
    w = make_model(4)
    got = run(w, {"embed_ov_overlap_max": {"ks": [2, 5]}, "embed_ov_overlap_rms": {"ks": [2, 5]}})
    assert sorted({layer for layer, _ in got}) == [f"embed~blocks.0.attn.head{h}.ov" for h in range(HEADS)]
    for h in range(HEADS):
        ov = w[f"blocks.0.attn.head{h}.ov"]
        for k in (2, 5):
            s = plain_overlap(w["embed"], ov, k)
            assert got[(f"embed~blocks.0.attn.head{h}.ov", f"embed_ov_overlap_max.k{k}")] == pytest.approx(s.max(), abs=1e-9)
            assert got[(f"embed~blocks.0.attn.head{h}.ov", f"embed_ov_overlap_rms.k{k}")] == pytest.approx(
                math.sqrt((s**2).mean()), abs=1e-9
            )


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_diag_zscores_and_mismatch_match_explicit_products(dtype):
    w = make_model(5, dtype=dtype)
    got = run(w, {"qk_ov_diag_zscore": {}, "qk_ov_token_diag_zscore": {}, "qk_ov_token_mismatch": {}})
    e = w["embed"].astype(np.float64)
    tol = 1e-8 if dtype == np.float64 else 1e-4
    for L in (1, 2):
        for h in range(HEADS):
            for h2 in range(HEADS):
                qk, ov = f"blocks.{L}.attn.head{h}.qk", f"blocks.{L - 1}.attn.head{h2}.ov"
                m = w[qk].astype(np.float64) @ w[ov].astype(np.float64)
                t = e @ m @ e.T
                label = f"{qk}~{ov}"
                assert got[(label, "qk_ov_diag_zscore")] == pytest.approx(plain_zscore(m), abs=tol)
                assert got[(label, "qk_ov_token_diag_zscore")] == pytest.approx(plain_zscore(t), abs=tol)
                mismatch = np.mean([np.argmax(t[i]) != i for i in range(VOCAB)])
                assert got[(label, "qk_ov_token_mismatch")] == pytest.approx(mismatch)


def test_token_mismatch_on_a_subset_of_query_tokens():
    w = make_model(6, layers=2, vocab=300)
    got = run(w, {"qk_ov_token_mismatch": {"max_tokens": 50, "pairs": "same"}})
    rows = token_rows(300, 50)
    assert len(rows) == 50 and len(set(rows)) == 50 and (np.diff(rows) > 0).all()
    e = w["embed"]
    for h in range(HEADS):
        qk, ov = f"blocks.1.attn.head{h}.qk", f"blocks.0.attn.head{h}.ov"
        t = e @ w[qk] @ w[ov] @ e.T
        assert got[(f"{qk}~{ov}", "qk_ov_token_mismatch")] == pytest.approx(np.mean(t[rows].argmax(1) != rows))


def test_identity_like_circuit_matches_every_token():
    rng = np.random.default_rng(7)
    e = rng.standard_normal((30, D))
    w = {"embed": e, "b.0.head0.ov": np.eye(D), "b.1.head0.qk": np.eye(D)}
    got = run(w, {"qk_ov_token_mismatch": {}, "qk_ov_token_diag_zscore": {}})
    t = e @ e.T
    assert got[("b.1.head0.qk~b.0.head0.ov", "qk_ov_token_mismatch")] == pytest.approx(np.mean(t.argmax(1) != np.arange(30)))
    assert got[("b.1.head0.qk~b.0.head0.ov", "qk_ov_token_diag_zscore")] == pytest.approx(plain_zscore(t))


def test_zero_circuits_give_defined_values():
    w = {"embed": np.ones((10, D)), "b.0.head0.ov": np.zeros((D, D)), "b.1.head0.qk": np.zeros((D, D))}
    got = run(w, {"qk_ov_diag_zscore": {}, "qk_ov_token_diag_zscore": {}, "qk_ov_token_mismatch": {}})
    assert got == {
        ("b.1.head0.qk~b.0.head0.ov", "qk_ov_diag_zscore"): 0.0,
        ("b.1.head0.qk~b.0.head0.ov", "qk_ov_token_diag_zscore"): 0.0,
        ("b.1.head0.qk~b.0.head0.ov", "qk_ov_token_mismatch"): 0.0,
    }


def test_token_metrics_need_the_embedding_and_nan_circuits_warn():
    w = make_model(8, layers=2)
    del w["embed"]
    assert run(w, {"qk_ov_token_mismatch": {}, "embed_ov_overlap_max": {}}) == {}
    w = make_model(8, layers=2)
    w["blocks.0.attn.head1.ov"][0, 0] = np.inf
    with pytest.warns(RuntimeWarning, match="blocks.0.attn.head1.ov"):
        got = run(w, {"qk_ov_diag_zscore": {}})
    for (label, _), v in got.items():
        assert math.isnan(v) == label.endswith("head1.ov")


# ---------------------------------------------------------------- random baseline


def plain_monte_carlo(d, k, n, seed):
    """100s of explicit SVDs: two random orthonormal k-frames of R^d per draw."""
    rng = np.random.default_rng(seed)
    maxes, rmss = [], []
    for _ in range(n):
        a = np.linalg.qr(rng.standard_normal((d, k)))[0]
        b = np.linalg.qr(rng.standard_normal((d, k)))[0]
        s = np.linalg.svd(a.T @ b, compute_uv=False)
        maxes.append(s.max())
        rmss.append(math.sqrt((s**2).mean()))
    return np.array(maxes), np.array(rmss)


@pytest.mark.parametrize("d, k", [(24, 1), (24, 3), (40, 8), (10, 6), (64, 16)])
def test_baseline_matches_plain_monte_carlo(d, k):
    maxes, rmss = plain_monte_carlo(d, k, 1500, seed=d * 100 + k)
    b_max, b_rms = random_overlap_baseline(d, k)
    # 5 standard errors of the plain estimate (plus the baseline's own, about as large or smaller)
    assert b_max == pytest.approx(maxes.mean(), abs=5 * maxes.std() / math.sqrt(1500) + 1e-3)
    assert b_rms == pytest.approx(rmss.mean(), abs=5 * rmss.std() / math.sqrt(1500) + 1e-3)


@pytest.mark.parametrize("d", [2, 5, 24, 300])
def test_baseline_k1_closed_form_and_monte_carlo_agree(d):
    # |cos| of two random unit vectors of R^d: E = Γ(d/2) / (√π Γ((d+1)/2)); the baseline uses it
    # for k = 1, the Monte-Carlo sampler (used for k > 1) must agree with it
    exact = math.exp(gammaln(d / 2) - gammaln((d + 1) / 2)) / math.sqrt(math.pi)
    assert random_overlap_baseline(d, 1) == pytest.approx((exact, exact), rel=1e-12)
    mc_max, mc_rms = overlap_monte_carlo(d, 1, 4000, seed=1)
    assert mc_max == pytest.approx(exact, rel=0.03) and mc_rms == pytest.approx(mc_max)


def test_baseline_mean_square_is_k_over_d():
    # E[mean s²] = k/d exactly; the Monte-Carlo draws have it within sampling error
    d, k = 50, 10
    rng_mean = np.mean([overlap_monte_carlo(d, k, 400, seed=s)[1] ** 2 for s in range(5)])
    assert rng_mean == pytest.approx(k / d, rel=0.02)


def test_baseline_edge_cases_and_cache():
    assert random_overlap_baseline(8, 8) == (1.0, 1.0)
    assert all(math.isnan(v) for v in random_overlap_baseline(4, 5))
    random_overlap_baseline.cache_clear()
    random_overlap_baseline(512, 64)
    random_overlap_baseline(512, 64)
    info = random_overlap_baseline.cache_info()
    assert info.misses == 1 and info.hits == 1
