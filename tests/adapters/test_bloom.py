"""ckptlens.adapters.bloom on a tiny BLOOM built offline (eager attention, random weights and biases):
the probabilities rebuilt from the per-head q/k pieces with ALiBi added equal the model's own, and the
per-head OV paths summed (+ W_O·b_V + b_O) equal ``self_attention.dense``'s output, to 1e-5. Reading
the fused QKV as q|k|v blocks (the GPT-2 layout) does not (negative control)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from ckptlens.adapters import BloomAdapter, default_targets, get_adapter  # noqa: E402
from ckptlens.adapters.bloom import alibi_slopes  # noqa: E402
from ckptlens.sources.layer_names import names_from_keys  # noqa: E402
from tests.adapters.rebuild import check_circuits, head_pieces, randomize, rebuild, run_attention, state  # noqa: E402

D, H, L, V, T = 32, 4, 2, 50, 7


@pytest.fixture(scope="module")
def bloom():
    cfg = transformers.BloomConfig(hidden_size=D, n_head=H, n_layer=L, vocab_size=V)
    cfg._attn_implementation = "eager"
    return randomize(transformers.BloomForCausalLM(cfg), seed=5), cfg


def test_bloom_heads_rebuild_attention_with_alibi(bloom):
    model, cfg = bloom
    keys, get, sd = state(model)
    adapter = get_adapter("auto", keys, metadata=cfg.to_dict())
    assert isinstance(adapter, BloomAdapter) and adapter.n_heads == H
    tokens = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(3))
    for i, block in enumerate(model.transformer.h):
        module = f"transformer.h.{i}.self_attention"
        x, _, probs, y = run_attention(model, block.self_attention, tokens, output_module=block.self_attention.dense)
        p = head_pieces(adapter, keys, get, module)
        aw = adapter.attention_weights(keys, get, module)
        got, out, out_ov = rebuild(p, aw, x)
        torch.testing.assert_close(got, probs, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out, y, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_ov, y, rtol=1e-5, atol=1e-5)
        check_circuits(p, aw)
        # without ALiBi the probabilities differ: the slopes are not in the weights
        aw.alibi_slopes = None
        assert (rebuild(p, aw, x)[0] - probs).abs().max() > 1e-3


def test_alibi_slopes_match_transformers_for_any_head_count():
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    for n in (1, 3, 4, 6, 8, 12, 16, 32):
        alibi = build_alibi_tensor(torch.ones(1, 5), n, torch.float32)  # [n, 1, 5]: slope·position
        np.testing.assert_allclose(alibi_slopes(n), alibi[:, 0, 1].numpy(), rtol=1e-6)


def test_bloom_blocks_layout_is_wrong(bloom):
    model, cfg = bloom
    keys, get, _ = state(model)
    adapter = get_adapter("bloom", keys, metadata=cfg.to_dict())
    module = "transformer.h.0.self_attention"
    block = model.transformer.h[0]
    x, _, probs, _ = run_attention(model, block.self_attention, torch.arange(T)[None], block.self_attention.dense)
    p = head_pieces(adapter, keys, get, module)
    aw = adapter.attention_weights(keys, get, module)
    qkv = torch.from_numpy(get(f"{module}.query_key_value.weight")).double()
    dh = D // H
    for h in range(H):
        for j, piece in enumerate("qk"):
            p["head", h, piece] = qkv[j * D + h * dh : j * D + (h + 1) * dh]
    aw.b_Q = aw.b_K = None
    assert (rebuild(p, aw, x)[0] - probs).abs().max() > 1e-3


def test_bloom_names_and_default_targets(bloom):
    model, cfg = bloom
    keys, get, sd = state(model)
    names = names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()})
    assert default_targets(names, cfg.to_dict()) == {
        "weights": [
            "transformer.h.*.self_attention.dense",
            "transformer.h.*.self_attention.head*.ov",
            "transformer.h.*.self_attention.head*.qk",
            "transformer.h.*.mlp.dense_4h_to_h",
        ],
        "activations": ["transformer.h.*"],
        "gradients": ["transformer.h.*.self_attention.dense", "transformer.h.*.mlp.dense_4h_to_h"],
    }
    listed = get_adapter("auto", keys, metadata=cfg.to_dict()).layer_names(keys)
    assert listed.count("embed") == 1 and "transformer.word_embeddings" not in listed


def test_bloom_default_targets_extract_activations_and_gradients(bloom, tmp_path):
    """Block outputs equal the direct forward's hidden states (1e-5); the attention output
    projection's gradient equals autograd of the model's own next-token loss (1e-4)."""
    from safetensors.numpy import load_file

    from ckptlens.extract.hf_model import _indices
    from ckptlens.extract.model import extract_model
    from ckptlens.store.tensors import TensorFile

    model, cfg = bloom
    model.save_pretrained(tmp_path / "global_step10")
    ids = np.random.default_rng(1).integers(0, V, size=(8, T))
    np.save(tmp_path / "ids.npy", ids)
    probe = {"tokens": str(tmp_path / "ids.npy"), "batch_size": 2, "n_batches": 1, "seed": 0}
    keys, _, sd = state(model)
    targets = default_targets(names_from_keys(keys, cfg.to_dict(), {k: v.shape for k, v in sd.items()}))
    outs = {"activations": str(tmp_path / "a.safetensors"), "gradients": str(tmp_path / "g.safetensors")}
    extract_model(tmp_path / "global_step10", targets, probe, outs, device="cpu")
    acts = load_file(outs["activations"])
    x = torch.as_tensor(ids[_indices(8, 2, 1, 0, "")[0]])
    with torch.no_grad():
        ref = model(x, output_hidden_states=True)
    np.testing.assert_allclose(
        acts["transformer.h.0"], ref.hidden_states[1].reshape(-1, D).numpy(), rtol=1e-5, atol=1e-5
    )
    grads = TensorFile(outs["gradients"], group_gradients=True)
    (g,) = torch.autograd.grad(model(x, labels=x).loss, [model.transformer.h[1].self_attention.dense.weight])
    np.testing.assert_allclose(grads["transformer.h.1.self_attention.dense"][0], g.numpy(), rtol=1e-4, atol=1e-7)
