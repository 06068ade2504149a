"""BERT-style encoders (BERT, RoBERTa, ELECTRA, ... as in ``transformers``).

Per layer: ``encoder.layer.{i}.attention.self.{query,key,value}`` (nn.Linear [d, d]; head h = rows
h·dh:(h+1)·dh) and ``encoder.layer.{i}.attention.output.dense`` (the output projection, head h =
columns h·dh:(h+1)·dh). The attention module named in the head pieces is
``encoder.layer.{i}.attention``. The number of heads comes from config.json.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols, split_heads_rows

_QUERY = re.compile(r"^((?:.*\.)?attention)\.self\.query\.weight$")


class BertAdapter(Adapter):
    name = "bert"
    n_heads_keys = ("num_attention_heads",)
    block_pattern = r"(^|\.)encoder\.layer\.\d+$"
    embed_suffixes = ("embeddings.word_embeddings.weight",)
    attention_output = "output.dense"
    mlp_output = "output.dense"  # encoder.layer.{i}.output.dense: the feed-forward output

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return any(_QUERY.match(k) for k in keys)

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        need = ("self.key.weight", "self.value.weight", "output.dense.weight")
        return [m[1] for k in keys if (m := _QUERY.match(k)) and all(f"{m[1]}.{p}" in ks for p in need)]

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)

        def w(p):
            return split_heads_rows(_f32(get(f"{module}.self.{p}.weight")), n, f"{module}.self.{p}")

        def b(p):
            k = f"{module}.self.{p}.bias"
            return _f32(get(k)).reshape(n, -1) if k in ks else None

        bo = f"{module}.output.dense.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=w("query"),
            W_K=w("key"),
            W_V=w("value"),
            W_O=split_heads_cols(_f32(get(f"{module}.output.dense.weight")), n, f"{module}.output.dense"),
            b_Q=b("query"),
            b_K=b("key"),
            b_V=b("value"),
            b_O=_f32(get(bo)) if bo in ks else None,
        )
