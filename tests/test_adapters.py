"""Architecture adapters on real model structures built offline (tiny configs, random weights).

The per-head split is checked the strong way: the attention layer's output is REBUILT by hand from
the extracted per-head q/k/v/o matrices (plus the per-head biases), with the model's own position
and masking conventions, and compared with what the transformers module computed on the same input.
A wrong layout (e.g. reading GPT-NeoX's fused qkv as q|k|v blocks) fails these tests; the negative
controls below prove it.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from ckptlens.adapters import (  # noqa: E402
    ADAPTERS,
    BertAdapter,
    GenericAdapter,
    GPT2Adapter,
    GPTNeoXAdapter,
    ToyAdapter,
    get_adapter,
    module_names_from_keys,
)
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


# ---------------------------------------------------------------------------------------------
# GPT-NeoX (Pythia)
@pytest.fixture(scope="module")
def neox():
    cfg = transformers.GPTNeoXConfig(
        hidden_size=D, num_attention_heads=H, num_hidden_layers=L, intermediate_size=64, vocab_size=V, rotary_pct=0.5
    )
    cfg._attn_implementation = "eager"
    model = _randomize(transformers.GPTNeoXForCausalLM(cfg))
    return model, cfg


def _neox_rope(cfg, T):
    rot = int(DH * cfg.rope_parameters.get("partial_rotary_factor", 1.0))
    inv = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.float64) / rot))
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)

    def rope(x):  # GPT-NeoX: rotate_half on the first `rot` features, the rest pass through
        xr, xp = x[:, :rot], x[:, rot:]
        half = torch.cat([-xr[:, rot // 2 :], xr[:, : rot // 2]], -1)
        return torch.cat([xr * cos + half * sin, xp], -1)

    return rope


def test_gpt_neox_heads_rebuild_attention_output(neox):
    model, cfg = neox
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, GPTNeoXAdapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(1))
    for i in range(L):
        module = f"gpt_neox.layers.{i}.attention"
        x, y = _capture(model.gpt_neox.layers[i].attention, lambda: model(tokens))
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        rebuilt = _rebuild(p, aw, x[0], causal=True, rope=_neox_rope(cfg, x.shape[1]))
        torch.testing.assert_close(rebuilt, y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)


def test_gpt_neox_naive_qkv_split_is_wrong(neox):
    """Negative control: reading query_key_value as [q; k; v] blocks (last third = V) does not
    reproduce the module — so the rebuild test above does detect a wrong layout."""
    model, cfg = neox
    keys, get, _ = _state(model)
    adapter = get_adapter("gpt_neox", keys, metadata=cfg.to_dict())
    module = "gpt_neox.layers.0.attention"
    x, y = _capture(model.gpt_neox.layers[0].attention, lambda: model(torch.arange(7)[None]))
    aw = adapter.attention_weights(keys, get, module)
    qkv = torch.from_numpy(get(f"{module}.query_key_value.weight")).double()
    naive = {}
    for h in range(H):
        for j, piece in enumerate("qkv"):
            naive[h, piece] = qkv[j * D + h * DH : j * D + (h + 1) * DH]
        naive[h, "o"] = torch.from_numpy(aw.W_O[h]).double()
    wrong = _rebuild(naive, aw, x[0], causal=True, rope=_neox_rope(cfg, x.shape[1]))
    assert not torch.allclose(wrong, y[0], rtol=1e-3, atol=1e-3)


def test_gpt_neox_plain_weights_names_and_layout(neox):
    model, cfg = neox
    keys, get, sd = _state(model)
    adapter = get_adapter(None, keys, metadata=cfg.to_dict())
    names = _check_plain_weights(adapter, model, keys, get)
    assert "gpt_neox.layers.0.attention.dense" in names
    assert "gpt_neox.layers.1.attention.query_key_value" in names
    assert "gpt_neox.layers.0.mlp.dense_h_to_4h" in names
    assert not any("layernorm" in n or "layer_norm" in n for n in names)
    embed = dict(adapter.weight_matrices(keys, get, ["embed"]))["embed"]
    np.testing.assert_array_equal(embed, sd["gpt_neox.embed_in.weight"])
    listed = _check_layer_names(adapter, keys, get)
    assert "gpt_neox.layers.1.attention.head3.ov" in listed and "embed" in listed
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == [
        "gpt_neox.layers.0",
        "gpt_neox.layers.1",
    ]


# ---------------------------------------------------------------------------------------------
# GPT-2
@pytest.fixture(scope="module")
def gpt2():
    cfg = transformers.GPT2Config(
        n_embd=D, n_head=H, n_layer=L, vocab_size=V, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    cfg._attn_implementation = "eager"
    return _randomize(transformers.GPT2LMHeadModel(cfg), seed=1), cfg


def test_gpt2_heads_rebuild_attention_output(gpt2):
    model, cfg = gpt2
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, GPT2Adapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 9), generator=torch.Generator().manual_seed(2))
    for i in range(L):
        module = f"transformer.h.{i}.attn"
        x, y = _capture(model.transformer.h[i].attn, lambda: model(tokens))
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        torch.testing.assert_close(_rebuild(p, aw, x[0], causal=True), y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)


def test_gpt2_untransposed_split_is_wrong(gpt2):
    """Negative control: taking heads from the stored [in, out] Conv1D matrix without transposing."""
    model, cfg = gpt2
    keys, get, _ = _state(model)
    adapter = get_adapter("gpt2", keys, metadata=cfg.to_dict())
    module = "transformer.h.0.attn"
    x, y = _capture(model.transformer.h[0].attn, lambda: model(torch.arange(9)[None]))
    aw = adapter.attention_weights(keys, get, module)
    raw = torch.from_numpy(get(f"{module}.c_attn.weight")).double()  # [d, 3d], not transposed
    wrong = {(h, pc): raw[h * DH : (h + 1) * DH, j * D : (j + 1) * D] for h in range(H) for j, pc in enumerate("qkv")}
    for h in range(H):
        wrong[h, "o"] = torch.from_numpy(aw.W_O[h]).double()
    assert not torch.allclose(_rebuild(wrong, aw, x[0], causal=True), y[0], rtol=1e-3, atol=1e-3)


def test_gpt2_conv1d_weights_are_transposed_to_out_in(gpt2):
    model, cfg = gpt2
    keys, get, sd = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    mats = dict(adapter.weight_matrices(keys, get, ["transformer.h.0.*", "embed"]))
    assert mats["transformer.h.0.attn.c_attn"].shape == (3 * D, D)  # stored [D, 3D]
    assert mats["transformer.h.0.mlp.c_fc"].shape == (4 * D, D)  # stored [D, 4D]
    assert mats["transformer.h.0.mlp.c_proj"].shape == (D, 4 * D)
    np.testing.assert_array_equal(mats["embed"], sd["transformer.wte.weight"])  # embedding: not transposed
    names = _check_plain_weights(adapter, model, keys, get)  # x @ W.T + b == Conv1D(x) for all of them
    assert "transformer.h.1.attn.c_proj" in names and "lm_head" in names
    _check_layer_names(adapter, keys, get)
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["transformer.h.0", "transformer.h.1"]


# ---------------------------------------------------------------------------------------------
# BERT
@pytest.fixture(scope="module")
def bert():
    cfg = transformers.BertConfig(
        hidden_size=D, num_attention_heads=H, num_hidden_layers=L, intermediate_size=64, vocab_size=V
    )
    cfg._attn_implementation = "eager"
    return _randomize(transformers.BertModel(cfg), seed=2), cfg


def test_bert_heads_rebuild_attention_output(bert):
    model, cfg = bert
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, BertAdapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 6), generator=torch.Generator().manual_seed(3))
    for i in range(L):
        module = f"encoder.layer.{i}.attention"
        layer = model.encoder.layer[i].attention
        x, _ = _capture(layer, lambda: model(tokens))
        _, y = _capture(layer.output.dense, lambda: model(tokens))  # before dropout + residual LayerNorm
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        torch.testing.assert_close(_rebuild(p, aw, x[0], causal=False), y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)
    names = _check_plain_weights(adapter, model, keys, get)
    assert "encoder.layer.0.attention.self.query" in names and "encoder.layer.1.output.dense" in names
    _check_layer_names(adapter, keys, get)
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["encoder.layer.0", "encoder.layer.1"]


def test_bert_prefixed_keys_roberta_style():
    """Task models prefix the encoder (``bert.encoder...``); names keep the prefix."""
    cfg = transformers.BertConfig(
        hidden_size=D, num_attention_heads=H, num_hidden_layers=1, intermediate_size=64, vocab_size=V
    )
    model = transformers.BertForMaskedLM(cfg)
    keys, get, _ = _state(model)
    adapter = get_adapter(None, keys, metadata=cfg.to_dict())
    assert adapter.name == "bert"
    assert "bert.encoder.layer.0.attention.head0.qk" in adapter.layer_names(keys)
    assert adapter.embed_key(keys) == "bert.embeddings.word_embeddings.weight"


# ---------------------------------------------------------------------------------------------
# toy: the project's attention-only transformer layout
class _ToyAttn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (torch.nn.Linear(D, D, bias=False) for _ in range(4))

    def forward(self, x):
        b, t, _ = x.shape
        heads = lambda y: y.view(b, t, H, DH).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(DH)
        s = s.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
        return self.o_proj((s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, D))


class _ToyBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = _ToyAttn()

    def forward(self, x):
        return x + self.attn(x)


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(V, D)
        self.blocks = torch.nn.ModuleList(_ToyBlock() for _ in range(L))
        self.unembed = torch.nn.Linear(D, V, bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x)
        return self.unembed(x)


TOY_META = {
    "ckptlens_arch": "toy",
    "ckptlens_model": json.dumps({"n_heads": H, "d_model": D, "n_layers": L, "vocab_size": V}),
}


def test_toy_heads_rebuild_attention_output(tmp_path):
    from safetensors.torch import save_file

    from ckptlens.sources.readers import open_checkpoint

    torch.manual_seed(0)
    model = _Toy().eval()
    path = tmp_path / "ckpt_10.safetensors"
    save_file(dict(model.state_dict()), str(path), metadata=TOY_META)
    keys, get, meta = open_checkpoint(path)
    adapter = get_adapter("auto", keys, metadata=meta)
    assert isinstance(adapter, ToyAdapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, 8))
    for i in range(L):
        module = f"blocks.{i}.attn"
        x, y = _capture(model.blocks[i].attn, lambda: model(tokens))
        p = _pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        torch.testing.assert_close(_rebuild(p, aw, x[0], causal=True), y[0], rtol=1e-4, atol=1e-5)
        _check_circuits(p)
        # the spec's slicing: rows h·dh:(h+1)·dh of q/k/v, columns of o
        np.testing.assert_array_equal(p[1, "v"].float().numpy(), get(f"{module}.v_proj.weight")[DH : 2 * DH])
        np.testing.assert_array_equal(p[1, "o"].float().numpy(), get(f"{module}.o_proj.weight")[:, DH : 2 * DH])
    listed = _check_layer_names(adapter, keys, get)
    assert listed.count("embed") == 1  # the module is called "embed" already: no duplicate
    assert {"unembed", "blocks.1.attn.o_proj", "blocks.0.attn.head3.qk"} <= set(listed)
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["blocks.0", "blocks.1"]
    assert adapter.activation_modules(keys) == ["blocks.0", "blocks.1"]  # from state-dict keys too


def test_toy_real_model_if_available(tmp_path):
    """The project's own demo model (ckptlens.sources.trained.transformer), rotary included, saved with its metadata."""
    toy = pytest.importorskip("ckptlens.sources.trained.transformer")
    cfg = toy.ToyModelConfig(vocab_size=V, d_model=D, n_layers=L, n_heads=H)
    torch.manual_seed(1)
    model = toy.AttnOnlyTransformer(cfg).eval()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    keys = list(sd)
    adapter = get_adapter("auto", keys, metadata={"ckptlens_model": json.dumps(cfg.to_dict())})
    assert adapter.name == "toy" and adapter.n_heads == H
    x, y = _capture(model.blocks[0].attn, lambda: model(torch.randint(0, V, (1, 8))))
    cos, sin = toy.rotary_cos_sin(x.shape[1], DH, cfg.rotary_base)
    rope = lambda z: toy.apply_rotary(z.float(), cos, sin).double()  # noqa: E731
    p = _pieces(adapter, keys, sd.__getitem__, "blocks.0.attn")
    aw = adapter.attention_weights(keys, sd.__getitem__, "blocks.0.attn")
    torch.testing.assert_close(_rebuild(p, aw, x[0], causal=True, rope=rope), y[0], rtol=1e-4, atol=1e-5)


def test_toy_without_n_heads_warns_and_gives_no_heads():
    keys = [
        "embed.weight",
        "blocks.0.attn.q_proj.weight",
        "blocks.0.attn.k_proj.weight",
        "blocks.0.attn.v_proj.weight",
        "blocks.0.attn.o_proj.weight",
        "unembed.weight",
    ]
    with pytest.warns(UserWarning, match="number of attention heads unknown"):
        adapter = get_adapter("toy", keys, metadata={})
    assert not any(".head" in n for n in adapter.layer_names(keys))
    sd = {k: np.zeros((V if "embed" in k else D, D), np.float32) for k in keys}
    with pytest.raises(ValueError, match="n_heads"):
        list(adapter.weight_matrices(keys, sd.__getitem__, ["blocks.*.attn.head*.ov"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter = get_adapter("toy", keys, metadata={}, n_heads=2)
    assert "blocks.0.attn.head1.ov" in adapter.layer_names(keys)


# ---------------------------------------------------------------------------------------------
# laziness, patterns, selection
def test_patterns_read_only_what_is_needed(neox):
    model, cfg = neox
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    g, calls = _counting(get)
    out = dict(adapter.weight_matrices(keys, g, ["gpt_neox.layers.1.attention.head2.ov"]))
    assert list(out) == ["gpt_neox.layers.1.attention.head2.ov"]
    assert sorted(set(calls)) == [
        "gpt_neox.layers.1.attention.dense.bias",
        "gpt_neox.layers.1.attention.dense.weight",
        "gpt_neox.layers.1.attention.query_key_value.bias",
        "gpt_neox.layers.1.attention.query_key_value.weight",
    ]
    g, calls = _counting(get)
    out = dict(adapter.weight_matrices(keys, g, ["*.mlp.*"]))
    assert sorted(out) == sorted(
        f"gpt_neox.layers.{i}.mlp.{m}" for i in range(L) for m in ("dense_h_to_4h", "dense_4h_to_h")
    )
    assert all(".mlp." in c for c in calls)
    # a predicate works as well as globs
    assert list(dict(adapter.weight_matrices(keys, get, lambda n: n == "embed"))) == ["embed"]


def test_weight_matrices_is_lazy(neox):
    """It is a generator: nothing is read before the first item is asked for."""
    model, cfg = neox
    keys, get, _ = _state(model)
    g, calls = _counting(get)
    it = get_adapter("auto", keys, metadata=cfg.to_dict()).weight_matrices(keys, g, None)
    assert calls == []
    next(it)
    assert len(calls) == 1


def test_project_pattern_semantics_can_be_plugged_in(neox):
    patterns = pytest.importorskip("ckptlens.store.patterns")
    model, cfg = neox
    keys, get, _ = _state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    got = [
        n for n, _ in adapter.weight_matrices(keys, get, ["gpt_neox.layers.*.attention.dense"], match=patterns.matches)
    ]
    assert got == ["gpt_neox.layers.0.attention.dense", "gpt_neox.layers.1.attention.dense"]


# ---------------------------------------------------------------------------------------------
# generic fallback and get_adapter
def test_generic_every_2d_plus_parameter_no_heads():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.Flatten(), torch.nn.Linear(8, 4)
    )
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    keys = list(sd)
    shapes = {k: v.shape for k, v in sd.items()}
    adapter = get_adapter("auto", keys, shapes=shapes)
    assert isinstance(adapter, GenericAdapter)
    mats = dict(adapter.weight_matrices(keys, sd.__getitem__, None))
    assert sorted(mats) == ["0", "3"]  # conv (flattened) and linear; not BatchNorm weight/running stats
    assert mats["0"].shape == (8, 27)
    assert adapter.layer_names(keys) == ["0", "3"]


def test_generic_on_a_transformer_has_no_head_pieces(gpt2):
    model, cfg = gpt2
    keys, get, sd = _state(model)
    adapter = get_adapter("generic", keys, metadata=cfg.to_dict(), shapes={k: v.shape for k, v in sd.items()})
    names = adapter.layer_names(keys)
    assert not any(".head" in n for n in names)
    assert "transformer.h.0.attn.c_attn" in names and "embed" in names and "transformer.wpe" in names
    assert adapter.activation_modules([n for n, _ in model.named_modules()]) == ["transformer.h.0", "transformer.h.1"]


def test_get_adapter_unknown_name_lists_adapters():
    with pytest.raises(ValueError, match="unknown adapter 'llama'.*toy.*gpt_neox.*gpt2.*bert.*generic"):
        get_adapter("llama", ["a.weight"])


def test_get_adapter_named_arch_must_fit_the_keys(gpt2):
    model, cfg = gpt2
    keys, _, _ = _state(model)
    with pytest.raises(ValueError, match="'gpt_neox' does not fit"):
        get_adapter("gpt_neox", keys, metadata=cfg.to_dict())


def test_auto_detection_each_arch(neox, gpt2, bert):
    for (model, cfg), cls in ((neox, GPTNeoXAdapter), (gpt2, GPT2Adapter), (bert, BertAdapter)):
        keys = list(model.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert type(get_adapter("auto", keys, metadata=cfg.to_dict())) is cls
            assert cls.detect(keys)
            assert not any(c.detect(keys) for c in ADAPTERS.values() if c not in (cls, GenericAdapter))


def test_module_names_from_keys():
    assert module_names_from_keys(["a.b.weight", "a.c.bias", "d"]) == ["a", "a.b", "a.c"]


def test_config_flattened_into_safetensors_metadata_gives_the_heads():
    """import_checkpoint stores a config.json as string metadata, one JSON-encoded value per key."""
    from ckptlens.adapters import model_config

    meta = {"model_type": "bert", "num_attention_heads": "12", "hidden_size": "384", "architectures": '["BertModel"]'}
    cfg = model_config(meta)
    assert cfg["num_attention_heads"] == 12 and cfg["architectures"] == ["BertModel"]
