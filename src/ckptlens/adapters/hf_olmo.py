"""OLMo-1's original checkpoints (``hf_olmo``: ``allenai/OLMo-1B``, ``OLMo-7B``, DataDecide), whose
state dict keeps the training code's fused layout rather than transformers' ``olmo`` one (the
``-hf`` repositories, handled by the ``llama`` adapter).

Per block ``model.transformer.blocks.{i}``: ``att_proj`` [d + 2·n_kv·dh, d] fuses q|k|v as blocks of
rows (q: the first d rows, then k, then v; head h = rows h·dh:(h+1)·dh of its block), ``attn_out``
is the output projection, ``ff_proj`` [2·d_ff, d] the fused SwiGLU input (first half the input,
second half the gate: silu(gate)·input goes into ``ff_out``, the MLP output). OLMo-1's layer norms
have no parameters. The attention module named in the head pieces is the block itself
(``model.transformer.blocks.{i}.head{h}.ov``). The number of heads comes from config.json
(``n_heads``; ``n_kv_heads`` for grouped attention). Rotary embeddings and ``clip_qkv`` (a clamp of
q, k, v where the config sets it) act on the projections' outputs and are not in the weights.

transformers has no ``hf_olmo`` model: activations and gradients of these checkpoints need the
``-hf`` conversion (``olmo``), the weights are read as they are.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols, split_heads_rows

_ATT = re.compile(r"^((?:.*\.)?transformer\.blocks\.\d+)\.att_proj\.weight$")


class HFOlmoAdapter(Adapter):
    name = "hf_olmo"
    n_heads_keys = ("n_heads", "num_attention_heads")
    block_pattern = r"(^|\.)transformer\.blocks\.\d+$"
    embed_suffixes = ("transformer.wte.weight",)
    attention_output = "attn_out"
    mlp_output = "ff_out"

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return any(_ATT.match(k) for k in keys)

    def n_kv_heads(self, keys=(), shapes=None, module=None) -> int:
        shapes = {**self.shapes, **dict(shapes or {})}
        att = shapes.get(f"{module}.att_proj.weight") if module else None
        if att and self.n_heads and len(att) == 2:
            d = att[1]
            dh = d // self.n_heads
            if dh and (att[0] - d) % (2 * dh) == 0:
                return (att[0] - d) // (2 * dh)
        n_kv = self.config.get("n_kv_heads")
        return n_kv if isinstance(n_kv, int) and not isinstance(n_kv, bool) and n_kv > 0 else self.n_heads

    def notes(self) -> list[str]:
        if isinstance(self.config.get("clip_qkv"), (int, float)):
            return [
                f"clip_qkv={self.config['clip_qkv']}: q, k, v are clamped after the projections; not in the weights"
            ]
        return []

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        return [m[1] for k in keys if (m := _ATT.match(k)) and f"{m[1]}.attn_out.weight" in ks]

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)
        att = _f32(get(f"{module}.att_proj.weight"))
        wo = _f32(get(f"{module}.attn_out.weight"))
        inner = wo.shape[1]  # n_heads·dh
        if inner % n or (att.shape[0] - inner) % 2:
            raise ValueError(f"{module}.att_proj {att.shape} does not split into q|k|v for {n} heads")
        kv = (att.shape[0] - inner) // 2
        q, k, v = att[:inner], att[inner : inner + kv], att[inner + kv :]
        dh = inner // n
        bias = None
        if f"{module}.att_proj.bias" in ks:
            b = _f32(get(f"{module}.att_proj.bias"))
            bias = (b[:inner].reshape(n, dh), b[inner : inner + kv].reshape(-1, dh), b[inner + kv :].reshape(-1, dh))
        bo = f"{module}.attn_out.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=split_heads_rows(q, n, f"{module}.att_proj[q]").copy(),
            W_K=split_heads_rows(k, kv // dh, f"{module}.att_proj[k]").copy(),
            W_V=split_heads_rows(v, kv // dh, f"{module}.att_proj[v]").copy(),
            W_O=split_heads_cols(wo, n, f"{module}.attn_out"),
            b_Q=None if bias is None else bias[0].copy(),
            b_K=None if bias is None else bias[1].copy(),
            b_V=None if bias is None else bias[2].copy(),
            b_O=_f32(get(bo)) if bo in ks else None,
        )


def olmo_state_from_hf(state: Mapping, prefix: str = "model.") -> dict:
    """An hf_olmo state dict from a transformers ``olmo`` one (the inverse of transformers'
    ``convert_olmo_weights_to_hf``: att_proj = q|k|v, ff_proj = up|gate), for tests and for reading
    a converted model in the original layout. Values are concatenated with numpy."""
    import numpy as np

    out = {}
    layers = sorted({int(k.split(".")[2]) for k in state if k.startswith(f"{prefix}layers.")})
    for i in layers:
        a, m = f"{prefix}layers.{i}.self_attn", f"{prefix}layers.{i}.mlp"
        b = f"model.transformer.blocks.{i}"
        out[f"{b}.att_proj.weight"] = np.concatenate([np.asarray(state[f"{a}.{p}_proj.weight"]) for p in "qkv"])
        out[f"{b}.attn_out.weight"] = np.asarray(state[f"{a}.o_proj.weight"])
        out[f"{b}.ff_proj.weight"] = np.concatenate(
            [np.asarray(state[f"{m}.up_proj.weight"]), np.asarray(state[f"{m}.gate_proj.weight"])]
        )
        out[f"{b}.ff_out.weight"] = np.asarray(state[f"{m}.down_proj.weight"])
    out["model.transformer.wte.weight"] = np.asarray(state[f"{prefix}embed_tokens.weight"])
    if "lm_head.weight" in state:
        out["model.transformer.ff_out.weight"] = np.asarray(state["lm_head.weight"])
    return out
