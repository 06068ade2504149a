"""Fallback for any architecture: every ≥2-D parameter under its module name, no heads.

Tensors with more than two dimensions (convolutions) are flattened to [out, rest]. Without known
shapes (``shapes=`` of :func:`get_adapter`, given by ``open_checkpoint``), a key counts as a matrix
when it ends in ``.weight`` and is not a normalisation layer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .base import Adapter, _is_norm, module_name

_ATTENTION_KEY = re.compile(r"(^|[._])(attn|attention|self_attn|self_attention)([._]|$)", re.IGNORECASE)

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


def no_adapter_note(keys: Sequence[str], config: Mapping, unverified: str | None = None) -> str | None:
    """One line for a model that falls back to the generic adapter although it has attention (a
    ``model_type`` in its config or attention-named tensors): which per-head metrics are unavailable
    and why. None for models without attention (nothing is missing there)."""
    mt = config.get("model_type")
    if mt is None and not any(_ATTENTION_KEY.search(k) for k in keys):
        return None
    what = f"model_type {mt!r}" if mt is not None else "this architecture"
    why = "how its attention weights split into heads is not known"
    if unverified:
        why = f"the {unverified!r} adapter's key layout fits, but it is not verified on {what}"
    return (
        f"no ckptlens adapter for {what}: the generic adapter gives every weight matrix, but no per-head "
        f"pieces (.head{{h}}.q|k|v|o|qk|ov), so no per-head circuit metrics (qk_ov_*, embed_ov_*): {why}"
    )
