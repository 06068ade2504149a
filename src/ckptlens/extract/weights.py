"""Weights: the selected weight matrices of a checkpoint (and the per-head pieces and circuits its
architecture adapter offers), read from the checkpoint itself when a metric job asks for them —
numpy only, no torch, one matrix at a time, whatever the model's size. Nothing is copied: the
checkpoint (a user's safetensors read in place, or the safetensors a pickle was converted to) is
the metric job's input, and the matrices come back in float32 (a float16 or bfloat16 checkpoint
promoted once, as it is read)."""

from __future__ import annotations

from ..adapters import get_adapter
from ..adapters.base import WeightMatrices
from ..sources.readers import open_checkpoint
from ..store.patterns import matches


def open_weights(checkpoint, patterns, adapter: str = "auto") -> WeightMatrices:
    """The weight matrices of ``checkpoint`` whose names (as the architecture adapter names them)
    match ``patterns``, as a lazy mapping name -> float32 [out, in] that holds the checkpoint open
    until closed (``with open_weights(...) as w:``). A ValueError naming the checkpoint when no
    name matches."""
    ckpt = open_checkpoint(checkpoint)
    try:
        arch = get_adapter(adapter, ckpt.keys, ckpt.metadata, shapes=ckpt.shapes)
        view = arch.weight_view(ckpt.keys, ckpt.get, list(patterns), match=matches, shapes=ckpt.shapes)
    except BaseException:
        ckpt.close()
        raise
    view.keep_open(ckpt)
    if not view:
        view.close()
        raise ValueError(f"{checkpoint}: no weight matches the target patterns {list(patterns)}")
    return view
