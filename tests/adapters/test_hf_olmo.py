"""ckptlens.adapters.hf_olmo on OLMo-1's original fused state dict (``model.transformer.blocks.{i}.
att_proj`` q|k|v, ``attn_out``, ``ff_proj`` up|gate, ``ff_out``), made from a tiny transformers
``olmo`` model's weights by the inverse of transformers' conversion script (hf_olmo itself is not
part of transformers). The truth is that ``olmo`` model's own attention: the probabilities rebuilt
from the per-head pieces (with its rotary embedding) equal its own and the per-head OV paths summed
equal its ``o_proj`` output, to 1e-5, with multi-head and grouped (2 key/value heads) attention."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import HFOlmoAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.adapters.hf_olmo import olmo_state_from_hf  # noqa: E402
from ckptlens.sources.layer_names import names_from_keys  # noqa: E402
from tests.adapters.rebuild import (  # noqa: E402
    check_circuits,
    head_pieces,
    module_rope,
    randomize,
    rebuild,
    run_attention,
    state,
)

D, H, L, V, T = 32, 4, 2, 50, 7


@pytest.fixture(scope="module", params=[4, 2], ids=["mha", "gqa"])
def olmo(request):
    cfg = transformers.OlmoConfig(
        hidden_size=D,
        num_attention_heads=H,
        num_key_value_heads=request.param,
        num_hidden_layers=L,
        intermediate_size=64,
        vocab_size=V,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    cfg._attn_implementation = "eager"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomize(transformers.OlmoForCausalLM(cfg), seed=11)
    _, _, sd = state(model)
    orig = olmo_state_from_hf(sd)
    # the config.json of an hf_olmo repository (allenai/OLMo-1B): its own key names
    meta = {"model_type": "hf_olmo", "d_model": D, "n_heads": H, "n_kv_heads": request.param, "n_layers": L}
    return model, orig, meta


def test_hf_olmo_fused_heads_rebuild_attention(olmo):
    model, orig, meta = olmo
    keys, get = list(orig), orig.__getitem__
    adapter = get_adapter("auto", keys, metadata=meta, shapes={k: v.shape for k, v in orig.items()})
    assert isinstance(adapter, HFOlmoAdapter) and adapter.n_heads == H
    tokens = torch.randint(3, V, (1, T), generator=torch.Generator().manual_seed(2))
    for i, layer in enumerate(model.model.layers):
        module = f"model.transformer.blocks.{i}"
        x, pos, probs, y = run_attention(model, layer.self_attn, tokens)
        p = head_pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        assert aw.n_kv_heads == meta["n_kv_heads"]
        got, out, out_ov = rebuild(p, aw, x, rope=module_rope(layer.self_attn, pos))
        torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_ov, y, rtol=1e-5, atol=1e-5)
        check_circuits(p, aw)
        if aw.grouped:
            wrong, _, _ = rebuild(p, aw, x, rope=module_rope(layer.self_attn, pos), kv_of=lambda h: h % aw.n_kv_heads)
            assert (wrong - probs).abs().max() > 1e-3


def test_hf_olmo_names_and_default_targets(olmo):
    model, orig, meta = olmo
    keys = list(orig)
    names = names_from_keys(keys, meta, {k: v.shape for k, v in orig.items()})
    b = "model.transformer.blocks.*"
    assert default_targets(names, meta) == {
        "weights": [f"{b}.attn_out", f"{b}.head*.ov", f"{b}.head*.qk", f"{b}.ff_out"],
        "activations": [b],
        "gradients": [f"{b}.attn_out", f"{b}.ff_out"],
    }
    adapter = get_adapter("auto", keys, metadata=meta)
    listed = adapter.layer_names(keys)
    assert listed.count("embed") == 1 and "model.transformer.wte" not in listed
    assert {"model.transformer.blocks.1.att_proj", "model.transformer.blocks.1.ff_proj"} <= set(listed)
    # the llama adapter does not claim these keys, nor the hf_olmo adapter transformers' olmo keys
    _, _, sd = state(model)
    with pytest.warns(UserWarning, match="number of attention heads unknown"):
        assert get_adapter("auto", list(sd), metadata={"model_type": "olmo"}).name == "llama"
    mats = dict(adapter.weight_matrices(keys, orig.__getitem__, ["model.transformer.blocks.0.head1.o"]))
    np.testing.assert_array_equal(
        mats["model.transformer.blocks.0.head1.o"], orig["model.transformer.blocks.0.attn_out.weight"][:, 8:16]
    )
