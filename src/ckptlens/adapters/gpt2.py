"""GPT-2 as in ``transformers.GPT2LMHeadModel`` / ``GPT2Model``.

GPT-2's ``Conv1D`` layers (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) store
their weight as [in, out]; the adapter transposes them to the canonical [out, in]. ``c_attn``
fuses q, k, v as [d, 3·d] columns in q|k|v order (then heads inside each block of d);
``c_proj`` is the output projection. The number of heads comes from config.json (``n_head``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Adapter, AttentionWeights, Getter, _f32, module_name, split_heads_cols, split_heads_rows

_CATTN = re.compile(r"^((?:.*\.)?h\.\d+\.attn)\.c_attn\.weight$")
_CONV1D = ("c_attn", "c_proj", "c_fc", "q_attn")


class GPT2Adapter(Adapter):
    name = "gpt2"
    n_heads_keys = ("n_head", "num_attention_heads")
    block_pattern = r"(^|\.)h\.\d+$"
    embed_suffixes = ("wte.weight",)
    attention_output = "c_proj"
    mlp_output = "mlp.c_proj"

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return any(_CATTN.match(k) for k in keys)

    def transposed(self, key: str) -> bool:
        return key.endswith(".weight") and module_name(key).rsplit(".", 1)[-1] in _CONV1D

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        return [m[1] for k in keys if (m := _CATTN.match(k)) and f"{m[1]}.c_proj.weight" in ks]

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)
        c_attn = _f32(get(f"{module}.c_attn.weight")).T  # [3d, d] = [out, in]
        if c_attn.shape[0] != 3 * c_attn.shape[1]:
            raise ValueError(f"{module}.c_attn: expected [d, 3·d] (fused q|k|v), got {c_attn.T.shape}")
        d = c_attn.shape[1]
        q, k, v = c_attn[:d], c_attn[d : 2 * d], c_attn[2 * d :]
        bq = bk = bv = None
        if f"{module}.c_attn.bias" in ks:
            b = _f32(get(f"{module}.c_attn.bias"))
            bq, bk, bv = (b[i * d : (i + 1) * d].reshape(n, -1).copy() for i in range(3))
        bo = _f32(get(f"{module}.c_proj.bias")) if f"{module}.c_proj.bias" in ks else None
        return AttentionWeights(
            module,
            n,
            W_Q=split_heads_rows(q, n, f"{module}.c_attn[q]").copy(),
            W_K=split_heads_rows(k, n, f"{module}.c_attn[k]").copy(),
            W_V=split_heads_rows(v, n, f"{module}.c_attn[v]").copy(),
            W_O=split_heads_cols(_f32(get(f"{module}.c_proj.weight")).T, n, f"{module}.c_proj"),
            b_Q=bq,
            b_K=bk,
            b_V=bv,
            b_O=bo,
        )
