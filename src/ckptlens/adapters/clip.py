"""CLIP's vision tower as in ``transformers``: ``CLIPVisionModel`` (``model_type``
``clip_vision_model``) and the vision half of a full ``CLIPModel`` (``clip``).

Per layer ``[vision_model.]encoder.layers.{i}.self_attn.{q,k,v,out}_proj`` (transformers 5 saves a
``CLIPVisionModel`` without the ``vision_model.`` prefix, a ``CLIPModel`` with it) (nn.Linear [d, d], with
biases; head h = rows, resp. columns of ``out_proj``, h·dh:(h+1)·dh), the MLP ``mlp.fc1``/``mlp.fc2``,
the block ``vision_model.encoder.layers.{i}``; the attention module named in the head pieces is
``…self_attn``. The class embedding ``vision_model.embeddings.class_embedding`` [d] is a [1, d] matrix,
the position embedding [tokens, d] (an nn.Embedding: row 0 the class token's), the patch
convolution ``embeddings.patch_embedding`` [d, C, p, p] a [d, C·p·p] matrix, ``visual_projection``
(nn.Linear, already [out, in]). The number of heads: ``num_attention_heads``, or
``vision_config.num_attention_heads`` of a full CLIP config.

A full CLIP checkpoint's text tower (``text_model.*``, ``text_projection``, ``logit_scale``) is left
out: its weights are not yielded and its blocks are not default targets. Metadata
``ckptlens_towers: ["vision", "text"]`` (or ``"vision,text"``) asks for both; the text tower's heads
then come from ``text_config.num_attention_heads``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from .base import (
    HEAD_PIECES,
    Adapter,
    AttentionWeights,
    Getter,
    _f32,
    split_heads_cols,
    split_heads_rows,
)
from .vit import VisionMatrices

_Q = re.compile(r"^((?:.*\.)?encoder\.layers\.\d+\.self_attn)\.q_proj\.weight$")
MODEL_TYPES = ("clip", "clip_vision_model")
TEXT = ("text_model.", "text_projection.", "logit_scale")


def towers(metadata: Mapping) -> tuple[str, ...]:
    """The towers a checkpoint's metadata asks for (``ckptlens_towers``), default vision only."""
    raw = metadata.get("ckptlens_towers", ("vision",))
    if isinstance(raw, str):
        raw = [t.strip() for t in raw.strip("[]").replace('"', "").split(",")]
    out = tuple(t for t in raw if t)
    bad = [t for t in out if t not in ("vision", "text")]
    if bad or not out:
        raise ValueError(f"ckptlens_towers {raw!r}: a list of 'vision' and/or 'text'")
    return out


class CLIPAdapter(VisionMatrices, Adapter):
    name = "clip"
    n_heads_keys = ("num_attention_heads",)
    block_pattern = r"(^|\.)encoder\.layers\.\d+$"
    embed_suffixes = ()
    attention_output = "out_proj"
    mlp_output = "mlp.fc2"
    token_suffixes = ("embeddings.class_embedding",)

    def __init__(self, metadata=None, n_heads=None, shapes=None):
        super().__init__(metadata, n_heads, shapes)
        self.towers = towers(self.metadata)
        vc, tc = self.config.get("vision_config") or {}, self.config.get("text_config") or {}
        if self.n_heads is None and isinstance(vc.get("num_attention_heads"), int):
            self.n_heads = vc["num_attention_heads"]
        self.text_heads = tc.get("num_attention_heads") if isinstance(tc.get("num_attention_heads"), int) else None
        if self.text_heads is None and n_heads is not None:
            self.text_heads = n_heads

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        ks = set(keys)
        if not any(k.endswith("embeddings.patch_embedding.weight") for k in keys):
            return False  # a text encoder with the same layer names (BART, Whisper, ...) is not CLIP's vision tower
        return any(
            (m := _Q.match(k))
            and _tower(k) == "vision"
            and all(f"{m[1]}.{p}_proj.weight" in ks for p in ("k", "v", "out"))
            for k in keys
        )

    @classmethod
    def accepts(cls, config: Mapping) -> bool:
        return config.get("model_type") in (None, *MODEL_TYPES)

    def _wanted(self, key: str) -> bool:
        return _tower(key) in self.towers

    def plan(self, keys, shapes=None):
        return super().plan([k for k in keys if self._wanted(k)], shapes)

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        return [
            m[1]
            for k in keys
            if (m := _Q.match(k))
            and self._wanted(k)
            and all(f"{m[1]}.{p}_proj.weight" in ks for p in ("k", "v", "out"))
        ]

    def _heads(self, module: str) -> int | None:
        return self.text_heads if ".text_model." in f".{module}" else self.n_heads

    def _head_plan(self, keys, shapes, module):
        n = self._heads(module)
        if n is None:
            return []
        return [(f"{module}.head{h}.{w}", (module, h, w)) for h in range(n) for w in HEAD_PIECES]

    def activation_modules(self, module_names):
        """The vision blocks (``…encoder.layers.{i}``), then the text tower's where asked for."""
        blocks = super().activation_modules(module_names)
        vision = [b for b in blocks if _tower(b) == "vision"]
        text = [b for b in blocks if _tower(b) == "text"] if "text" in self.towers else []
        return vision + text

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n, ks = self._heads(module), set(keys)
        if n is None:
            raise ValueError(f"adapter 'clip': the number of heads of {module} is unknown; pass n_heads")

        def w(p):
            return split_heads_rows(_f32(get(f"{module}.{p}_proj.weight")), n, f"{module}.{p}_proj")

        def b(p):
            k = f"{module}.{p}_proj.bias"
            return _f32(get(k)).reshape(n, -1) if k in ks else None

        bo = f"{module}.out_proj.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=w("q"),
            W_K=w("k"),
            W_V=w("v"),
            W_O=split_heads_cols(_f32(get(f"{module}.out_proj.weight")), n, f"{module}.out_proj"),
            b_Q=b("q"),
            b_K=b("k"),
            b_V=b("v"),
            b_O=_f32(get(bo)) if bo in ks else None,
        )


def _tower(key: str) -> str:
    """``text`` for a full CLIP's text tower (``text_model.*``, ``text_projection``, ``logit_scale``)."""
    return "text" if any(key.startswith(t) or f".{t}" in f".{key}" for t in TEXT) else "vision"
