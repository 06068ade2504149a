"""Bring one source checkpoint into the results folder as a safetensors file.

Safetensors files are copied after their header is checked; PyTorch state dicts and Hugging Face
folders are loaded safely (``weights_only``; pickles that need code are refused) and converted, so
that every later stage reads one lazy, memory-mappable format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from ..checkpoint_io import open_checkpoint
from ..io import atomic_path, save_tensors


def import_checkpoint(src, dst) -> None:
    src = Path(src)
    with open_checkpoint(src) as ckpt:  # raises CheckpointError naming the file if unreadable/unsafe
        if ckpt.format == "safetensors":
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            return
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (ckpt.metadata or {}).items()}
        meta["ckptlens_source"] = str(src)
        tensors = {k: np.ascontiguousarray(ckpt.get(k)) for k in ckpt.keys}
    save_tensors(tensors, dst, meta)
