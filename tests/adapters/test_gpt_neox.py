"""ckptlens.adapters.gpt_neox: the fused QKV split per head (rebuilt attention output, rotary
embedding) and the plain weights' names and layout."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import (  # noqa: E402
    GPTNeoXAdapter,
    get_adapter,
)
from tests.adapters.helpers import (  # noqa: E402
    DH,
    D,
    H,
    L,
    V,
    _capture,
    _check_circuits,
    _check_layer_names,
    _check_plain_weights,
    _pieces,
    _rebuild,
    _state,
)


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
