"""Circuit metrics (family ``circuits``) against plain formulas written here: full SVDs of the
circuit matrices, the product matrices formed explicitly, a plain Monte-Carlo estimate of the
random-subspace baseline, and the closed form E|cos| for k = 1."""

import math

import numpy as np
import pytest
from scipy.special import gammaln

from ckptlens import metrics as M
from ckptlens.metrics._circuits import overlap_monte_carlo, random_overlap_baseline
from ckptlens.metrics.circuits import token_rows

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
    assert sorted({layer for layer, _ in same}) == [
        x for x in expected if x.split(".head")[1][0] == x.split(".head")[2][0]
    ]


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
            assert got[(f"embed~blocks.0.attn.head{h}.ov", f"embed_ov_overlap_max.k{k}")] == pytest.approx(
                s.max(), abs=1e-9
            )
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
    assert got[("b.1.head0.qk~b.0.head0.ov", "qk_ov_token_mismatch")] == pytest.approx(
        np.mean(t.argmax(1) != np.arange(30))
    )
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


# ---------------------------------------------------------------- rotary sweep (qk_ov_rotary_sweep)


def plain_rotary_qk(wq, wk, r, base):
    """W_Qᵀ·Rot·W_K/√d_head with Rot written out: block i = [[cos a, sin a], [−sin a, cos a]],
    a = r·base^(−2i/d_head), i.e. the rotation by −r·ω_i (key r positions behind the query)."""
    dh = wq.shape[0]
    rot = np.zeros((dh, dh))
    for i in range(dh // 2):
        a = r * base ** (-2 * i / dh)
        rot[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = [[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]
    return wq.T @ rot @ wk / math.sqrt(dh)


def make_rotary_model(seed=0, layers=3, vocab=VOCAB, dtype=np.float64, dh=DH):
    """Like make_model, with the per-head W_Q/W_K pieces stored too (.qk as the adapter forms it)."""
    rng = np.random.default_rng(seed)
    w = {"embed": rng.standard_normal((vocab, D)).astype(dtype)}
    for layer in range(layers):
        for h in range(HEADS):
            wq, wk, wv = (rng.standard_normal((dh, D)).astype(dtype) for _ in range(3))
            wo = rng.standard_normal((D, dh)).astype(dtype)
            name = f"blocks.{layer}.attn.head{h}"
            w[f"{name}.q"], w[f"{name}.k"] = wq, wk
            qk = wq.astype(np.float64).T @ wk.astype(np.float64) / math.sqrt(dh)
            w[f"{name}.qk"] = qk.astype(dtype)
            w[f"{name}.ov"] = (wo.astype(np.float64) @ wv.astype(np.float64)).astype(dtype)
    return w


def rotary_labels(layers=3, same=False):
    return sorted(
        f"blocks.{L}.attn.head{h}.qk~blocks.{L - 1}.attn.head{h2}.ov"
        for L in range(1, layers)
        for h in range(HEADS)
        for h2 in range(HEADS)
        if not same or h == h2
    )


def test_rotary_qk_reproduces_the_toy_models_attention_scores():
    """x_pᵀ·W_QK(r)·x_{p−r} from the adapter's .q/.k pieces equals the pre-softmax score of the real
    toy model's layer-1 heads (recomputed with the model's own rotary code, and checked to give the
    attention module's actual output), for several (p, r); the opposite rotation does not."""
    torch = pytest.importorskip("torch")
    from ckptlens.adapters.toy import ToyAdapter
    from ckptlens.metrics._circuits import rotary_qk
    from ckptlens.sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig, apply_rotary, rotary_cos_sin

    torch.manual_seed(0)
    cfg = ToyModelConfig(vocab_size=16, d_model=16, n_layers=2, n_heads=2)
    model = AttnOnlyTransformer(cfg).eval()
    attn = model.blocks[1].attn
    seen = {}
    hook = attn.register_forward_hook(lambda mod, args, out: seen.update(x=args[0].detach(), out=out.detach()))
    tokens = torch.randint(0, 16, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(tokens)
    hook.remove()
    x = seen["x"]  # [b, t, d]: the residual stream entering layer 1
    b, t, d = x.shape
    nh, dh = cfg.n_heads, cfg.d_head
    with torch.no_grad():

        def heads(y):
            return y.view(b, t, nh, dh).transpose(1, 2)

        cos, sin = rotary_cos_sin(t, dh, cfg.rotary_base)
        q = apply_rotary(heads(attn.q_proj(x)), cos, sin)
        k = apply_rotary(heads(attn.k_proj(x)), cos, sin)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [b, h, t, t]
        probs = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        out = attn.o_proj((probs @ heads(attn.v_proj(x))).transpose(1, 2).reshape(b, t, d))
    torch.testing.assert_close(out, seen["out"])  # the recomputed scores are the model's
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    pieces = dict(ToyAdapter(n_heads=nh).weight_matrices(list(sd), sd.__getitem__, ["embed", "blocks.*.attn.head*"]))
    xs, sc = x.double().numpy(), scores.double().numpy()
    for h in range(nh):
        wq, wk = pieces[f"blocks.1.attn.head{h}.q"], pieces[f"blocks.1.attn.head{h}.k"]
        assert wq.shape == (dh, d)
        for r in (0, 1, 2, 5, 11, 19):
            ours, plain = (
                rotary_qk(wq, wk, r, cfg.rotary_base),
                plain_rotary_qk(wq.astype(float), wk.astype(float), r, cfg.rotary_base),
            )
            wrong_sign = rotary_qk(wq, wk, -r, cfg.rotary_base)
            for p in range(r, t, 3):
                for batch in range(b):
                    xq, xk = xs[batch, p], xs[batch, p - r]
                    assert xq @ ours @ xk == pytest.approx(sc[batch, h, p, p - r], rel=1e-4, abs=1e-4)
                    assert xq @ plain @ xk == pytest.approx(sc[batch, h, p, p - r], rel=1e-4, abs=1e-4)
            if r:  # the sign matters: R(+r·ω) gives other scores
                diff = [abs(xs[0, p] @ wrong_sign @ xs[0, p - r] - sc[0, h, p, p - r]) for p in range(r, t)]
                assert max(diff) > 1e-2
        assert np.allclose(rotary_qk(wq, wk, 0, cfg.rotary_base), pieces[f"blocks.1.attn.head{h}.qk"], atol=1e-6)
    # the metric runs on the adapter's pieces, with the other circuit metrics' labels
    got = run(pieces, {"qk_ov_rotary_sweep": {"offsets": [0, 3]}, "qk_ov_overlap_max": {"ks": [1, 2, 4]}})
    labels = {layer for layer, m in got if m.startswith("qk_ov_rotary_sweep.")}
    assert labels == {layer for layer, m in got if m.startswith("qk_ov_overlap_max.")} and len(labels) == nh * nh
    for label in labels:
        for k in (1, 2, 4):
            assert got[(label, f"qk_ov_rotary_sweep.k{k}_r0")] == pytest.approx(
                got[(label, f"qk_ov_overlap_max.k{k}")], abs=1e-5
            )


@pytest.mark.parametrize("base", [10000.0, 100])
def test_rotary_sweep_matches_explicit_matrices(base):
    w = make_rotary_model(11)
    offsets, ks = [0, 1, 3, 16, 100], [1, 3, 6]
    got = run(w, {"qk_ov_rotary_sweep": {"offsets": offsets, "ks": ks, "rotary_base": base}})
    assert sorted({layer for layer, _ in got}) == rotary_labels()
    e = w["embed"]
    for L in (1, 2):
        for h in range(HEADS):
            name = f"blocks.{L}.attn.head{h}"
            for h2 in range(HEADS):
                ov = w[f"blocks.{L - 1}.attn.head{h2}.ov"]
                label = f"{name}.qk~blocks.{L - 1}.attn.head{h2}.ov"
                metrics = sorted(m for lab, m in got if lab == label)
                assert metrics == sorted(
                    [f"qk_ov_rotary_sweep.k{k}_r{r}" for k in ks for r in offsets]
                    + [f"qk_ov_rotary_sweep.zscore_r{r}" for r in offsets]
                )
                for r in offsets:
                    qk_r = plain_rotary_qk(w[f"{name}.q"], w[f"{name}.k"], r, base)
                    for k in ks:
                        s = plain_overlap(qk_r, ov, k)
                        assert got[(label, f"qk_ov_rotary_sweep.k{k}_r{r}")] == pytest.approx(s.max(), abs=1e-9)
                    z = plain_zscore(e @ qk_r @ ov @ e.T)
                    assert got[(label, f"qk_ov_rotary_sweep.zscore_r{r}")] == pytest.approx(z, abs=1e-9)
    # the offsets change the circuit: some value at r > 0 differs from r = 0
    assert any(
        abs(got[(lab, f"qk_ov_rotary_sweep.zscore_r{r}")] - got[(lab, "qk_ov_rotary_sweep.zscore_r0")]) > 1e-3
        for lab in rotary_labels()
        for r in offsets[1:]
    )
    params = {"offsets": [2], "ks": [1], "rotary_base": base}
    same = run(w, {"qk_ov_rotary_sweep": {**params, "pairs": "same"}})
    every = run(w, {"qk_ov_rotary_sweep": params})
    assert sorted({layer for layer, _ in same}) == rotary_labels(same=True)
    assert same == {key: v for key, v in every.items() if key[0] in rotary_labels(same=True)}


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_rotary_sweep_at_offset_zero_is_the_position_free_metrics(dtype, tol):
    w = make_rotary_model(12, dtype=dtype)
    ks = [1, 2, 4, DH, DH + 1]
    got = run(
        w,
        {
            "qk_ov_rotary_sweep": {"offsets": [0, 5], "ks": ks},
            "qk_ov_overlap_max": {"ks": ks},
            "qk_ov_token_diag_zscore": {},
        },
    )
    labels = rotary_labels()
    assert labels == sorted({layer for layer, m in got if m.startswith("qk_ov_overlap_max")})
    for label in labels:
        for k in ks:
            ref, ours = got[(label, f"qk_ov_overlap_max.k{k}")], got[(label, f"qk_ov_rotary_sweep.k{k}_r0")]
            if k > DH:  # above the rank of W_QK: NaN in both
                assert math.isnan(ref) and math.isnan(ours) and math.isnan(got[(label, f"qk_ov_rotary_sweep.k{k}_r5")])
            else:
                assert ours == pytest.approx(ref, abs=tol)
        ref = got[(label, "qk_ov_token_diag_zscore")]
        assert got[(label, "qk_ov_rotary_sweep.zscore_r0")] == pytest.approx(ref, abs=tol)


def test_rotary_sweep_missing_pieces_embedding_and_bad_inputs():
    # no .q/.k pieces at all (an extraction of qk/ov only): no rows, one warning naming them
    w = make_rotary_model(13, layers=2)
    plain = {n: x for n, x in w.items() if not n.endswith((".q", ".k"))}
    with pytest.warns(RuntimeWarning, match=r"blocks\.1\.attn\.head0\.q"):
        assert run(plain, {"qk_ov_rotary_sweep": {}}) == {}
    # one head lacks its .k: no rows for it, the other head's rows are there
    partial = dict(w)
    del partial["blocks.1.attn.head1.k"]
    with pytest.warns(RuntimeWarning, match=r"blocks\.1\.attn\.head1\.k") as rec:
        got = run(partial, {"qk_ov_rotary_sweep": {"offsets": [1], "ks": [1]}})
    assert "blocks.1.attn.head0.k" not in " ".join(str(r.message) for r in rec)
    assert sorted({layer for layer, _ in got}) == [
        f"blocks.1.attn.head0.qk~blocks.0.attn.head{h2}.ov" for h2 in range(HEADS)
    ]
    # layer 0 has no previous layer: its .q/.k are not needed
    no_first = {n: x for n, x in w.items() if not n.startswith("blocks.0.attn.head0.q")}
    got = run(no_first, {"qk_ov_rotary_sweep": {"offsets": [1], "ks": [1]}})
    assert len({layer for layer, _ in got}) == HEADS * HEADS
    # without the embedding: the overlap values only
    no_embed = {n: x for n, x in w.items() if n != "embed"}
    got = run(no_embed, {"qk_ov_rotary_sweep": {"offsets": [0, 2], "ks": [1]}})
    assert {m for _, m in got} == {"qk_ov_rotary_sweep.k1_r0", "qk_ov_rotary_sweep.k1_r2"}
    # NaN/Inf in a W_K piece or an OV circuit: NaN for its labels (with the store's warning)
    bad = make_rotary_model(13, layers=2)
    bad["blocks.1.attn.head0.k"][0, 0] = np.nan
    bad["blocks.0.attn.head1.ov"][1, 1] = np.inf
    with pytest.warns(RuntimeWarning, match="blocks.1.attn.head0.k"):
        got = run(bad, {"qk_ov_rotary_sweep": {"offsets": [0, 1], "ks": [1, 2]}})
    for (label, _), v in got.items():
        assert math.isnan(v) == (label.startswith("blocks.1.attn.head0.") or label.endswith("head1.ov"))
    # an odd d_head has no rotary pairs: NaN
    odd = make_rotary_model(14, layers=2, dh=5)
    with pytest.warns(RuntimeWarning, match="odd d_head"):
        got = run(odd, {"qk_ov_rotary_sweep": {"offsets": [0, 1], "ks": [1]}})
    assert got and all(math.isnan(v) for v in got.values())
    # zero circuits: defined values as for the position-free metrics (overlap NaN: rank 0)
    zero = {
        "embed": np.ones((10, D)),
        "b.0.head0.ov": np.zeros((D, D)),
        "b.1.head0.q": np.zeros((DH, D)),
        "b.1.head0.k": np.zeros((DH, D)),
    }
    got = run(zero, {"qk_ov_rotary_sweep": {"offsets": [3], "ks": [1]}})
    assert got[("b.1.head0.qk~b.0.head0.ov", "qk_ov_rotary_sweep.zscore_r3")] == 0.0
    assert math.isnan(got[("b.1.head0.qk~b.0.head0.ov", "qk_ov_rotary_sweep.k1_r3")])


def test_rotary_sweep_does_not_change_the_other_circuit_metrics():
    w = make_rotary_model(15)
    plain = {n: x for n, x in w.items() if not n.endswith((".q", ".k"))}
    metrics = {
        "qk_ov_overlap_max": {"ks": [1, 3]},
        "qk_ov_diag_zscore": {},
        "qk_ov_token_mismatch": {},
        "embed_ov_overlap_rms": {"ks": [2]},
    }
    assert run(w, metrics) == run(plain, metrics)
    # a module with only .q/.k pieces does not enter the position-free metrics' layer order
    extra = dict(plain)
    extra["blocks.5.attn.head0.q"] = np.ones((DH, D))
    extra["blocks.5.attn.head0.k"] = np.ones((DH, D))
    assert run(extra, metrics) == run(plain, metrics)


def test_rotary_sweep_defaults_and_parameter_errors():
    assert M.resolve_params("qk_ov_rotary_sweep", {}) == {
        "offsets": [0, 1, 2, 4, 8, 16],
        "ks": [1, 2, 4],
        "rotary_base": 10000.0,
        "pairs": "all",
    }
    assert M.get_metric("qk_ov_rotary_sweep").family == "circuits"
    assert M.get_metric("qk_ov_rotary_sweep").references == ()
    assert M.resolve_params("qk_ov_rotary_sweep", {"offsets": [0, 7], "rotary_base": 500})["rotary_base"] == 500
    bad = [
        ("offsets", []),
        ("offsets", [-1]),
        ("offsets", [1.5]),
        ("offsets", "0,1"),
        ("offsets", [True]),
        ("offsets", 4),
        ("ks", []),
        ("ks", [0]),
        ("ks", [2.0]),
        ("rotary_base", 0),
        ("rotary_base", -1.0),
        ("rotary_base", "1e4"),
        ("rotary_base", math.inf),
        ("rotary_base", math.nan),
        ("rotary_base", True),
        ("pairs", "some"),
    ]
    for key, value in bad:
        with pytest.raises(M.MetricConfigError, match=rf"metrics\.qk_ov_rotary_sweep\.{key}"):
            M.resolve_params("qk_ov_rotary_sweep", {key: value})
    with pytest.raises(M.MetricConfigError, match=r"metrics\.qk_ov_rotary_sweep\.offset'.*no parameter"):
        M.resolve_params("qk_ov_rotary_sweep", {"offset": [1]})


# ---------------------------------------------------------------- token metrics per rank (ks)


def plain_truncation(w, k):
    """W's top-k singular triplets, from a full SVD: U[:, :k]·diag(s[:k])·Vᵀ[:k]."""
    u, s, vt = np.linalg.svd(w)
    return u[:, :k] @ np.diag(s[:k]) @ vt[:k]


def plain_token_values(e, qk, ov, k=None, rows=None):
    """(diag z-score, argmax mismatch) of E·[W_QK]_k·[W_OV]_k·Eᵀ formed explicitly (k None: untruncated)."""
    e, qk, ov = (np.asarray(x, dtype=np.float64) for x in (e, qk, ov))
    if k is not None:
        qk, ov = plain_truncation(qk, k), plain_truncation(ov, k)
    t = e @ qk @ ov @ e.T
    rows = np.arange(len(e)) if rows is None else rows
    return plain_zscore(t), np.mean([np.argmax(t[i]) != i for i in rows])


TOKEN_METRICS = ("qk_ov_token_diag_zscore", "qk_ov_token_mismatch")


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-8), (np.float32, 1e-4)])
def test_token_metrics_per_rank_match_explicit_truncations(dtype, tol):
    w = make_model(21, dtype=dtype)
    ks = [1, 2, 4, DH]
    got = run(w, {name: {"ks": ks} for name in TOKEN_METRICS})
    labels = sorted({layer for layer, _ in got})
    assert len(labels) == 2 * HEADS * HEADS
    suffixes = [f"k{k}" for k in ks] + ["full"]
    assert sorted(m for lab, m in got if lab == labels[0]) == sorted(
        f"{n}.{s}" for n in TOKEN_METRICS for s in suffixes
    )
    for label in labels:
        qk_name, ov_name = label.split("~")
        for k in [*ks, None]:
            z, mismatch = plain_token_values(w["embed"], w[qk_name], w[ov_name], k)
            suffix = "full" if k is None else f"k{k}"
            assert got[(label, f"qk_ov_token_diag_zscore.{suffix}")] == pytest.approx(z, abs=tol)
            assert got[(label, f"qk_ov_token_mismatch.{suffix}")] == pytest.approx(mismatch)
    # the truncation matters: rank 1 differs from the full circuits somewhere
    assert any(
        abs(got[(lab, "qk_ov_token_diag_zscore.k1")] - got[(lab, "qk_ov_token_diag_zscore.full")]) > 1e-3
        for lab in labels
    )
    assert any(got[(lab, "qk_ov_token_mismatch.k1")] != got[(lab, "qk_ov_token_mismatch.full")] for lab in labels)


def test_token_metrics_full_is_the_unsuffixed_value_and_ks_absent_is_unchanged():
    w = make_model(22)
    plain = run(w, {name: {} for name in TOKEN_METRICS})
    assert run(w, {name: {"ks": None} for name in TOKEN_METRICS}) == plain
    assert {m for _, m in plain} == set(TOKEN_METRICS)  # one unsuffixed value per label
    for (label, name), v in plain.items():  # and the values of the full circuits, as before
        z, mismatch = plain_token_values(w["embed"], *(w[n] for n in label.split("~")))
        assert v == pytest.approx(z if name == TOKEN_METRICS[0] else mismatch, abs=1e-8)
    per_rank = run(w, {name: {"ks": [2, 3]} for name in TOKEN_METRICS})
    assert {(label, f"{name}.full"): v for (label, name), v in plain.items()} == {
        key: v for key, v in per_rank.items() if key[1].endswith(".full")
    }
    # the other parameters act as before: pairs and the query-token subset
    w = make_model(23, layers=2, vocab=300)
    params = {"max_tokens": 50, "pairs": "same"}
    plain = run(w, {"qk_ov_token_mismatch": params})
    per_rank = run(w, {"qk_ov_token_mismatch": {**params, "ks": [1, 5]}})
    assert (
        sorted({lab for lab, _ in per_rank})
        == sorted({lab for lab, _ in plain})
        == [f"blocks.1.attn.head{h}.qk~blocks.0.attn.head{h}.ov" for h in range(HEADS)]
    )
    rows = token_rows(300, 50)
    for (label, _), v in plain.items():
        assert per_rank[(label, "qk_ov_token_mismatch.full")] == v
        for k in (1, 5):
            _, mismatch = plain_token_values(w["embed"], *(w[n] for n in label.split("~")), k=k, rows=rows)
            assert per_rank[(label, f"qk_ov_token_mismatch.k{k}")] == pytest.approx(mismatch)


def test_token_metrics_k_above_the_numerical_rank_of_either_circuit_is_nan():
    rng = np.random.default_rng(24)
    e = rng.standard_normal((VOCAB, D))
    w = {
        "embed": e,
        "b.0.head0.ov": rng.standard_normal((D, 3)) @ rng.standard_normal((3, D)),  # rank 3 (numerically)
        "b.1.head0.qk": rng.standard_normal((D, DH)) @ rng.standard_normal((DH, D)),  # rank DH
        "b.1.head1.qk": np.zeros((D, D)),  # rank 0
    }
    ks = [1, 3, 4, DH, DH + 1]
    with pytest.warns(RuntimeWarning, match=r"qk_ov_token_diag_zscore\.k4"):
        got = run(w, {name: {"ks": ks} for name in TOKEN_METRICS})
    label = "b.1.head0.qk~b.0.head0.ov"
    for k in ks:
        for i, name in enumerate(TOKEN_METRICS):
            v = got[(label, f"{name}.k{k}")]
            if k > 3:  # above the OV circuit's rank, whatever the QK circuit's
                assert math.isnan(v)
            else:
                assert v == pytest.approx(plain_token_values(e, w["b.1.head0.qk"], w["b.0.head0.ov"], k)[i], abs=1e-8)
    # k = 3 is the OV circuit's rank: truncating it changes nothing, truncating W_QK to rank 3 does
    z3 = plain_token_values(e, plain_truncation(w["b.1.head0.qk"], 3), w["b.0.head0.ov"])[0]
    assert got[(label, "qk_ov_token_diag_zscore.k3")] == pytest.approx(z3, abs=1e-8)
    # a zero QK circuit: every k is NaN, the full values are defined as before
    zero = "b.1.head1.qk~b.0.head0.ov"
    assert all(math.isnan(got[(zero, f"{name}.k{k}")]) for name in TOKEN_METRICS for k in ks)
    assert got[(zero, "qk_ov_token_diag_zscore.full")] == 0.0
    assert got[(zero, "qk_ov_token_mismatch.full")] == 0.0


def test_token_metrics_per_rank_without_embedding_and_with_bad_circuits():
    w = make_model(25, layers=2)
    del w["embed"]
    assert run(w, {name: {"ks": [1]} for name in TOKEN_METRICS}) == {}
    w = make_model(25, layers=2)
    w["blocks.0.attn.head1.ov"][0, 0] = np.nan
    with pytest.warns(RuntimeWarning, match="blocks.0.attn.head1.ov"):
        got = run(w, {name: {"ks": [1, 2]} for name in TOKEN_METRICS})
    assert len(got) == HEADS * HEADS * 2 * 3
    for (label, _), v in got.items():
        assert math.isnan(v) == label.endswith("head1.ov")


@pytest.mark.parametrize("name", TOKEN_METRICS)
def test_token_metrics_ks_parameter(name):
    defaults = {"pairs": "all", "ks": None, **({"max_tokens": 2048} if name == "qk_ov_token_mismatch" else {})}
    assert M.resolve_params(name, {}) == defaults
    assert M.resolve_params(name, {"ks": [1, 2, 4]}) == {**defaults, "ks": [1, 2, 4]}
    assert M.resolve_params(name, {"ks": None}) == defaults
    for value in ([], [0], [-1], [2.0], [True], "1,2", 4, (), [1, None]):
        with pytest.raises(M.MetricConfigError, match=rf"'metrics\.{name}\.ks'.*null .*positive integers"):
            M.resolve_params(name, {"ks": value})
    # the other parameters are still checked, with ks given or not
    for ks in (None, [1]):
        with pytest.raises(M.MetricConfigError, match=rf"metrics\.{name}\.pairs"):
            M.resolve_params(name, {"ks": ks, "pairs": "some"})
        if name == "qk_ov_token_mismatch":
            with pytest.raises(M.MetricConfigError, match=rf"metrics\.{name}\.max_tokens"):
                M.resolve_params(name, {"ks": ks, "max_tokens": 0})
    with pytest.raises(M.MetricConfigError, match=rf"metrics\.{name}\.k'.*no parameter"):
        M.resolve_params(name, {"k": [1]})
