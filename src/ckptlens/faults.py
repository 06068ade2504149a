"""Bad checkpoints in a long run: the ``on_bad_checkpoint`` policy and *failure records*.

A run over hundreds of checkpoints must not be lost to one truncated or unsafe file. The config key
``on_bad_checkpoint`` says what happens when a checkpoint cannot be imported (an empty, truncated or
corrupt file, a wrong format, a pickle that needs code — see :mod:`ckptlens.checkpoint_io`):

* ``fail`` (default): its import job fails with a message naming the source file and the reason.
  With ``snakemake --keep-going`` every other checkpoint is still imported, extracted and measured;
  only the run's aggregation (and what follows it) cannot run, and Snakemake lists it.
* ``skip``: the import job writes a **failure record** instead of the checkpoint and succeeds. The
  record travels down the pipeline: extraction jobs pass it on, metric jobs write a *table record*
  for the step, and comparisons with the failed step (``final``/``previous``/``initial`` references)
  are NaN with a warning. Aggregation leaves the step out of the tidy table, lists it in
  ``results/{run}/missing_steps.csv`` (``step, file, reason``), and the analysis notes name the gap.

A record can never be taken for a result:

* checkpoint/extraction record: a safetensors file holding **no tensor** and the metadata
  ``ckptlens_error`` = JSON ``{"step", "file", "reason"}``. :func:`ckptlens.checkpoint_io.open_checkpoint`
  and :class:`ckptlens.io.TensorFile` refuse it with the recorded reason;
* table record (metric job): a CSV whose first line is ``# ckptlens_error {json}`` (then the tidy
  header, no rows): a plain ``pandas.read_csv`` finds none of the tidy columns, and
  :func:`ckptlens.results.collect_family_tables` reports the step as missing — or, under ``fail``,
  refuses to aggregate.

Only the import of a checkpoint creates records, and only for a :class:`CheckpointError` (the file
itself is unusable): a failure of our own code, memory or the network still fails the job, so that
a transient fault is never written down as a permanent gap.

Switching the policy reruns only the aggregation (it is that job's parameter, not the import
jobs'): records written under ``skip`` stay, and aggregation under ``fail`` then refuses them,
listing the steps. A fixed source file (newer than its record) is imported again automatically;
otherwise delete ``results/{run}/checkpoints/step{S}.safetensors`` to retry a step.
"""

from __future__ import annotations

import contextlib
import json
import struct
import sys
import warnings
from pathlib import Path

POLICIES = ("fail", "skip")
DEFAULT_POLICY = "fail"
ERROR_KEY = "ckptlens_error"
TABLE_RECORD_PREFIX = f"# {ERROR_KEY} "
MISSING_COLUMNS = ["step", "file", "reason"]


class FailureRecordError(ValueError):
    """A failure record was read where a checkpoint or extraction was expected."""

    def __init__(self, path, record: dict):
        self.path, self.record = Path(path), record
        super().__init__(
            f"{path}: not a checkpoint but the failure record of step {record.get('step')} "
            f"({record.get('file')}: {record.get('reason')})"
        )


def _warn(msg: str) -> None:
    warnings.warn(msg, RuntimeWarning, stacklevel=3)
    print(f"WARNING: {msg}", file=sys.stderr)


def make_record(file, reason: str, step: int | None = None) -> dict:
    return {"step": None if step is None else int(step), "file": str(file), "reason": " ".join(str(reason).split())}


def reason_of(exc: BaseException, file) -> str:
    """An error message without its leading ``"<file>: "`` (the record names the file separately)."""
    msg = " ".join(str(exc).split())
    prefix = f"{file}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def record_from_metadata(metadata, n_tensors: int) -> dict | None:
    """The record held by a safetensors header (no tensor + ``ckptlens_error``), else None."""
    if n_tensors or not metadata or ERROR_KEY not in metadata:
        return None
    try:
        rec = json.loads(metadata[ERROR_KEY])
    except (TypeError, ValueError):
        rec = None
    if not isinstance(rec, dict):
        rec = {"step": None, "file": "?", "reason": str(metadata[ERROR_KEY])}
    return rec


def write_checkpoint_record(path, record: dict) -> None:
    """A safetensors file with no tensor whose metadata carries ``record`` (atomically)."""
    from .io import save_tensors

    save_tensors({}, path, {ERROR_KEY: json.dumps(record, sort_keys=True)})


def _header(path, max_bytes: int) -> dict | None:
    """The JSON header of a safetensors file (None if it is not one, or larger than ``max_bytes``)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > max_bytes:
                return None
            header = json.loads(fh.read(n))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def checkpoint_record(path) -> dict | None:
    """The failure record stored in the safetensors file ``path``, or None for anything else
    (a real checkpoint, a file that is not safetensors at all: the normal readers report those).
    Reads the header only."""
    header = _header(path, 1 << 20)  # a record's header is tiny; a real checkpoint's may be large
    if header is None:
        return None
    tensors = [k for k in header if k != "__metadata__"]
    return record_from_metadata(header.get("__metadata__"), len(tensors))


@contextlib.contextmanager
def naming_source(checkpoint):
    """Around a job that reads ``checkpoint`` (a results copy): an error gets a note naming the
    copy and the source file it was imported from (``ckptlens_source`` in its metadata)."""
    try:
        yield
    except Exception as exc:
        header = _header(checkpoint, 256 << 20) or {}
        source = (header.get("__metadata__") or {}).get("ckptlens_source")
        note = f"while reading the checkpoint {checkpoint}" + (f", imported from {source}" if source else "")
        if hasattr(exc, "add_note"):  # Python >= 3.11: printed with the traceback
            exc.add_note(note)
        else:
            print(note, file=sys.stderr)
        raise


def write_table_record(path, record: dict, columns=None) -> None:
    """A metric job's output for a failed step: the record line, then the tidy header, no rows."""
    from .io import TIDY_COLUMNS, atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(TABLE_RECORD_PREFIX + json.dumps(record, sort_keys=True) + "\n" + ",".join(columns or TIDY_COLUMNS) + "\n")


def table_record(path) -> dict | None:
    with open(path) as fh:
        first = fh.readline()
    if not first.startswith(TABLE_RECORD_PREFIX):
        return None
    return json.loads(first[len(TABLE_RECORD_PREFIX):])


# --------------------------------------------------------------------------------------------- jobs
def import_or_record(src, dst, policy: str = DEFAULT_POLICY, step: int | None = None) -> dict | None:
    """The import job: :func:`ckptlens.sources.importer.import_checkpoint`; under ``skip`` a
    checkpoint that cannot be read (a :class:`CheckpointError`) gives a failure record instead.
    Returns the record, or None when the checkpoint was imported."""
    from .checkpoint_io import CheckpointError
    from .sources.importer import import_checkpoint

    check_policy(policy)
    try:
        import_checkpoint(src, dst)
        return None
    except CheckpointError as exc:
        if policy != "skip":
            raise
        record = make_record(src, reason_of(exc, src), step)
    _warn(f"step {step}: bad checkpoint {record['file']}: {record['reason']} — recorded as a gap (on_bad_checkpoint: skip)")
    write_checkpoint_record(dst, record)
    return record


def fetch_or_record(model: str, revision: str, dst, download_dir, cache_dir=None, policy: str = DEFAULT_POLICY,
                    step: int | None = None) -> dict | None:
    """The Hugging Face job: :func:`ckptlens.sources.huggingface.fetch_revision` (download deleted
    afterwards). Under ``skip`` a downloaded checkpoint that cannot be read gives a failure record
    (file ``model@revision``); a failed *download* still fails the job (and is retried): a network
    fault is not a bad checkpoint."""
    from .checkpoint_io import CheckpointError
    from .sources.huggingface import RevisionError, cleanup, fetch_revision

    check_policy(policy)
    try:
        fetch_revision(model, revision, dst, download_dir=download_dir, cache_dir=cache_dir, delete_after=True)
        return None
    except RevisionError as exc:
        if policy != "skip" or not isinstance(exc.__cause__, CheckpointError):
            raise
        cleanup(download_dir)
        record = make_record(f"{model}@{revision}", str(exc.__cause__), step)
    _warn(f"step {step}: bad checkpoint {record['file']}: {record['reason']} — recorded as a gap (on_bad_checkpoint: skip)")
    write_checkpoint_record(dst, record)
    return record


DIGEST_RECORD_PREFIX = "failed:"


def digest_of_record(record: dict) -> str:
    """What the digest job writes for a failed checkpoint (never equal to a weights digest)."""
    return f"{DIGEST_RECORD_PREFIX} {record.get('file')}: {record.get('reason')}"


def is_record_digest(text: str) -> bool:
    return text.startswith(DIGEST_RECORD_PREFIX)


def pass_on(inputs, outputs) -> dict | None:
    """An extraction/digest job whose input checkpoint is a failure record writes the same record
    to each of its outputs (safetensors outputs as records, others as table records) and returns
    it; None when every input is a real file (the job then runs normally)."""
    for p in inputs:
        rec = checkpoint_record(p)
        if rec is not None:
            for out in outputs:
                if str(out).endswith(".safetensors"):
                    write_checkpoint_record(out, rec)
                else:
                    write_table_record(out, rec)
            print(f"input {p} is the failure record of step {rec.get('step')} ({rec.get('file')}: {rec.get('reason')}); passed on")
            return rec
    return None


def open_metric_inputs(paths, group_gradients: bool = False):
    """A metric job's inputs ``{"current": path, <reference>: path}`` opened lazily:
    ``(current, references, record)``. ``record`` is the failure record when the current step
    failed (then nothing else is opened); a reference that is a record becomes a
    :class:`ckptlens.metrics.Unavailable`, so that metrics comparing with it are NaN with a warning."""
    from .io import TensorFile
    from .metrics import Unavailable

    paths = dict(paths)
    rec = checkpoint_record(paths["current"])
    if rec is not None:
        return None, {}, rec
    current = TensorFile(paths.pop("current"), group_gradients=group_gradients)
    refs = {}
    for name, p in paths.items():
        r = checkpoint_record(p)
        refs[name] = Unavailable(f"step {r.get('step')} failed: {r.get('file')}: {r.get('reason')}") if r else TensorFile(
            p, group_gradients=group_gradients)
    return current, refs, None


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"on_bad_checkpoint must be one of {POLICIES}, not {policy!r}")


class MissingStepsError(ValueError):
    """Aggregation under ``on_bad_checkpoint: fail`` found failed steps (or every step failed)."""


def describe_missing(missing) -> str:
    """One line per missing step: ``step S: file: reason``."""
    return "; ".join(f"step {r['step']}: {r['file']}: {r['reason']}" for r in missing)
