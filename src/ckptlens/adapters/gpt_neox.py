"""GPT-NeoX (Pythia) as in ``transformers.GPTNeoXForCausalLM`` / ``GPTNeoXModel``.

The fused ``attention.query_key_value`` weight [3·d, d] is laid out per head: its rows are
[n_heads, 3, d_head] — for head h, rows h·3·dh … h·3·dh+dh are q, the next dh are k, the next dh
are v. (So the last third of the rows is *not* V.) The bias [3·d] has the same layout.
``attention.dense`` is the output projection (nn.Linear [d, d]; head h = columns h·dh:(h+1)·dh).
The number of heads comes from config.json (``num_attention_heads``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols

_QKV = re.compile(r"^((?:.*\.)?layers\.\d+\.attention)\.query_key_value\.weight$")


class GPTNeoXAdapter(Adapter):
    name = "gpt_neox"
    n_heads_keys = ("num_attention_heads",)
    block_pattern = r"(^|\.)layers\.\d+$"
    embed_suffixes = ("embed_in.weight",)
    attention_output = "dense"
    mlp_output = "mlp.dense_4h_to_h"

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return any(_QKV.match(k) for k in keys)

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
        bo = _f32(get(f"{module}.dense.bias")) if f"{module}.dense.bias" in ks else None
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
            b_O=bo,
        )
