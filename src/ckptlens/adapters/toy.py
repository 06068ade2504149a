"""The project's own attention-only transformer (``ckptlens.sources.trained.transformer``).

Keys: ``embed.weight`` [vocab, d], ``blocks.{i}.attn.{q,k,v,o}_proj.weight`` (bias-free nn.Linear,
[d, d]; head h = rows h·dh:(h+1)·dh of q/k/v and the same columns of o), ``unembed.weight``.
The number of heads is not recoverable from shapes: it comes from the checkpoint's metadata key
``ckptlens_model`` (JSON with ``n_heads``, ``d_model``, ``n_layers``, ``vocab_size``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols, split_heads_rows

_Q = re.compile(r"^(blocks\.\d+\.attn)\.q_proj\.weight$")


class ToyAdapter(Adapter):
    name = "toy"
    n_heads_keys = ("n_heads",)
    block_pattern = r"^blocks\.\d+$"
    embed_suffixes = ("embed.weight",)
    attention_output = "o_proj"

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return "embed.weight" in keys and any(_Q.match(k) for k in keys)

    def embed_key(self, keys):
        return "embed.weight" if "embed.weight" in keys else None

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        out = []
        for k in keys:
            m = _Q.match(k)
            if m and all(f"{m[1]}.{p}_proj.weight" in ks for p in "kvo"):
                out.append(m[1])
        return out

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)

        def bias(p):
            k = f"{module}.{p}_proj.bias"
            return _f32(get(k)) if k in ks else None

        bq, bk, bv = (bias(p) for p in "qkv")
        return AttentionWeights(
            module,
            n,
            W_Q=split_heads_rows(_f32(get(f"{module}.q_proj.weight")), n, f"{module}.q_proj"),
            W_K=split_heads_rows(_f32(get(f"{module}.k_proj.weight")), n, f"{module}.k_proj"),
            W_V=split_heads_rows(_f32(get(f"{module}.v_proj.weight")), n, f"{module}.v_proj"),
            W_O=split_heads_cols(_f32(get(f"{module}.o_proj.weight")), n, f"{module}.o_proj"),
            b_Q=None if bq is None else bq.reshape(n, -1),
            b_K=None if bk is None else bk.reshape(n, -1),
            b_V=None if bv is None else bv.reshape(n, -1),
            b_O=bias("o"),
        )
