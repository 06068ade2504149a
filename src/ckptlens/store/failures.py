"""Failure records as files (their format: :mod:`ckptlens.store.records`): write one, tell one from
a result by its header alone, and pass one on from a job's input to its outputs."""

from __future__ import annotations

import contextlib
import sys

from .records import describe, record_from_metadata, record_metadata
from .tensors import read_header, write_tensors
from .tidy import write_table_record

#: a record's header is tiny; a real checkpoint's may be large (it is not read past this)
_RECORD_HEADER_BYTES = 1 << 20


def write_checkpoint_record(path, record: dict) -> None:
    """A safetensors file with no tensor whose metadata carries ``record`` (atomically)."""
    write_tensors({}, path, record_metadata(record))


def checkpoint_record(path) -> dict | None:
    """The failure record stored in the safetensors file ``path``, or None for anything else
    (a real checkpoint, a file that is not safetensors at all: the readers report those)."""
    header = read_header(path, _RECORD_HEADER_BYTES)
    if header is None:
        return None
    tensors = [k for k in header if k != "__metadata__"]
    return record_from_metadata(header.get("__metadata__"), len(tensors))


def pass_on(inputs, outputs) -> dict | None:
    """A job whose input checkpoint is a failure record writes the same record to each of its
    outputs (safetensors outputs as records, others as table records) and returns it; None when
    every input is a real file (the job then runs normally)."""
    for p in inputs:
        rec = checkpoint_record(p)
        if rec is not None:
            for out in outputs:
                if str(out).endswith(".safetensors"):
                    write_checkpoint_record(out, rec)
                else:
                    write_table_record(out, rec)
            print(f"input {p} is the failure record of {describe(rec)}; passed on")
            return rec
    return None


@contextlib.contextmanager
def naming_source(checkpoint):
    """Around a job that reads ``checkpoint`` (a results copy): an error gets a note naming the
    copy and the source file it was imported from (``ckptlens_source`` in its metadata)."""
    try:
        yield
    except Exception as exc:
        header = read_header(checkpoint, 256 << 20) or {}
        source = (header.get("__metadata__") or {}).get("ckptlens_source")
        note = f"while reading the checkpoint {checkpoint}" + (f", imported from {source}" if source else "")
        if hasattr(exc, "add_note"):  # Python >= 3.11: printed with the traceback
            exc.add_note(note)
        else:
            print(note, file=sys.stderr)
        raise
