"""The kind of a layer from its name (ckptlens.store.kinds): every architecture's names of the
default targets (attention output, per-head OV/QK, MLP output, block output) and the embedding."""

from __future__ import annotations

import pytest

from ckptlens.store.kinds import KINDS, block_and_head, layer_kind

CASES = {
    # gpt_neox (Pythia)
    "gpt_neox.layers.3.attention.dense": ("attention output", 3),
    "gpt_neox.layers.3.mlp.dense_4h_to_h": ("MLP output", 3),
    "gpt_neox.layers.11": ("block output", 11),
    "gpt_neox.embed_in": ("embedding", None),
    "gpt_neox.layers.2.attention.head7.ov": ("per-head OV", 2),
    "gpt_neox.layers.2.attention.head7.qk": ("per-head QK", 2),
    # gpt2
    "transformer.h.3.attn.c_proj": ("attention output", 3),
    "transformer.h.3.mlp.c_proj": ("MLP output", 3),
    "transformer.h.0": ("block output", 0),
    "transformer.wte.weight": ("embedding", None),
    # bert / MiniLM: the attention's output.dense and the block's output.dense differ
    "encoder.layer.3.attention.output.dense": ("attention output", 3),
    "encoder.layer.3.output.dense": ("MLP output", 3),
    "encoder.layer.5": ("block output", 5),
    "encoder.layer.2.attention.head11.qk": ("per-head QK", 2),
    "embeddings.word_embeddings": ("embedding", None),
    # llama, bloom, ModernBERT, OLMo, the toy model
    "model.layers.3.self_attn.o_proj": ("attention output", 3),
    "model.layers.3.mlp.down_proj": ("MLP output", 3),
    "model.embed_tokens": ("embedding", None),
    "transformer.h.1.self_attention.dense": ("attention output", 1),
    "layers.2.attn.Wo": ("attention output", 2),
    "layers.2.mlp.Wo": ("MLP output", 2),
    "model.transformer.blocks.3.attn_out": ("attention output", 3),
    "model.transformer.blocks.3.ff_out": ("MLP output", 3),
    "blocks.3.attn.o_proj": ("attention output", 3),
    "blocks.3.attn.head5.ov": ("per-head OV", 3),
    "blocks.3": ("block output", 3),
    # other
    "blocks.0.attn.head2.q": ("other", 0),
    "model.layers.3.self_attn.kv1.k": ("other", 3),
    "gpt_neox.final_layer_norm": ("other", None),
    "embed_out": ("other", None),
    "layer_mean": ("other", None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_kind_and_block_of_each_architectures_names(name):
    kind, block = CASES[name]
    assert layer_kind(name) == kind
    assert kind in KINDS
    assert block_and_head(name)[0] == block


def test_heads_and_pairs():
    assert block_and_head("blocks.3.attn.head5.ov") == (3, 5)
    assert block_and_head("encoder.layer.10.attention.head11.qk") == (10, 11)
    assert block_and_head("gpt_neox.layers.4.attention.dense") == (4, None)
    # a pair label is about its first layer
    assert layer_kind("blocks.1.attn.head0.qk~blocks.0.attn.head1.ov") == "per-head QK"
    assert block_and_head("blocks.1.attn.head0.qk~blocks.0.attn.head1.ov") == (1, 0)
