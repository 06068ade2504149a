"""Architecture adapters on real model structures built offline (tiny configs, random weights).

The per-head split is checked the strong way: the attention layer's output is REBUILT by hand from
the extracted per-head q/k/v/o matrices (plus the per-head biases), with the model's own position
and masking conventions, and compared with what the transformers module computed on the same input.
A wrong layout (e.g. reading GPT-NeoX's fused qkv as q|k|v blocks) fails these tests; the negative
controls below prove it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters.base import HEAD_PIECES  # noqa: E402

D, H, L, V = 32, 4, 2, 50
DH = D // H


# ---------------------------------------------------------------------------------------------
# helpers
def _randomize(model, seed=0):
    """Random weights AND biases (HF initialises biases to zero, which would hide bias-layout bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def _state(model):
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return list(sd), sd.__getitem__, sd


def _counting(get):
    calls = []

    def g(k):
        calls.append(k)
        return get(k)

    return g, calls


def _capture(module, fn):
    """Run fn(); return (first positional input, first output) of ``module``."""
    seen = {}

    def hook(_m, args, kwargs, out):
        seen["x"] = args[0] if args else kwargs["hidden_states"]
        seen["y"] = out[0] if isinstance(out, tuple) else out

    h = module.register_forward_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            fn()
    finally:
        h.remove()
    return seen["x"].double(), seen["y"].double()


def _pieces(adapter, keys, get, module):
    """{(h, piece): tensor float64} for one attention module, through the public names."""
    out = {}
    for name, w in adapter.weight_matrices(keys, get, [f"{module}.head*"]):
        head, piece = name[len(module) + 1 :].split(".")
        out[int(head[4:]), piece] = torch.from_numpy(w).double()
    assert len(out) == H * len(HEAD_PIECES)
    return out


def _attend(q, k, v, causal, rope=None):
    """q, k, v: [T, dh] of one head -> [T, dh]."""
    if rope is not None:
        q, k = rope(q), rope(k)
    s = q @ k.T / math.sqrt(q.shape[-1])
    if causal:
        t = s.shape[0]
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return s.softmax(-1) @ v


def _rebuild(p, aw, x, causal, rope=None):
    """Attention output from per-head pieces p[(h, q|k|v|o)] and biases aw.b_* on x [T, d]."""
    out = torch.zeros(x.shape[0], p[0, "o"].shape[0], dtype=torch.float64)
    for h in range(H):

        def lin(w, b):
            y = x @ w.T
            return y if b is None else y + torch.from_numpy(b[h]).double()

        z = _attend(lin(p[h, "q"], aw.b_Q), lin(p[h, "k"], aw.b_K), lin(p[h, "v"], aw.b_V), causal, rope)
        out += z @ p[h, "o"].T
    if aw.b_O is not None:
        out += torch.from_numpy(aw.b_O).double()
    return out


def _check_circuits(p):
    for h in range(H):
        q, k, v, o = p[h, "q"], p[h, "k"], p[h, "v"], p[h, "o"]
        assert q.shape == k.shape == v.shape == (DH, D) and o.shape == (D, DH)
        assert p[h, "ov"].shape == p[h, "qk"].shape == (D, D)
        torch.testing.assert_close(p[h, "ov"], o @ v, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(p[h, "qk"], q.T @ k / math.sqrt(DH), rtol=1e-5, atol=1e-5)


def _check_plain_weights(adapter, model, keys, get):
    """Every plain (non-head) name is a real module; Linear/Conv1D matrices act as [out, in]."""
    modules = dict(model.named_modules())
    x = torch.randn(3, 200)
    names = []
    for name, w in adapter.weight_matrices(keys, get, None):
        assert w.dtype == np.float32 and w.ndim == 2
        if ".head" in name or name == "embed":
            continue
        names.append(name)
        assert name in modules, name
        mod = modules[name]
        if isinstance(mod, torch.nn.Embedding):
            np.testing.assert_array_equal(w, mod.weight.detach().numpy())
            continue
        xi = x[:, : w.shape[1]].float()
        with torch.no_grad():
            expected = mod(xi)
            bias = getattr(mod, "bias", None)
            got = xi @ torch.from_numpy(w).T + (0 if bias is None else bias)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    return names


def _check_layer_names(adapter, keys, get):
    """layer_names lists exactly what weight_matrices yields, without reading a tensor."""
    listed = adapter.layer_names(keys)  # takes no getter at all
    yielded = [n for n, _ in adapter.weight_matrices(keys, get, None)]
    assert sorted(listed) == sorted(yielded)
    assert len(set(listed)) == len(listed)
    return listed
