"""Weight extraction: the selected weight matrices of a checkpoint (and the per-head pieces and
circuits its architecture adapter offers), read and written one matrix at a time — numpy only, no
torch, whatever the model's size.

A matrix is written in the checkpoint's dtype where that holds it exactly: the adapter yields
float32, and a float16 checkpoint's matrices (and the per-head slices of them) go back to float16,
half the bytes, the same values once a metric job reads them as float32
(:func:`ckptlens.metrics.inputs.open_metric_inputs`). Products (the ``qk``/``ov`` circuits) and
bfloat16 checkpoints (numpy has no bfloat16) stay float32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
        if any(d in _HALF for d in set(ckpt.dtypes.values())):
            matrices = ((name, _compact(w)) for name, w in matrices)
        names = write_tensors(matrices, out_path, {"source": str(checkpoint), "adapter": arch.name})
    if not names:
        Path(out_path).unlink()
        raise ValueError(f"{checkpoint}: no weight matches the target patterns {list(patterns)}")
    return names


#: a checkpoint's dtype names for float16 (safetensors' and torch's)
_HALF = ("F16", "float16")


def _compact(w: np.ndarray) -> np.ndarray:
    """``w`` as float16 where that is exact (every value of a float16 checkpoint's matrix), else as is."""
    if w.dtype != np.float32:
        return w
    half = w.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), w) else w
