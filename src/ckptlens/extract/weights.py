"""Weight extraction: the selected weight matrices of a checkpoint (and the per-head pieces and
circuits its architecture adapter offers), read and written one matrix at a time — numpy only, no
torch, whatever the model's size."""

from __future__ import annotations

from pathlib import Path

from ..adapters import get_adapter
from ..sources.readers import open_checkpoint
from ..store.patterns import matches
from ..store.tensors import write_tensors


def extract_weights(checkpoint, patterns, out_path, adapter: str = "auto") -> list[str]:
    """The weight matrices whose names (as the architecture adapter names them) match
    ``patterns``, written to ``out_path``; returns their names."""
    with open_checkpoint(checkpoint) as ckpt:
        arch = get_adapter(adapter, ckpt.keys, ckpt.metadata, shapes=ckpt.shapes)
        matrices = arch.weight_matrices(ckpt.keys, ckpt.get, list(patterns), match=matches, shapes=ckpt.shapes)
        names = write_tensors(matrices, out_path, {"source": str(checkpoint), "adapter": arch.name})
    if not names:
        Path(out_path).unlink()
        raise ValueError(f"{checkpoint}: no weight matches the target patterns {list(patterns)}")
    return names
