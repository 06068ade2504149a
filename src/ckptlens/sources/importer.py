"""Bring one source checkpoint into the results folder as a safetensors file.

Safetensors files are copied after their header is checked (the copy's header gains the metadata
``ckptlens_source``, the source path, so that a later job's error can name it); PyTorch state
dicts and Hugging Face folders are loaded safely (``weights_only``; pickles that need code are
refused) and converted, so that every later stage reads one lazy, memory-mappable format.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np

from ..checkpoint_io import open_checkpoint
from ..io import atomic_path, save_tensors


def import_checkpoint(src, dst) -> None:
    src = Path(src)
    with open_checkpoint(src) as ckpt:  # raises CheckpointError naming the file if unreadable/unsafe
        if ckpt.format == "safetensors":
            _copy_safetensors(src, dst, {"ckptlens_source": str(src)})
            return
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (ckpt.metadata or {}).items()}
        meta["ckptlens_source"] = str(src)
        tensors = {k: np.ascontiguousarray(ckpt.get(k)) for k in ckpt.keys}
    save_tensors(tensors, dst, meta)


def _copy_safetensors(src: Path, dst, extra_metadata: dict) -> None:
    """Copy a (validated) safetensors file with ``extra_metadata`` added to its header; the tensor
    bytes are streamed unchanged (their offsets are relative to the end of the header)."""
    from safetensors import safe_open

    with open(src, "rb") as fin:
        (n,) = struct.unpack("<Q", fin.read(8))
        header = json.loads(fin.read(n))
        header["__metadata__"] = {**(header.get("__metadata__") or {}), **extra_metadata}
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        with atomic_path(dst) as tmp:
            with open(tmp, "wb") as fout:
                fout.write(struct.pack("<Q", len(raw)))
                fout.write(raw)
                shutil.copyfileobj(fin, fout, 16 << 20)
            safe_open(str(tmp), framework="numpy")  # the copy is complete and consistent
