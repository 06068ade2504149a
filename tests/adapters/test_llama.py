"""ckptlens.adapters.llama on every Llama-family ``model_type`` the adapter claims (its MODEL_TYPES),
each built offline from a tiny config with eager attention and random weights, norm gains and biases.

The truth is the model's own attention: the probabilities rebuilt from the per-head q/k pieces (the
model's rotary embedding applied with its own cos/sin, q/k norms' per-token RMS from the raw
projection, biases, score scale, soft-cap) equal the probabilities the layer returns, and the
output rebuilt from the q/k/v/o pieces and from the per-head OV circuits (+ W_O·b_V + b_O) equals
``o_proj``'s output, to 1e-5. Grouped (2 key/value heads for 4 query heads), multi-query (Gemma: 1)
and head_dim ≠ hidden/heads (12 vs 8) are all covered; reading key/value head h % n_kv instead of
h // (n_heads / n_kv) gives other probabilities (negative control).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import LlamaAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.adapters.llama import MODEL_TYPES  # noqa: E402
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

D, H, KV, DH, L, V, T = 32, 4, 2, 12, 2, 50, 7
MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "flex_olmo"}
#: per model type, what differs from the default tiny config (MQA for Gemma, a layer without rotary
#: for SmolLM3, q/k/v biases for Llama itself via attention_bias)
EXTRA = {
    "gemma": {"num_key_value_heads": 1},
    "llama": {"attention_bias": True},
    "smollm3": {"no_rope_layers": [1, 0]},
    "gemma2": {"attn_logit_softcapping": 5.0, "query_pre_attn_scalar": 16},
    "helium": {"head_dim": D // H},
    "olmoe": {"head_dim": D // H},
    "stablelm": {"head_dim": D // H},  # its o_proj takes hidden_size inputs: head_dim = hidden/heads only
}


def _tiny(model_type: str, **over):
    kw = dict(
        hidden_size=D,
        num_attention_heads=H,
        num_key_value_heads=KV,
        head_dim=DH,
        num_hidden_layers=L,
        intermediate_size=64,
        vocab_size=V,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    kw.update(EXTRA.get(model_type, {}))
    kw.update(over)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.AutoConfig.for_model(model_type, **kw)
        cfg._attn_implementation = "eager"
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    return randomize(model, seed=sum(map(ord, model_type))), cfg


@pytest.fixture(scope="module", params=sorted(MODEL_TYPES))
def tiny(request):
    return request.param, *_tiny(request.param)


def _layers(model):
    return model.model.layers


def test_every_claimed_model_type_exists_in_the_installed_transformers():
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    assert set(MODEL_TYPES) <= set(CONFIG_MAPPING_NAMES)


def test_llama_family_heads_rebuild_attention(tiny):
    mt, model, cfg = tiny
    keys, get, sd = state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict(), shapes={k: v.shape for k, v in sd.items()})
    assert isinstance(adapter, LlamaAdapter) and adapter.n_heads == H
    tokens = torch.randint(3, V, (1, T), generator=torch.Generator().manual_seed(1))
    rotary = adapter.rotary_layers(L)
    for i, layer in enumerate(_layers(model)):
        module = f"model.layers.{i}.self_attn"
        x, pos, probs, y = run_attention(model, layer.self_attn, tokens)
        p = head_pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        assert aw.d_head == layer.self_attn.head_dim and aw.n_kv_heads == cfg.num_key_value_heads
        assert aw.score_scale == pytest.approx(layer.self_attn.scaling)
        rope = module_rope(layer.self_attn, pos) if rotary[i] else None
        got, out, out_ov = rebuild(p, aw, x, rope=rope)
        torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_ov, y, rtol=1e-5, atol=1e-5)
        check_circuits(p, aw)
        if 1 < aw.n_kv_heads < H:  # the plausible h % n_kv reads other key/value heads: other probabilities
            wrong, _, _ = rebuild(p, aw, x, rope=rope, kv_of=lambda h: h % aw.n_kv_heads)
            assert (wrong - probs).abs().max() > 1e-3


def test_shared_key_value_heads_are_named_once(tiny):
    mt, model, cfg = tiny
    keys, get, sd = state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    names = adapter.layer_names(keys)
    a = "model.layers.0.self_attn"
    n_kv = cfg.num_key_value_heads
    assert [n for n in names if n.startswith(f"{a}.head0.")] == [f"{a}.head0.{w}" for w in ("q", "o", "qk", "ov")]
    assert sorted(n for n in names if n.startswith(f"{a}.kv")) == sorted(
        f"{a}.kv{j}.{w}" for j in range(n_kv) for w in "kv"
    )
    # every stored matrix once: the embedding as `embed` only, k/v per key/value head
    assert names.count("embed") == 1 and "model.embed_tokens" not in names
    assert len(set(names)) == len(names)
    assert sorted(names) == sorted(n for n, _ in adapter.weight_matrices(keys, get, None))
    mats = dict(adapter.weight_matrices(keys, get, [f"{a}.kv1.v" if n_kv > 1 else f"{a}.kv0.v", "embed"]))
    np.testing.assert_array_equal(mats["embed"], sd["model.embed_tokens.weight"])
    j = 1 if n_kv > 1 else 0
    aw_dh = model.model.layers[0].self_attn.head_dim
    np.testing.assert_array_equal(mats[f"{a}.kv{j}.v"], sd[f"{a}.v_proj.weight"][j * aw_dh : (j + 1) * aw_dh])


def test_llama_family_default_targets(tiny):
    mt, model, cfg = tiny
    keys, _, sd = state(model)
    names = names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()})
    # mixture-of-experts models keep their experts as 3-D tensors (no MLP output matrix per block)
    mlp = [] if mt in MOE else ["model.layers.*.mlp." + ("c_proj" if mt == "starcoder2" else "down_proj")]
    assert default_targets(names, cfg.to_dict()) == {
        "weights": [
            "model.layers.*.self_attn.o_proj",
            "model.layers.*.self_attn.head*.ov",
            "model.layers.*.self_attn.head*.qk",
            *mlp,
        ],
        "activations": ["model.layers.*"],
        "gradients": ["model.layers.*.self_attn.o_proj", *mlp],
    }


def test_olmo2_full_width_norm_gains_must_be_folded():
    """OLMo-2's q_norm/k_norm act on the whole flattened projection: a QK read without the gains
    gives other attention probabilities; the adapter says the per-token RMS factor is not in the weights."""
    model, cfg = _tiny("olmo2")
    keys, get, sd = state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert any("per-token factor" in n and "not in the weights" in n for n in adapter.notes())
    layer = model.model.layers[0].self_attn
    x, pos, probs, _ = run_attention(model, layer, torch.arange(3, 3 + T)[None])
    aw = adapter.attention_weights(keys, get, "model.layers.0.self_attn")
    assert aw.qk_norm == "full" and aw.q_gain.shape == (H, DH)
    p = head_pieces(adapter, keys, get, "model.layers.0.self_attn")
    raw = dict(p)
    for h in range(H):
        raw["head", h, "q"] = torch.from_numpy(aw.W_Q[h]).double()
    for j in range(aw.n_kv_heads):
        raw["kv", j, "k"] = torch.from_numpy(aw.W_K[j]).double()
    wrong, _, _ = rebuild(raw, aw, x, rope=module_rope(layer, pos))
    assert (wrong - probs).abs().max() > 1e-3


def test_qwen2_biases_are_said_to_be_outside_the_qk_piece():
    model, cfg = _tiny("qwen2")
    keys, get, _ = state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    aw = adapter.attention_weights(keys, get, "model.layers.0.self_attn")
    assert aw.b_Q.shape == (H, DH) and aw.b_K.shape == (KV, DH)
    assert any(
        n.startswith("q/k biases: the .qk piece alone does not give the attention logits") for n in adapter.notes()
    )


def test_an_unverified_model_type_with_llama_keys_gets_the_generic_adapter_and_a_note():
    model, cfg = _tiny("llama")
    keys, _, _ = state(model)
    meta = cfg.to_dict() | {"model_type": "my_llama_variant"}
    with pytest.warns(UserWarning, match=r"no ckptlens adapter for model_type 'my_llama_variant'.*no per-head"):
        adapter = get_adapter("auto", keys, metadata=meta)
    assert adapter.name == "generic" and not any(".head" in n for n in adapter.layer_names(keys))
    # named explicitly, the adapter is used (the user's choice)
    assert get_adapter("llama", keys, metadata=meta).name == "llama"


@pytest.mark.parametrize("mt", ["llama", "qwen2", "qwen3", "olmo2", "gemma3_text", "smollm3"])
def test_default_targets_extract_activations_and_gradients(mt, tmp_path):
    """The default activation and gradient targets of a saved (save_pretrained) checkpoint extract
    through transformers: block outputs equal the direct forward's hidden states (1e-5), the o_proj
    and down_proj gradients equal autograd of the model's own next-token loss (1e-4)."""
    from safetensors.numpy import load_file

    from ckptlens.extract.hf_model import _indices
    from ckptlens.extract.model import extract_model
    from ckptlens.store.tensors import TensorFile

    model, cfg = _tiny(mt)
    model.save_pretrained(tmp_path / "checkpoint-10")
    ids = np.random.default_rng(1).integers(3, V, size=(8, T))
    np.save(tmp_path / "ids.npy", ids)
    probe = {"tokens": str(tmp_path / "ids.npy"), "batch_size": 2, "n_batches": 1, "seed": 0}
    keys, _, sd = state(model)
    targets = default_targets(names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()}))
    outs = {"activations": str(tmp_path / "a.safetensors"), "gradients": str(tmp_path / "g.safetensors")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extract_model(tmp_path / "checkpoint-10", targets, probe, outs, device="cpu")
    acts = load_file(outs["activations"])
    assert sorted(acts) == [f"model.layers.{i}" for i in range(L)]
    x = torch.as_tensor(ids[_indices(8, 2, 1, 0, "")[0]])
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    np.testing.assert_allclose(
        acts["model.layers.0"], ref.hidden_states[1].reshape(-1, D).numpy(), rtol=1e-5, atol=1e-5
    )
    grads = TensorFile(outs["gradients"], group_gradients=True)
    assert sorted(grads) == sorted(
        f"model.layers.{i}.{m}" for i in range(L) for m in ("mlp.down_proj", "self_attn.o_proj")
    )
    loss = model(x, labels=x).loss
    w = model.model.layers[1].self_attn.o_proj.weight
    (g,) = torch.autograd.grad(loss, [w])
    np.testing.assert_allclose(grads["model.layers.1.self_attn.o_proj"][0], g.numpy(), rtol=1e-4, atol=1e-7)
