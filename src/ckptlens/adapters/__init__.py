"""Architecture adapters (see :mod:`ckptlens.adapters.base` for the canonical names).

    keys, get, meta = open_checkpoint(path)                 # ckptlens.sources.readers
    adapter = get_adapter("auto", keys, metadata=meta)       # or a name of ADAPTERS: "llama", "bloom", ...
    for name, w in adapter.weight_matrices(keys, get, ["*.attention.dense", "*.head*.ov"]):
        ...
    default_targets(names_from_keys(keys, meta))             # a run's targets when its config gives none

Only numpy is imported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

from .base import (
    EMBED,
    HEAD_PIECES,
    Adapter,
    AttentionWeights,
    TargetGroup,
    model_config,
    module_name,
    module_names_from_keys,
)
from .bert import BertAdapter
from .bloom import BloomAdapter
from .clip import CLIPAdapter
from .generic import GenericAdapter, no_adapter_note
from .gpt2 import GPT2Adapter
from .gpt_neox import GPTNeoXAdapter
from .hf_olmo import HFOlmoAdapter
from .llama import MODEL_TYPES as LLAMA_MODEL_TYPES
from .llama import LlamaAdapter
from .modernbert import ModernBertAdapter
from .open_clip import OpenCLIPAdapter
from .toy import ToyAdapter
from .vit import ViTAdapter

#: name -> adapter class, in detection order ("generic" last: it accepts anything); one file each
ADAPTERS: dict[str, type[Adapter]] = {
    a.name: a
    for a in (
        ToyAdapter,
        GPTNeoXAdapter,
        GPT2Adapter,
        BertAdapter,
        LlamaAdapter,
        BloomAdapter,
        ModernBertAdapter,
        HFOlmoAdapter,
        ViTAdapter,
        CLIPAdapter,
        OpenCLIPAdapter,
        GenericAdapter,
    )
}

#: Hugging Face ``model_type`` -> adapter name (a hint; the keys must still match)
MODEL_TYPES = {
    "gpt_neox": "gpt_neox",
    "gpt2": "gpt2",
    "bert": "bert",
    "roberta": "bert",
    "xlm-roberta": "bert",
    "camembert": "bert",
    "electra": "bert",
    "bloom": "bloom",
    "modernbert": "modernbert",
    "hf_olmo": "hf_olmo",
    "vit": "vit",
    "clip": "clip",
    "clip_vision_model": "clip",
    **{mt: "llama" for mt in LLAMA_MODEL_TYPES},
}


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    """Add an adapter class (tried before ``generic`` in auto-detection)."""
    if cls.name in ADAPTERS:
        raise ValueError(f"adapter {cls.name!r} is registered twice")
    generic = ADAPTERS.pop(GenericAdapter.name)
    ADAPTERS[cls.name] = cls
    ADAPTERS[GenericAdapter.name] = generic
    return cls


def adapter_names() -> list[str]:
    return list(ADAPTERS)


def get_adapter(
    name: str | None,
    keys: Sequence[str],
    metadata: Mapping | None = None,
    *,
    n_heads: int | None = None,
    shapes: Mapping[str, Sequence[int]] | None = None,
) -> Adapter:
    """The adapter ``name`` (``None``/``"auto"``: detected from the keys, helped by the metadata's
    ``ckptlens_arch`` or config ``model_type``), configured from ``metadata`` (safetensors
    metadata or config.json; gives the number of heads) or an explicit ``n_heads``.

    Raises ValueError for an unknown name (listing the adapters) or for keys that do not fit the
    named architecture."""
    keys = list(keys)
    meta = dict(metadata or {})
    if name in (None, "auto"):
        cls = _detect(keys, meta)
    else:
        if name not in ADAPTERS:
            raise ValueError(f"unknown adapter {name!r}; available: {', '.join(['auto', *ADAPTERS])}")
        cls = ADAPTERS[name]
        if not cls.detect(keys):
            raise ValueError(
                f"adapter {name!r} does not fit this checkpoint: none of its {len(keys)} tensor names "
                f"looks like a {name} model (first keys: {keys[:5]}); use 'auto' or 'generic'"
            )
    adapter = cls(meta, n_heads=n_heads, shapes=shapes)
    if cls is not GenericAdapter and adapter.n_heads is None and adapter.attention_modules(keys):
        from .base import warn_no_heads

        warn_no_heads(adapter)
    if cls is GenericAdapter and name in (None, "auto"):
        note = no_adapter_note(keys, model_config(meta), _unverified(keys, meta))
        if note:
            warnings.warn(note, stacklevel=2)
    return adapter


def _detect(keys: list[str], meta: dict) -> type[Adapter]:
    cfg = model_config(meta)
    hint = meta.get("ckptlens_arch") or MODEL_TYPES.get(str(cfg.get("model_type")))
    if isinstance(hint, str) and hint in ADAPTERS and ADAPTERS[hint].detect(keys):
        return ADAPTERS[hint]
    for cls in ADAPTERS.values():
        if cls.detect(keys) and cls.accepts(cfg):
            return cls
    return GenericAdapter  # pragma: no cover  (generic detects everything)


def _unverified(keys: list[str], meta: dict) -> str | None:
    """The adapter whose key layout fits but which is not verified on this config's model_type."""
    cfg = model_config(meta)
    for cls in ADAPTERS.values():
        if cls is not GenericAdapter and cls.detect(keys) and not cls.accepts(cfg):
            return cls.name
    return None


def detect_adapter_name(keys: Sequence[str], metadata: Mapping | None = None) -> str:
    return _detect(list(keys), dict(metadata or {})).name


def adapter_for_names(names: Mapping[str, Sequence[str]], metadata: Mapping | None = None) -> type[Adapter]:
    """The adapter class of a model known by its names (``names_from_keys``: its ``gradients`` are
    the owners of its ``.weight`` keys, enough to detect the architecture)."""
    return _detect([f"{o}.weight" for o in names.get("gradients", [])], dict(metadata or {}))


def target_groups(names: Mapping[str, Sequence[str]], metadata: Mapping | None = None) -> list[TargetGroup]:
    """What each target pattern selects in this model (:meth:`Adapter.target_groups`)."""
    return adapter_for_names(names, metadata).target_groups(names)


def default_targets(names: Mapping[str, Sequence[str]], metadata: Mapping | None = None) -> dict[str, list[str]]:
    """The targets of a run whose config gives none (:meth:`Adapter.default_targets`): per block the
    attention output projection and its per-head OV/QK circuits, the MLP output, the block output."""
    return adapter_for_names(names, metadata).default_targets(names)


__all__ = [
    "ADAPTERS",
    "EMBED",
    "HEAD_PIECES",
    "Adapter",
    "AttentionWeights",
    "BertAdapter",
    "BloomAdapter",
    "CLIPAdapter",
    "GPT2Adapter",
    "GPTNeoXAdapter",
    "GenericAdapter",
    "HFOlmoAdapter",
    "LlamaAdapter",
    "ModernBertAdapter",
    "OpenCLIPAdapter",
    "TargetGroup",
    "ToyAdapter",
    "ViTAdapter",
    "adapter_for_names",
    "adapter_names",
    "default_targets",
    "detect_adapter_name",
    "get_adapter",
    "model_config",
    "module_name",
    "module_names_from_keys",
    "register_adapter",
    "target_groups",
]
