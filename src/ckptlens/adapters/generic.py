"""Fallback for any architecture: every ≥2-D parameter under its module name, no heads.

Tensors with more than two dimensions (convolutions) are flattened to [out, rest]. Without known
shapes (``shapes=`` of :func:`get_adapter`, given by ``open_checkpoint``), a key counts as a matrix
when it ends in ``.weight`` and is not a normalisation layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .base import Adapter, _is_norm, module_name

# buffers that are ≥2-D but not parameters (GPT-2's causal mask, rotary tables, ...)
_BUFFER_SUFFIXES = (
    ".attn.bias",
    "masked_bias",
    "inv_freq",
    "position_ids",
    "num_batches_tracked",
    "cos_cached",
    "sin_cached",
)


class GenericAdapter(Adapter):
    name = "generic"
    embed_suffixes = (
        "embed_tokens.weight",
        "word_embeddings.weight",
        "wte.weight",
        "embed_in.weight",
        "tok_embeddings.weight",
        "token_embedding.weight",
        "tok_emb.weight",
        "embed.weight",
    )

    def __init__(self, metadata=None, n_heads=None, shapes=None):
        super().__init__(metadata, None, shapes)  # heads are never split here
        self.n_heads = None

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return True

    def _is_matrix_key(self, key: str, shapes: Mapping[str, Sequence[int]]) -> bool:
        if key.endswith(_BUFFER_SUFFIXES):
            return False
        if key in shapes:
            return len(shapes[key]) >= 2
        return key.endswith(".weight") and not _is_norm(module_name(key))
