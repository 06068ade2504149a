"""Atomic writes: every output is written under a temporary name next to it and renamed when
complete, so that an interrupted job never leaves something that looks like a finished result."""

from __future__ import annotations

import contextlib
import glob
import os
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only if the block succeeds.

    A job killed before the rename (SIGKILL, a preempted node) leaves only ``.<name>.<pid>.tmp``,
    never a file under the final name; the next writer of ``path`` deletes such leftovers of dead
    processes first (a checkpoint-sized leftover per preemption would fill the disk otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = scratch_path(path, "tmp")
    try:
        yield tmp
        _test_pause(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def scratch_path(path, kind: str) -> Path:
    """``.<name>.<pid>.<kind>`` next to ``path``: a temporary that :func:`remove_stale_temporaries`
    recognises (kind ``tmp`` or ``data``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{kind}")


def remove_stale_temporaries(path) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp``/``.data`` files next to ``path`` left by processes that no
    longer run (Snakemake lets one job at a time write an output, so a live pid is left alone only
    out of caution). Returns what was deleted."""
    path = Path(path)
    removed = []
    for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
        pid = p.name[len(path.name) + 2 :].rpartition(".")
        if pid[2] not in ("tmp", "data") or not pid[0].isdigit() or int(pid[0]) == os.getpid():
            continue
        try:
            os.kill(int(pid[0]), 0)
            continue  # that process still runs
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
            removed.append(p)
    return removed


def write_text(path, text: str) -> Path:
    """``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def _test_pause(path: Path) -> None:
    """TEST-ONLY hook (tests/workflow/test_faults.py): when ``CKPTLENS_TEST_PAUSE_AT`` is a substring of
    ``path``, the writer stops right before the rename — its complete-looking temporary file on
    disk — touches the file ``CKPTLENS_TEST_PAUSE_SIGNAL`` and sleeps, so that the test can SIGKILL
    the run at that exact point. Unset (always, outside those tests), it does nothing."""
    at = os.environ.get("CKPTLENS_TEST_PAUSE_AT")
    if not at or at not in str(path):
        return
    signal = os.environ.get("CKPTLENS_TEST_PAUSE_SIGNAL")
    if signal:
        Path(signal).write_text(str(path))
    time.sleep(600)
