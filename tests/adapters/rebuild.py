"""Rebuilding an attention layer from an adapter's per-head pieces, for the adapter tests of the
Llama family, BLOOM, ModernBERT and OLMo-1: the truth is the model's own eager attention.

:func:`run_attention` captures, for one attention module of a transformers model run on a token
batch, its input, its position embeddings (cos, sin), its attention probabilities and its output;
:func:`rebuild` computes the same probabilities and output from the per-head pieces named by the
adapter (``head{h}.q|k|v|o|qk|ov``, ``kv{j}.k|v``) and the biases, norm information, score scale,
soft-cap and ALiBi slopes of :meth:`Adapter.attention_weights`, in float64."""

from __future__ import annotations

import sys

import numpy as np
import torch


def randomize(model, seed=0, scale=0.3, skip=("act_fn",)):
    """Random weights, biases and norm gains (HF initialises biases to zero and gains to one, which
    would hide layout bugs); parameters whose name contains one of ``skip`` are kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in skip):
                continue
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


def state(model):
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return list(sd), sd.__getitem__, sd


def run_attention(model, attn, tokens, output_module=None):
    """(x [T, d], position_embeddings or None, probs [H, T, T], output [T, d]) of ``attn`` on
    ``tokens`` [1, T]; the output is ``output_module``'s where given (BLOOM adds its residual inside
    the attention module), else the attention module's first output."""
    seen = {}

    def hook(_m, args, kwargs, out):
        seen["x"] = args[0] if args else kwargs["hidden_states"]
        seen["pos"] = kwargs.get("position_embeddings")
        seen["y"] = out[0] if isinstance(out, tuple) else out
        seen["p"] = out[1] if isinstance(out, tuple) and len(out) > 1 else None

    handles = [attn.register_forward_hook(hook, with_kwargs=True)]
    if output_module is not None:
        handles.append(output_module.register_forward_hook(lambda _m, _a, out: seen.__setitem__("o", out)))
    try:
        with torch.no_grad():
            model(tokens, output_attentions=True)
    finally:
        for h in handles:
            h.remove()
    y = seen["o"] if output_module is not None else seen["y"]
    assert seen["p"] is not None, "the attention module returned no probabilities (eager attention?)"
    pos = None if seen["pos"] is None else tuple(t.double() for t in seen["pos"])
    return seen["x"][0].double(), pos, seen["p"][0].double(), y[0].double()


def module_rope(attn, pos):
    """The model's own rotary embedding (its module's ``apply_rotary_pos_emb``) on one head's
    q and k [T, dh], with the captured (cos, sin); None where the layer gets none."""
    if pos is None:
        return None
    fn = sys.modules[type(attn).__module__].apply_rotary_pos_emb
    cos, sin = pos

    def rope(q, k):
        q2, k2 = fn(q[None, None], k[None, None], cos, sin)
        return q2[0, 0], k2[0, 0]

    return rope


def head_pieces(adapter, keys, get, module):
    """{(kind, index, piece): float64 tensor}, kind ``head`` or ``kv``, through the public names."""
    out = {}
    for name, w in adapter.weight_matrices(keys, get, [f"{module}.head*", f"{module}.kv*"]):
        unit, piece = name[len(module) + 1 :].split(".")
        kind = "kv" if unit.startswith("kv") else "head"
        out[kind, int(unit[len(kind) :]), piece] = torch.from_numpy(w).double()
    return out


def _t(a):
    return None if a is None else torch.from_numpy(np.asarray(a)).double()


def rebuild(p, aw, x, *, causal=True, rope=None, kv_of=None, window=None):
    """(probs [H, T, T], output from q/k/v/o, output from the OV circuits) of one attention module.

    ``p``: :func:`head_pieces`; ``aw``: the adapter's AttentionWeights (biases, norms, scale,
    soft-cap, ALiBi); ``kv_of(h)``: the key/value head of query head h (default: aw.kv_head)."""
    n, t = aw.n_heads, x.shape[0]
    kv_of = kv_of or aw.kv_head
    grouped = any(k[0] == "kv" for k in p)

    def kv_piece(j, which):
        return p["kv", j, which] if grouped else p["head", j, which]

    def proj(w, b, gain):
        y = x @ w.T
        if b is not None:
            y = y + (b if gain is None else gain * b)
        return y

    def rms(w_all, b_all, heads):
        """The per-token RMS of the raw projection: per head [heads, T, 1] or over all heads."""
        raw = torch.einsum("hed,td->hte", _t(w_all), x)
        if b_all is not None:
            raw = raw + _t(b_all)[:, None, :]
        if aw.qk_norm == "head":
            return (raw.pow(2).mean(-1, keepdim=True) + aw.norm_eps).sqrt()
        full = raw.permute(1, 0, 2).reshape(t, -1)
        r = (full.pow(2).mean(-1, keepdim=True) + aw.norm_eps).sqrt()
        return r[None].expand(heads, t, 1)

    gq, gk = _t(aw.q_gain), _t(aw.k_gain)
    bq, bk, bv, bo = _t(aw.b_Q), _t(aw.b_K), _t(aw.b_V), _t(aw.b_O)
    rq = rms(aw.W_Q, aw.b_Q, n) if aw.qk_norm else None
    rk = rms(aw.W_K, aw.b_K, aw.n_kv_heads) if aw.qk_norm else None
    mask = torch.ones(t, t, dtype=torch.bool)
    if causal:
        mask = mask.tril()
    if window is not None:
        mask &= (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs() < window
    probs = torch.zeros(n, t, t, dtype=torch.float64)
    out = torch.zeros(t, aw.W_O.shape[1], dtype=torch.float64)
    out_ov = torch.zeros_like(out)
    for h in range(n):
        j = kv_of(h)
        q = proj(p["head", h, "q"], None if bq is None else bq[h], None if gq is None else gq[h])
        k = proj(kv_piece(j, "k"), None if bk is None else bk[j], None if gk is None else gk[j])
        v = proj(kv_piece(j, "v"), None if bv is None else bv[j], None)
        if rq is not None:
            q, k = q / rq[h], k / rk[j]
        if rope is not None:
            q, k = rope(q, k)
        s = q @ k.T * aw.score_scale
        if aw.softcap:
            s = aw.softcap * torch.tanh(s / aw.softcap)
        if aw.alibi_slopes is not None:
            s = s + float(aw.alibi_slopes[h]) * torch.arange(t, dtype=torch.float64)[None, :]
        a = s.masked_fill(~mask, float("-inf")).softmax(-1)
        probs[h] = a
        out += a @ v @ p["head", h, "o"].T
        # the OV circuit of head h: a·x·W_OVᵀ, plus W_O·b_V (the rows of a sum to one)
        out_ov += a @ x @ p["head", h, "ov"].T
        if bv is not None:
            out_ov += p["head", h, "o"] @ bv[j]
    if bo is not None:
        out, out_ov = out + bo, out_ov + bo
    return probs, out, out_ov


def check_circuits(p, aw):
    """``qk`` = q(h)ᵀ·k(kv_head(h))·scale and ``ov`` = o(h)·v(kv_head(h)) for every query head."""
    grouped = any(k[0] == "kv" for k in p)
    for h in range(aw.n_heads):
        j = aw.kv_head(h)
        k = p["kv", j, "k"] if grouped else p["head", j, "k"]
        v = p["kv", j, "v"] if grouped else p["head", j, "v"]
        torch.testing.assert_close(p["head", h, "qk"], p["head", h, "q"].T @ k * aw.score_scale, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(p["head", h, "ov"], p["head", h, "o"] @ v, rtol=1e-5, atol=1e-5)
