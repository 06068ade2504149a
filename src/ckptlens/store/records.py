"""The format of *failure records*: what stands in for a checkpoint that could not be read.

A run over hundreds of checkpoints must not be lost to one truncated or unsafe file. The stage
that reads a source checkpoint writes a record instead of a checkpoint it cannot read, and every
later stage passes it on; the run's aggregation then applies the config key ``on_bad_checkpoint``:
``fail`` (the default) stops there with an error naming every failed step, its file and the
reason, ``skip`` lists the steps in ``missing_steps.csv`` and aggregates the others. A record is
never taken for a result:

* checkpoint or extraction record: a safetensors file holding **no tensor** whose metadata key
  :data:`ERROR_KEY` is the JSON ``{"step", "file", "reason"}`` (:mod:`ckptlens.store.tensors`
  refuses to read it as tensors);
* table record (a metric job's output for a failed step): a line :data:`TABLE_RECORD_PREFIX` +
  the JSON at the top of the job's CSV, before the tidy header and the other steps' rows (a plain
  ``pandas.read_csv`` finds no tidy column in a file that starts with one);
* digest record: the line ``failed: <file>: <reason>``, never equal to a weights digest.

Only the format lives here (pure functions of strings and dicts); writing and detecting record
files is :mod:`ckptlens.store.failures`.
"""

from __future__ import annotations

import json
from pathlib import Path

#: The values of the config key ``on_bad_checkpoint``; the default is the schema's.
POLICIES = ("fail", "skip")
ERROR_KEY = "ckptlens_error"
TABLE_RECORD_PREFIX = f"# {ERROR_KEY} "
DIGEST_RECORD_PREFIX = "failed:"
#: Columns of ``missing_steps.csv``.
MISSING_COLUMNS = ["step", "file", "reason"]


class CheckpointError(ValueError):
    """A checkpoint cannot be opened or read; the message names the file and the reason. This
    error, and only this one, becomes a record: a failure of our own code, of memory or of the
    network still fails the job, so that a transient fault is never written down as a permanent
    gap."""


class FailureRecordError(CheckpointError):
    """A failure record was read where a checkpoint or extraction was expected."""

    def __init__(self, path, record: dict):
        self.path, self.record = Path(path), record
        super().__init__(f"{path}: not a checkpoint but the failure record of {describe(record)}")


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"on_bad_checkpoint must be one of {POLICIES}, not {policy!r}")


def make_record(file, reason: str, step: int | None = None) -> dict:
    return {"step": None if step is None else int(step), "file": str(file), "reason": " ".join(str(reason).split())}


def describe(record: dict) -> str:
    """``step S (file: reason)``."""
    return f"step {record.get('step')} ({record.get('file')}: {record.get('reason')})"


def reason_of(exc: BaseException, file) -> str:
    """An error message without its leading ``"<file>: "`` (the record names the file separately)."""
    msg = " ".join(str(exc).split())
    prefix = f"{file}: "
    return msg[len(prefix) :] if msg.startswith(prefix) else msg


def record_metadata(record: dict) -> dict[str, str]:
    """The safetensors metadata of a checkpoint record."""
    return {ERROR_KEY: json.dumps(record, sort_keys=True)}


def record_from_metadata(metadata, n_tensors: int) -> dict | None:
    """The record held by a safetensors header (no tensor + :data:`ERROR_KEY`), else None."""
    if n_tensors or not metadata or ERROR_KEY not in metadata:
        return None
    try:
        rec = json.loads(metadata[ERROR_KEY])
    except (TypeError, ValueError):
        rec = None
    if not isinstance(rec, dict):
        rec = {"step": None, "file": "?", "reason": str(metadata[ERROR_KEY])}
    return rec


def table_record_line(record: dict) -> str:
    return TABLE_RECORD_PREFIX + json.dumps(record, sort_keys=True) + "\n"


def record_from_table_line(first_line: str) -> dict | None:
    if not first_line.startswith(TABLE_RECORD_PREFIX):
        return None
    return json.loads(first_line[len(TABLE_RECORD_PREFIX) :])


def digest_record(record: dict) -> str:
    """What the digest job writes for a failed checkpoint (never equal to a weights digest)."""
    return f"{DIGEST_RECORD_PREFIX} {record.get('file')}: {record.get('reason')}"


def is_digest_record(text: str) -> bool:
    return text.startswith(DIGEST_RECORD_PREFIX)


def describe_missing(missing) -> str:
    """One line per missing step: ``step S: file: reason``."""
    return "; ".join(f"step {r['step']}: {r['file']}: {r['reason']}" for r in missing)
