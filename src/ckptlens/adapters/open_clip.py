"""open_clip state dicts (``torch.save(model.state_dict())``, or open_clip's own ``epoch_N.pt``
with its ``state_dict`` and a ``module.`` prefix, which the reader strips), any prefix in front
(``model.visual.…``).

The vision tower ``visual.*`` (open_clip's ``VisionTransformer``): per block
``visual.transformer.resblocks.{i}`` a ``ResidualAttentionBlock`` — ``ln_1``, ``attn`` (torch's
``nn.MultiheadAttention``: the fused ``attn.in_proj_weight`` [3d, d] is q | k | v, each [d, d] with
head h = rows h·dh:(h+1)·dh; ``attn.in_proj_bias`` [3d] the same; ``attn.out_proj`` [d, d], head h =
columns h·dh:(h+1)·dh), ``ln_2``, ``mlp.c_fc`` / GELU / ``mlp.c_proj``. The attention module named in
the head pieces is ``…resblocks.{i}.attn``; the fused matrix is yielded whole as ``…attn.in_proj``.
Around the blocks: ``conv1`` [d, C, p, p] (no bias) as a [d, C·p·p] matrix, ``class_embedding`` [d]
as a [1, d] matrix, ``positional_embedding`` [tokens, d] (row 0 the class token's), ``proj`` stored
[d, out] (open_clip computes x @ proj) yielded as its transpose, [out, d], like every other matrix.

The text tower (``transformer.*``, ``token_embedding``, ``positional_embedding``, ``ln_final``,
``text_projection`` at the tower's root) is left out unless metadata ``ckptlens_towers`` asks for it
(``["vision", "text"]``); its ``text_projection`` is then yielded [out, d] too and its token
embedding as ``embed``. A state dict of the visual tower alone (``conv1.weight`` at its root) is all
vision. The default activation targets are the vision blocks.

The number of heads: ``n_heads``, else metadata ``heads``/``n_heads`` or an open_clip model config's
``vision_cfg`` (``width / head_width``), else width / 64 — open_clip's default ``head_width`` (ViT-B/16:
768 / 64 = 12), read from the shape of ``in_proj_weight`` (a note says so).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..store.layers import layer_order
from .base import Adapter, AttentionWeights, Getter, _f32, module_names_from_keys, split_heads_cols
from .clip import towers
from .vit import VisionMatrices

_IN = re.compile(r"^((?:.*\.)?transformer\.resblocks\.\d+\.attn)\.in_proj_weight$")
_OUT = re.compile(r"^((?:.*\.)?transformer\.resblocks\.\d+\.attn)\.out_proj\.weight$")
_VISUAL = re.compile(r"(^|\.)visual\.")
#: open_clip's default head width (``VisionTransformer(head_width=64)``)
HEAD_WIDTH = 64


class OpenCLIPAdapter(VisionMatrices, Adapter):
    name = "open_clip"
    n_heads_keys = ("n_heads", "heads")
    block_pattern = r"(^|\.)transformer\.resblocks\.\d+$"
    embed_suffixes = ("token_embedding.weight",)
    attention_output = "out_proj"
    mlp_output = "mlp.c_proj"
    token_suffixes = ("class_embedding", "positional_embedding")

    def __init__(self, metadata=None, n_heads=None, shapes=None):
        super().__init__(metadata, n_heads, shapes)
        self.towers = towers(self.metadata)
        self.heads_inferred = False
        vc = self.config.get("vision_cfg") or {}
        if self.n_heads is None and isinstance(vc.get("width"), int):
            self.n_heads = vc["width"] // int(vc.get("head_width") or HEAD_WIDTH)
        if self.n_heads is None:
            widths = [s[1] for k, s in self.shapes.items() if _IN.match(k) and len(s) == 2]
            if widths and widths[0] % HEAD_WIDTH == 0:
                self.n_heads, self.heads_inferred = widths[0] // HEAD_WIDTH, True

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        # by the fused in_proj, or (names known from weight owners only) by out_proj beside c_fc
        return any(_IN.match(k) or _OUT.match(k) for k in keys) and any(k.endswith("mlp.c_fc.weight") for k in keys)

    def notes(self) -> list[str]:
        out = []
        if self.heads_inferred:
            out.append(
                f"open_clip: {self.n_heads} heads from the width and open_clip's default head width {HEAD_WIDTH}"
            )
        if "text" not in self.towers:
            out.append("open_clip: the text tower is left out (metadata ckptlens_towers: [vision, text] asks for it)")
        return out

    # ---- towers --------------------------------------------------------------------------------
    @staticmethod
    def _vision_alone(keys) -> bool:
        return not any(_VISUAL.search(k) for k in keys) and any(k.endswith("conv1.weight") for k in keys)

    def _wanted(self, key: str, keys) -> bool:
        vision = bool(_VISUAL.search(key)) or self._vision_alone(keys)
        return ("vision" if vision else "text") in self.towers

    def _keys(self, keys: Sequence[str]) -> list[str]:
        keys = list(keys)
        if not any(_VISUAL.search(k) for k in keys) and not self._vision_alone(keys):
            return keys  # a text tower alone: nothing else to give
        return [k for k in keys if self._wanted(k, keys)]

    # ---- matrices ------------------------------------------------------------------------------
    def _is_matrix_key(self, key, shapes) -> bool:
        if key.endswith(".in_proj_weight") or self.transposed(key):
            return True
        return super()._is_matrix_key(key, shapes)

    def transposed(self, key: str) -> bool:
        return key in ("proj", "text_projection") or key.endswith((".proj", ".text_projection"))

    def plan(self, keys, shapes=None):
        keys = self._keys(keys)
        out = []
        for name, src in super().plan(keys, shapes):
            if isinstance(src, str) and src.endswith(".in_proj_weight"):
                name = src[: -len("_weight")]
            out.append((name, src))
        return out

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        ks = set(keys)
        sel = set(self._keys(keys))
        if not any(k.endswith(".in_proj_weight") for k in keys):  # names from weight owners only
            return [m[1] for k in keys if k in sel and (m := _OUT.match(k))]
        return [m[1] for k in keys if k in sel and (m := _IN.match(k)) and f"{m[1]}.out_proj.weight" in ks]

    def activation_modules(self, module_names):
        names = list(module_names)
        if any(n.endswith((".weight", ".bias", "_weight")) for n in names):
            names = module_names_from_keys(names)
        rx = re.compile(self.block_pattern)
        blocks = [n for n in names if rx.search(n)]
        vision = [b for b in blocks if _VISUAL.search(b + ".")]
        if vision and "text" not in self.towers:
            blocks = vision
        return layer_order(set(blocks))

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n, ks = self.n_heads, set(keys)
        w = _f32(get(f"{module}.in_proj_weight"))
        if w.shape[0] != 3 * w.shape[1] or w.shape[1] % n:
            raise ValueError(f"{module}.in_proj_weight {w.shape}: not [3·d, d] with d divisible by {n} heads")
        d = w.shape[1]
        qkv = w.reshape(3, n, d // n, d)
        b = None
        if f"{module}.in_proj_bias" in ks:
            b = _f32(get(f"{module}.in_proj_bias")).reshape(3, n, d // n)
        bo = f"{module}.out_proj.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=qkv[0].copy(),
            W_K=qkv[1].copy(),
            W_V=qkv[2].copy(),
            W_O=split_heads_cols(_f32(get(f"{module}.out_proj.weight")), n, f"{module}.out_proj"),
            b_Q=None if b is None else b[0].copy(),
            b_K=None if b is None else b[1].copy(),
            b_V=None if b is None else b[2].copy(),
            b_O=_f32(get(bo)) if bo in ks else None,
        )
