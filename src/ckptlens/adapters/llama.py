"""Llama-family decoders as in ``transformers`` (``LlamaForCausalLM``, ``MistralForCausalLM``,
``Qwen2/3``, ``Olmo``/``Olmo2``/``Olmo3``, ``Gemma``/``Gemma2``/``Gemma3ForCausalLM``, ``SmolLM3``,
``Apertus``, …), configured from ``config.json``: the model types in :data:`MODEL_TYPES` are the ones
the tests verify against the model's own attention (``tests/adapters/test_llama.py``).

Per layer ``model.layers.{i}.self_attn.{q,k,v,o}_proj`` (nn.Linear, [out, in]); the attention module
named in the head pieces is ``model.layers.{i}.self_attn``, the MLP output ``mlp.down_proj``, the
embedding ``model.embed_tokens``. What the config and the keys decide:

- grouped/multi-query attention: ``k_proj``/``v_proj`` have ``num_key_value_heads`` heads and query
  head h reads key/value head h // (n_heads / n_kv) (not h % n_kv). The shared maps are named once,
  ``self_attn.kv{j}.k|v``; ``head{h}.qk`` and ``head{h}.ov`` pair query head h with its key/value head;
- ``head_dim`` may differ from hidden/heads (Gemma): it is read from the ``q_proj`` rows;
- q/k/v biases (Qwen2): carried by :meth:`attention_weights`; the ``.qk`` piece alone then does *not*
  give the attention logits (the biases add terms linear in each side and a constant);
- ``q_norm``/``k_norm`` RMS norms between the projections and the scores, over each head's vector
  (Qwen3, Gemma-3, Apertus: ``[d_head]`` gains) or over the whole flattened projection (OLMo-2/3:
  ``[n_heads·d_head]`` gains). Their gains (``1 + w`` for Gemma) are folded into the ``.q``, ``.k``
  and ``.qk`` pieces; the per-token factor 1/RMS(W_Q·x)·1/RMS(W_K·x) depends on the input and is not in
  the weights, so ``.qk`` gives the logits up to that positive factor per (query, key) pair;
- the score scale: ``query_pre_attn_scalar^-½`` (Gemma-2/3), ``attention_multiplier`` (Granite),
  else 1/√d_head (it is part of ``.qk``); Gemma-2's logit soft-capping (``attn_logit_softcapping``) is
  carried as ``softcap``, not in the weights;
- rotary position embeddings act between q and k and are not in the weights; layers without them
  (SmolLM3's ``no_rope_layers``) are listed by :meth:`LlamaAdapter.rotary_layers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from .base import Adapter, AttentionWeights, Getter, _f32, split_heads_cols, split_heads_rows

_Q = re.compile(r"^((?:.*\.)?layers\.(\d+)\.self_attn)\.q_proj\.weight$")

#: model_type -> what differs from Llama's attention; every entry is verified by the tests
MODEL_TYPES: dict[str, dict] = {
    "llama": {},
    "mistral": {},
    "ministral": {},
    "qwen2": {},
    "qwen3": {},
    "olmo": {},
    "olmo2": {},
    "olmo3": {},
    "gemma": {"gain_offset": 1.0},
    "gemma2": {"gain_offset": 1.0},
    "gemma3_text": {"gain_offset": 1.0},
    "vaultgemma": {"gain_offset": 1.0},
    "smollm3": {},
    "apertus": {},
    "granite": {},
    "helium": {},
    "internlm3": {},
    "arcee": {},
    "seed_oss": {},
    "ernie4_5": {},
    "exaone4": {},
    "starcoder2": {},
    "cohere": {},
    "cohere2": {},
    "glm": {},
    "glm4": {},
    "nemotron": {},
    "jais2": {},
    "ministral3": {},
    "mixtral": {},
    "qwen2_moe": {},
    "qwen3_moe": {},
    "olmoe": {},
    "flex_olmo": {},
}
#: model types whose q_norm/k_norm act on the whole flattened projection, resp. on each head
FULL_WIDTH_QK_NORM = ("olmo2", "olmo3", "olmoe", "flex_olmo")
PER_HEAD_QK_NORM = ("qwen3", "qwen3_moe", "gemma3_text", "apertus", "exaone4")


class LlamaAdapter(Adapter):
    name = "llama"
    n_heads_keys = ("num_attention_heads",)
    block_pattern = r"(^|\.)layers\.\d+$"
    embed_suffixes = ("embed_tokens.weight",)
    attention_output = "o_proj"
    mlp_output = ("mlp.down_proj", "mlp.c_proj")  # StarCoder2: c_fc/c_proj

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        ks = set(keys)
        for k in keys:
            m = _Q.match(k)
            if m and all(f"{m[1]}.{p}_proj.weight" in ks for p in "kvo"):
                return True
        return False

    @classmethod
    def accepts(cls, config: Mapping) -> bool:
        mt = config.get("model_type")
        if mt == "cohere" and config.get("use_qk_norm"):
            return False  # Cohere's q/k norms are LayerNorms (mean subtracted): not verified
        return mt is None or mt in MODEL_TYPES

    # ---- config -------------------------------------------------------------------------------
    @property
    def _traits(self) -> dict:
        return MODEL_TYPES.get(str(self.config.get("model_type")), {})

    def n_kv_heads(self, keys=(), shapes=None, module=None) -> int:
        """From the shapes of ``k_proj`` and ``q_proj`` where known, else ``num_key_value_heads``."""
        shapes = {**self.shapes, **dict(shapes or {})}
        if module is not None and self.n_heads:
            q, k = shapes.get(f"{module}.q_proj.weight"), shapes.get(f"{module}.k_proj.weight")
            if q and k and q[0] % self.n_heads == 0:
                dh = q[0] // self.n_heads
                if k[0] % dh == 0:
                    return k[0] // dh
        n_kv = self.config.get("num_key_value_heads")
        return n_kv if isinstance(n_kv, int) and not isinstance(n_kv, bool) and n_kv > 0 else self.n_heads

    def score_scale(self, d_head: int) -> float | None:
        """The factor of the attention scores where it is not 1/√d_head (None: 1/√d_head)."""
        if isinstance(self.config.get("query_pre_attn_scalar"), (int, float)):
            return float(self.config["query_pre_attn_scalar"]) ** -0.5
        if str(self.config.get("model_type")).startswith("granite") and isinstance(
            self.config.get("attention_multiplier"), (int, float)
        ):
            return float(self.config["attention_multiplier"])
        return None

    def rotary_layers(self, n_layers: int) -> list[bool]:
        """Per layer, whether rotary position embeddings act on its q and k (SmolLM3's
        ``no_rope_layers``: 1 = rotary, 0 = none)."""
        flags = self.config.get("no_rope_layers")
        if isinstance(flags, list) and len(flags) >= n_layers:
            return [bool(f) for f in flags[:n_layers]]
        return [True] * n_layers

    def notes(self) -> list[str]:
        out = []
        mt = self.config.get("model_type")
        if mt is not None and mt not in MODEL_TYPES:
            out.append(f"model_type {mt!r} is not among the Llama-family types the tests verify")
        if self.config.get("attention_bias") or mt in ("qwen2", "seed_oss", "starcoder2"):
            out.append("q/k biases: the .qk piece alone does not give the attention logits (bias terms are added)")
        if mt in FULL_WIDTH_QK_NORM:
            out.append(
                "q_norm/k_norm act on the whole flattened projection: their gains are folded into .q/.k/.qk; "
                "the per-token factor 1/RMS(W_Q·x)·1/RMS(W_K·x) is not in the weights"
            )
        elif mt in PER_HEAD_QK_NORM:
            out.append(
                "per-head q_norm/k_norm: their gains are folded into .q/.k/.qk; the per-token, per-head factor "
                "1/RMS(W_Q^h·x)·1/RMS(W_K^h·x) is not in the weights"
            )
        if self.config.get("attn_logit_softcapping"):
            out.append("attention logits are soft-capped (tanh) before the softmax: not in the .qk piece")
        return out

    # ---- heads --------------------------------------------------------------------------------
    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        return [m[1] for k in keys if (m := _Q.match(k)) and all(f"{m[1]}.{p}_proj.weight" in ks for p in "kvo")]

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n = self.n_heads
        ks = set(keys)
        wq = _f32(get(f"{module}.q_proj.weight"))
        if wq.shape[0] % n:
            raise ValueError(f"{module}.q_proj: {wq.shape[0]} rows do not split into {n} heads")
        dh = wq.shape[0] // n
        wk, wv = _f32(get(f"{module}.k_proj.weight")), _f32(get(f"{module}.v_proj.weight"))
        if wk.shape[0] % dh or wk.shape != wv.shape:
            raise ValueError(f"{module}: k_proj {wk.shape} / v_proj {wv.shape} do not split into heads of {dh}")
        n_kv = wk.shape[0] // dh
        if n % n_kv:
            raise ValueError(f"{module}: {n} query heads do not share {n_kv} key/value heads evenly")

        def bias(p, heads):
            k = f"{module}.{p}_proj.bias"
            return _f32(get(k)).reshape(heads, dh) if k in ks else None

        offset = float(self._traits.get("gain_offset", 0.0))
        gains, scope = {}, None
        for side, heads in (("q", n), ("k", n_kv)):
            key = f"{module}.{side}_norm.weight"
            if key not in ks:
                continue
            g = _f32(get(key)).astype(np.float64) + offset
            if g.shape == (dh,):
                gains[side], scope = np.tile(g, (heads, 1)).astype(np.float32), "head"
            elif g.shape == (heads * dh,):
                gains[side], scope = g.reshape(heads, dh).astype(np.float32), "full"
            else:
                raise ValueError(f"{key}: {g.shape} gains fit neither one head ({dh}) nor all {heads} heads")
        eps = self.config.get("rms_norm_eps", 1e-6)
        softcap = self.config.get("attn_logit_softcapping")
        bo = f"{module}.o_proj.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=split_heads_rows(wq, n, f"{module}.q_proj"),
            W_K=split_heads_rows(wk, n_kv, f"{module}.k_proj"),
            W_V=split_heads_rows(wv, n_kv, f"{module}.v_proj"),
            W_O=split_heads_cols(_f32(get(f"{module}.o_proj.weight")), n, f"{module}.o_proj"),
            b_Q=bias("q", n),
            b_K=bias("k", n_kv),
            b_V=bias("v", n_kv),
            b_O=_f32(get(bo)) if bo in ks else None,
            q_gain=gains.get("q"),
            k_gain=gains.get("k"),
            qk_norm=scope,
            norm_eps=float(eps) if isinstance(eps, (int, float)) else 1e-6,
            scale=self.score_scale(dh),
            softcap=float(softcap) if isinstance(softcap, (int, float)) and softcap else None,
        )
