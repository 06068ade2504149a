"""Bring one source checkpoint into the results folder as a safetensors file.

Safetensors files are copied after their header is checked (the copy's header gains the metadata
``ckptlens_source``, the source path, so that a later job's error can name it); PyTorch state
dicts and Hugging Face folders are loaded safely (``weights_only``; pickles that need code are
refused) and converted, so that every later stage reads one lazy, memory-mappable format.
:func:`import_or_record` is the workflow job: a checkpoint that cannot be read becomes a failure
record (what the run then does with it is the ``on_bad_checkpoint`` policy, applied when the run's
table is aggregated).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..store.failures import write_checkpoint_record
from ..store.joblog import warn
from ..store.records import CheckpointError, make_record, reason_of
from ..store.tensors import copy_with_metadata, write_tensors
from .readers import open_checkpoint


def import_checkpoint(src, dst) -> None:
    src = Path(src)
    with open_checkpoint(src) as ckpt:  # raises CheckpointError naming the file if unreadable/unsafe
        if ckpt.format == "safetensors":
            copy_with_metadata(src, dst, {"ckptlens_source": str(src)})
            return
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (ckpt.metadata or {}).items()}
        meta["ckptlens_source"] = str(src)
        tensors = {k: np.ascontiguousarray(ckpt.get(k)) for k in ckpt.keys}
    write_tensors(tensors, dst, meta)


def import_or_record(src, dst, step: int | None = None) -> dict | None:
    """The import job: :func:`import_checkpoint`; a checkpoint that cannot be read (a
    :class:`~ckptlens.store.records.CheckpointError`) gives a failure record instead, so that the
    other checkpoints of its job go on. Returns the record, or None when the checkpoint was
    imported. Any other error (our code, memory, the disk) still fails the job."""
    try:
        import_checkpoint(src, dst)
        return None
    except CheckpointError as exc:
        record = make_record(src, reason_of(exc, src), step)
    warn(f"step {step}: bad checkpoint {record['file']}: {record['reason']} — recorded as a failed step")
    write_checkpoint_record(dst, record)
    return record
