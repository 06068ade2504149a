"""What a layer is, from its name alone: the *kind* of module a metric's row is about.

The adapters name every target in the model's own words (``gpt_neox.layers.3.attention.dense``,
``transformer.h.3.attn.c_proj``, ``encoder.layer.3.output.dense``, ``model.layers.3.mlp.down_proj``,
``blocks.3.attn.head5.ov``); figures and the explorer group a metric's series by kind so that a
panel compares like with like. Kinds, in display order (:data:`KINDS`):

* ``attention output``: the attention's output projection (gpt_neox ``attention.dense``, gpt2
  ``attn.c_proj``, bert ``attention.output.dense``, llama/toy ``self_attn.o_proj``/``attn.o_proj``,
  bloom ``self_attention.dense``, ModernBERT ``attn.Wo``, OLMo ``attn_out``);
* ``per-head OV`` / ``per-head QK``: a head's circuit, ``<attn>.head{h}.ov`` / ``.qk``;
* ``MLP output``: the MLP's output projection (``mlp.dense_4h_to_h``, ``mlp.c_proj``,
  ``mlp.down_proj``, ``mlp.Wo``, ``mlp.fc2``, ``ff_out``, bert's ``encoder.layer.{i}.output.dense``);
* ``block output``: a block itself, ``<blocks>.<i>`` (the residual stream after it);
* ``embedding``: the token/position embedding (``wte``, ``embed_in``, ``embed_tokens``, ``embed``, …);
* ``other``: everything else (other per-head pieces, q/k/v, norms, the unembedding, a pair label's
  kind is that of its first layer).

A trailing ``.weight`` / ``.bias`` is ignored. Only the standard library is imported.
"""

from __future__ import annotations

import re

from .layers import PAIR_SEP

ATTENTION_OUTPUT = "attention output"
HEAD_OV = "per-head OV"
HEAD_QK = "per-head QK"
MLP_OUTPUT = "MLP output"
BLOCK_OUTPUT = "block output"
EMBEDDING = "embedding"
OTHER = "other"
#: Every kind, in display order (the panels of a figure, the kind menu of the explorer).
KINDS = (ATTENTION_OUTPUT, HEAD_OV, HEAD_QK, MLP_OUTPUT, BLOCK_OUTPUT, EMBEDDING, OTHER)
#: The per-head kinds: their series are (block, head) pieces.
PER_HEAD = (HEAD_OV, HEAD_QK)

_HEAD = re.compile(r"(?:^|\.)head(\d+)\.(ov|qk)$")
_ANY_HEAD = re.compile(r"(?:^|\.)(?:head|kv)\d+\.[a-z]+$")
_ATTN_OUT = re.compile(
    r"(?:^|\.)(?:"
    r"attention\.dense|attention\.output\.dense|self_attention\.dense|attn\.c_proj|"
    r"(?:self_)?attn\.(?:o_proj|out_proj|Wo|dense)|attention\.(?:o_proj|out_proj)|attn_out"
    r")$"
)
_MLP_OUT = re.compile(
    r"(?:^|\.)(?:"
    r"(?:mlp|ffn|ff|feed_forward)\.(?:dense_4h_to_h|c_proj|down_proj|Wo|fc2|out_proj|w2|fc_out)|"
    r"ff_out|layer\.\d+\.output\.dense"
    r")$"
)
_BLOCK = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block|encoder\.layer)\.(\d+)$|^\D*\.(\d+)$")
_EMBED = re.compile(r"(?:^|\.)(?:wte|wpe|embed_in|embed_tokens|word_embeddings|tok_embeddings|embed|embeddings?)$")
_SUFFIX = re.compile(r"\.(?:weight|bias)$")
_INT = re.compile(r"\d+")


def layer_kind(name: str) -> str:
    """The kind (one of :data:`KINDS`) of a layer name, or of a pair label's first layer."""
    name = _SUFFIX.sub("", str(name).split(PAIR_SEP, 1)[0])
    m = _HEAD.search(name)
    if m:
        return HEAD_OV if m.group(2) == "ov" else HEAD_QK
    if _ANY_HEAD.search(name):
        return OTHER
    if _ATTN_OUT.search(name):
        return ATTENTION_OUTPUT
    if _MLP_OUT.search(name):
        return MLP_OUTPUT
    if _BLOCK.search(name):
        return BLOCK_OUTPUT
    if _EMBED.search(name):
        return EMBEDDING
    return OTHER


def block_and_head(name: str) -> tuple[int | None, int | None]:
    """``(block, head)`` of a layer name: the block is its first integer (None without one), the
    head the number of a ``head{h}`` component (None if it has none)."""
    name = str(name).split(PAIR_SEP, 1)[0]
    first = _INT.search(name)
    head = re.search(r"(?:^|\.)head(\d+)(?:\.|$)", name)
    return (int(first.group()) if first and not name[: first.start()].endswith("head") else None), (
        int(head.group(1)) if head else None
    )
