"""ModernBERT encoders (Ettin, ModernBERT) as in ``transformers.ModernBertModel`` /
``ModernBertForMaskedLM`` (keys prefixed ``model.``, the masked-LM head ``head.*`` and ``decoder``).

Per layer ``layers.{i}.attn.Wqkv`` (nn.Linear, stored [out, in] = [3·d, d], *not* transposed) fuses
q, k, v as three blocks of rows, q|k|v, each split into heads (head h = rows h·dh:(h+1)·dh of its
block); ``attn.Wo`` is the output projection. The attention module named in the head pieces is
``layers.{i}.attn``. ``mlp.Wi`` [2·d_ff, d] is a fused GLU input: its first d_ff rows are the input,
the last d_ff the gate (act(input)·gate goes into ``mlp.Wo``, the MLP output); it is yielded as one
matrix. Rotary embeddings (a different base on the local, sliding-window layers) act between q and
k and are not in the weights. The number of heads comes from config.json.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols, split_heads_rows

_WQKV = re.compile(r"^((?:.*\.)?layers\.\d+\.attn)\.Wqkv\.weight$")


class ModernBertAdapter(Adapter):
    name = "modernbert"
    n_heads_keys = ("num_attention_heads",)
    block_pattern = r"(^|\.)layers\.\d+$"
    embed_suffixes = ("embeddings.tok_embeddings.weight",)
    attention_output = "Wo"
    mlp_output = "mlp.Wo"

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return any(_WQKV.match(k) for k in keys)

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        return [m[1] for k in keys if (m := _WQKV.match(k)) and f"{m[1]}.Wo.weight" in ks]

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)
        qkv = _f32(get(f"{module}.Wqkv.weight"))
        if qkv.shape[0] % 3:
            raise ValueError(f"{module}.Wqkv: {qkv.shape[0]} rows are not three q|k|v blocks")
        inner = qkv.shape[0] // 3
        q, k, v = qkv[:inner], qkv[inner : 2 * inner], qkv[2 * inner :]
        bq = bk = bv = None
        if f"{module}.Wqkv.bias" in ks:
            b = _f32(get(f"{module}.Wqkv.bias"))
            bq, bk, bv = (b[i * inner : (i + 1) * inner].reshape(n, -1).copy() for i in range(3))
        bo = f"{module}.Wo.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=split_heads_rows(q, n, f"{module}.Wqkv[q]").copy(),
            W_K=split_heads_rows(k, n, f"{module}.Wqkv[k]").copy(),
            W_V=split_heads_rows(v, n, f"{module}.Wqkv[v]").copy(),
            W_O=split_heads_cols(_f32(get(f"{module}.Wo.weight")), n, f"{module}.Wo"),
            b_Q=bq,
            b_K=bk,
            b_V=bv,
            b_O=_f32(get(bo)) if bo in ks else None,
        )
