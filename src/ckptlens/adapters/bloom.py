"""BLOOM as in ``transformers.BloomForCausalLM`` / ``BloomModel``.

Per layer ``transformer.h.{i}.self_attention.query_key_value`` (nn.Linear [3·d, d]) fuses q, k, v
interleaved per head as GPT-NeoX does: its rows are [n_heads, 3, d_head] (head h's q, then its k,
then its v); the bias [3·d] has the same layout. ``self_attention.dense`` is the output projection
(head h = columns h·dh:(h+1)·dh). The attention module named in the head pieces is
``transformer.h.{i}.self_attention``; the MLP output is ``mlp.dense_4h_to_h``, the embedding
``transformer.word_embeddings``. BLOOM has no rotary embedding: ALiBi adds slope_h·j to the score of
the key at position j (the same for every query, so a per-query constant under the softmax); the
slopes (:func:`alibi_slopes`) are carried by :meth:`attention_weights`, not by the ``.qk`` piece.
The number of heads comes from config.json (``n_head``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols

_QKV = re.compile(r"^((?:.*\.)?h\.\d+\.self_attention)\.query_key_value\.weight$")


def alibi_slopes(n_heads: int) -> np.ndarray:
    """The ALiBi slope of each head (Press et al. 2022; BLOOM's ``build_alibi_tensor``)."""
    closest = 2 ** math.floor(math.log2(n_heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base**p for p in range(1, closest + 1)]
    if closest != n_heads:
        extra = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra**p for p in range(1, 2 * min(closest, n_heads - closest), 2)]
    return np.asarray(slopes, dtype=np.float32)


class BloomAdapter(Adapter):
    name = "bloom"
    n_heads_keys = ("n_head", "num_attention_heads")
    block_pattern = r"(^|\.)h\.\d+$"
    embed_suffixes = ("word_embeddings.weight",)
    attention_output = "dense"
    mlp_output = "mlp.dense_4h_to_h"

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return any(_QKV.match(k) for k in keys)

    def notes(self) -> list[str]:
        return ["ALiBi: a per-head slope times the key position is added to the scores; it is not in .qk"]

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        return [m[1] for k in keys if (m := _QKV.match(k)) and f"{m[1]}.dense.weight" in ks]

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)
        qkv = _f32(get(f"{module}.query_key_value.weight"))
        three_d, d = qkv.shape
        if three_d % (3 * n):
            raise ValueError(f"{module}.query_key_value: {three_d} rows do not split into 3 × {n} heads")
        dh = three_d // (3 * n)
        w = qkv.reshape(n, 3, dh, d)
        b = None
        if f"{module}.query_key_value.bias" in ks:
            b = _f32(get(f"{module}.query_key_value.bias")).reshape(n, 3, dh)
        bo = f"{module}.dense.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=w[:, 0].copy(),
            W_K=w[:, 1].copy(),
            W_V=w[:, 2].copy(),
            W_O=split_heads_cols(_f32(get(f"{module}.dense.weight")), n, f"{module}.dense"),
            b_Q=None if b is None else b[:, 0].copy(),
            b_K=None if b is None else b[:, 1].copy(),
            b_V=None if b is None else b[:, 2].copy(),
            b_O=_f32(get(bo)) if bo in ks else None,
            alibi_slopes=alibi_slopes(n),
        )
