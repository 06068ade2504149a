"""Bring one source checkpoint into the results folder: read in place, or converted.

A checkpoint that is already a safe, lazily readable file — a safetensors file, or a
``save_pretrained`` folder whose weights (or shards) are safetensors — is **not copied**: the
results folder gets a *checkpoint reference* (:func:`ckptlens.store.tensors.write_reference`, a few
hundred bytes naming the checkpoint and the size and modification time of its files), and every
later stage reads the user's files through it (:func:`ckptlens.sources.readers.open_checkpoint`).
PyTorch state dicts (``.pt``/``.bin``, folders of them) are loaded safely (``weights_only``; pickles
that need code are refused) and converted to safetensors, so that no later stage unpickles
anything. :func:`import_or_record` is the workflow job: a checkpoint that cannot be read becomes a
failure record (what the run then does with it is the ``on_bad_checkpoint`` policy, applied when
the run's table is aggregated).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..store.failures import write_checkpoint_record
from ..store.joblog import warn
from ..store.records import CheckpointError, make_record, reason_of
from ..store.tensors import copy_with_metadata, write_reference, write_tensors
from .readers import HF_INDEX_FILES, SAFETENSORS_SUFFIXES, open_checkpoint, weight_files


def readable_in_place(path) -> list[Path] | None:
    """The files a checkpoint is read from when its weights are all safetensors (a file, or a
    save_pretrained folder's weight file or shards, with its shard index and ``config.json``): such
    a checkpoint is read where it is. None where it holds a pickle (converted, for safety). Nothing
    is opened but a shard index."""
    path = Path(path)
    if not path.is_dir():
        return [path] if path.suffix.lower() in SAFETENSORS_SUFFIXES else None
    files = weight_files(path)
    weights = [f for f in files if f.name not in HF_INDEX_FILES]
    if not weights or any(f.suffix.lower() not in SAFETENSORS_SUFFIXES for f in weights):
        return None
    config_json = path / "config.json"
    return files + ([config_json] if config_json.is_file() else [])


def import_checkpoint(src, dst) -> None:
    """A safetensors copy of the checkpoint ``src`` at ``dst``: a safetensors file copied after its
    header is checked (the copy's metadata gains ``ckptlens_source``, the source path, so that a
    later job's error can name it), anything else converted one tensor at a time. For a download
    that is deleted next (:mod:`ckptlens.sources.hub`); a local checkpoint that is readable in place
    gets a reference instead (:func:`import_or_reference`)."""
    src = Path(src)
    with open_checkpoint(src) as ckpt:  # raises CheckpointError naming the file if unreadable/unsafe
        if ckpt.format == "safetensors":
            copy_with_metadata(src, dst, {"ckptlens_source": str(src)})
            return
        meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (ckpt.metadata or {}).items()}
        meta["ckptlens_source"] = str(src)
        tensors = ((k, np.ascontiguousarray(ckpt.get(k))) for k in ckpt.keys)  # one tensor at a time
        write_tensors(tensors, dst, meta)


def import_or_reference(src, dst) -> str:
    """``dst`` for the local checkpoint ``src``: a reference where it is readable in place
    (:func:`readable_in_place`; opened first, so that an unreadable one raises), else
    :func:`import_checkpoint`'s conversion; returns ``"reference"`` or ``"converted"``."""
    in_place = readable_in_place(src)
    if in_place is None:
        import_checkpoint(src, dst)
        return "converted"
    with open_checkpoint(src):  # raises CheckpointError naming the file if unreadable
        write_reference(dst, src, in_place)
    return "reference"


def import_or_record(src, dst, step: int | None = None, in_place: bool = False) -> dict | None:
    """The import job: :func:`import_checkpoint` (with ``in_place``, :func:`import_or_reference`:
    a local checkpoint readable where it is gets a reference, not a copy); a checkpoint that cannot be read (a
    :class:`~ckptlens.store.records.CheckpointError`) gives a failure record instead, so that the
    other checkpoints of its job go on. Returns the record, or None when the checkpoint was
    imported. Any other error (our code, memory, the disk) still fails the job."""
    try:
        if in_place:
            import_or_reference(src, dst)
        else:
            import_checkpoint(src, dst)
        return None
    except CheckpointError as exc:
        record = make_record(src, reason_of(exc, src), step)
    warn(f"step {step}: bad checkpoint {record['file']}: {record['reason']} — recorded as a failed step")
    write_checkpoint_record(dst, record)
    return record
