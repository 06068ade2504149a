"""The names target patterns select from, known from a state dict's keys (through the
architecture adapters): what ``ckptlens layers``/``init`` print and what the config is checked
against while the workflow is parsed. Apart from the source registry, so that a job importing
the registry (a training job) does not depend on the adapters."""

from __future__ import annotations

from collections.abc import Mapping


def names_from_keys(keys, metadata: Mapping | None = None, shapes: Mapping | None = None) -> dict[str, list[str]]:
    """The names target patterns select from, known from a state dict's keys: weights as the
    architecture adapter names them (per-head pieces included), modules for activations (every
    dotted prefix), weight owners for gradients, and the attention modules whose probabilities
    can be captured."""
    from ..adapters import get_adapter, module_names_from_keys

    keys = list(keys)
    arch = get_adapter("auto", keys, metadata or {}, shapes=shapes)
    owners = [k[: -len(".weight")] for k in keys if k.endswith(".weight")]
    return {
        "weights": arch.layer_names(keys, shapes),
        "activations": module_names_from_keys(keys),
        "gradients": owners,
        "attentions": arch.attention_modules(keys),
    }
