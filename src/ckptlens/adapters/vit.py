"""Vision transformers as in ``transformers`` (``ViTModel``, ``ViTForImageClassification``), and
the pieces every vision adapter shares (:class:`VisionMatrices`).

A ViT checkpoint is read under the names ``transformers`` *saves* (``save_pretrained`` and Trainer
checkpoints), which are not the ones transformers 5 builds: per layer
``encoder.layer.{i}.attention.attention.{query,key,value}`` (nn.Linear [d, d]; head h = rows
h·dh:(h+1)·dh), the output projection ``encoder.layer.{i}.attention.output.dense`` (head h = columns
h·dh:(h+1)·dh), the MLP ``intermediate.dense``/``output.dense``, the block ``encoder.layer.{i}``
(``vit.`` in front for the classifier). A state dict taken from a transformers-5 model
(``layers.{i}.attention.{q,k,v,o}_proj``, ``mlp.fc1/fc2``) is read as well: the same heads, under
those names. The attention module named in the head pieces is ``…encoder.layer.{i}.attention``
(``…layers.{i}.attention``). The number of heads comes from config.json.

Embeddings are matrices of their own shape, not flattened: the class token ``embeddings.cls_token``
[1, 1, d] is a [1, d] matrix, the position embeddings [1, tokens, d] a [tokens, d] matrix (one row
per position: the class token's, then the patches'), the patch convolution
``embeddings.patch_embeddings.projection`` [d, C, p, p] a [d, C·p·p] matrix (a patch flattened
channel-major, then rows, then columns, is its input). There is no token embedding (``embed``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from .base import Adapter, AttentionWeights, Getter, _f32, _is_norm, module_name, split_heads_cols, split_heads_rows

_LEGACY = re.compile(r"^((?:.*\.)?layer\.\d+\.attention)\.attention\.query\.weight$")
_NEW = re.compile(r"^((?:.*\.)?layers\.\d+\.attention)\.q_proj\.weight$")

#: model types the tests verify (tests/adapters/test_vit.py)
MODEL_TYPES = ("vit",)


class VisionMatrices:
    """Mixed into a vision adapter before :class:`Adapter`: embeddings stored with leading unit
    dimensions (``[1, 1, d]``, ``[1, tokens, d]``, a bare ``[d]`` class embedding) are yielded as
    [tokens, d] matrices; convolutions (the patch embedding) as [out, C·p·p]."""

    #: key suffixes of the class / position embeddings (any number of leading unit dimensions)
    token_suffixes: tuple[str, ...] = ()

    def _token_key(self, key: str) -> bool:
        return key.endswith(self.token_suffixes)

    def _is_matrix_key(self, key: str, shapes: Mapping[str, Sequence[int]]) -> bool:
        if self._token_key(key):
            return key not in shapes or int(np.prod(shapes[key])) > 0
        if not key.endswith(".weight"):
            return False
        if key in shapes:
            return len(shapes[key]) >= 2
        return not _is_norm(module_name(key))

    def weight_view(self, keys, get: Getter, patterns=None, match=None, shapes=None):
        def as_matrix(key):
            w = np.asarray(get(key))
            return w.reshape(-1, w.shape[-1]) if self._token_key(key) else w

        return super().weight_view(keys, as_matrix, patterns, match, shapes)


class ViTAdapter(VisionMatrices, Adapter):
    name = "vit"
    n_heads_keys = ("num_attention_heads",)
    block_pattern = r"(^|\.)(encoder\.layer|layers)\.\d+$"
    embed_suffixes = ()
    attention_output = "output.dense"
    mlp_output = ("output.dense", "mlp.fc2")
    token_suffixes = ("embeddings.cls_token", "embeddings.position_embeddings", "embeddings.mask_token")

    @classmethod
    def detect(cls, keys: list[str]) -> bool:
        return bool(cls._modules(keys))

    @classmethod
    def accepts(cls, config: Mapping) -> bool:
        return config.get("model_type") in (None, *MODEL_TYPES)

    @staticmethod
    def _modules(keys: Sequence[str]) -> list[tuple[str, str]]:
        """[(attention module, layout "legacy"|"new")]"""
        ks, out = set(keys), []
        for k in keys:
            if (m := _LEGACY.match(k)) and all(
                f"{m[1]}.{p}.weight" in ks for p in ("attention.key", "attention.value", "output.dense")
            ):
                out.append((m[1], "legacy"))
            elif (m := _NEW.match(k)) and all(f"{m[1]}.{p}_proj.weight" in ks for p in "kvo"):
                out.append((m[1], "new"))
        return out

    def _attention_modules(self, keys: Sequence[str]) -> list[str]:
        return [m for m, _ in self._modules(keys)]

    def head_shapes(self, keys, shapes, module):
        layout = dict(self._modules(keys)).get(module)
        if layout == "new":
            key = f"{module}.o_proj.weight"
            if key not in shapes or not self.heads_available or shapes[key][1] % self.n_heads:
                return {}
            d, inner = shapes[key]
            dh = inner // self.n_heads
            sq = {"qk": (d, d), "ov": (d, d)}
            return {"q": (dh, d), "k": (dh, d), "v": (dh, d), "o": (d, dh)} | sq
        return super().head_shapes(keys, shapes, module)

    def _attention_weights(self, keys: Sequence[str], get: Getter, module: str) -> AttentionWeights:
        n, ks = self.n_heads, set(keys)
        layout = dict(self._modules(keys))[module]
        names = (
            {"q": "attention.query", "k": "attention.key", "v": "attention.value", "o": "output.dense"}
            if layout == "legacy"
            else {p: f"{p}_proj" for p in "qkvo"}
        )

        def w(p):
            return split_heads_rows(_f32(get(f"{module}.{names[p]}.weight")), n, f"{module}.{names[p]}")

        def b(p):
            k = f"{module}.{names[p]}.bias"
            return _f32(get(k)).reshape(n, -1) if k in ks else None

        bo = f"{module}.{names['o']}.bias"
        return AttentionWeights(
            module,
            n,
            W_Q=w("q"),
            W_K=w("k"),
            W_V=w("v"),
            W_O=split_heads_cols(_f32(get(f"{module}.{names['o']}.weight")), n, f"{module}.{names['o']}"),
            b_Q=b("q"),
            b_K=b("k"),
            b_V=b("v"),
            b_O=_f32(get(bo)) if bo in ks else None,
        )
