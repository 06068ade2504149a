"""Atomic writes (ckptlens.store.atomic): an interrupted write leaves nothing under the final name."""

from __future__ import annotations

import os
import subprocess

import pytest

from ckptlens.store.atomic import atomic_path, remove_stale_temporaries


def test_interrupted_write_leaves_nothing_under_the_final_name(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    # leftovers of a SIGKILLed writer (dead pid) are removed by the next writer of the same file;
    # a live process's temporary and unrelated dot-files are left alone
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [tmp_path / f".out.csv.{dead.pid}.tmp", tmp_path / f".out.csv.{dead.pid}.data"]
    live = tmp_path / f".out.csv.{os.getppid()}.tmp"
    other = [tmp_path / ".out.csv.notes", tmp_path / ".other.csv.123.tmp", tmp_path / "keep.txt"]
    for p in stale + [live] + other:
        p.write_text("x")
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert not any(p.exists() for p in stale) and live.exists() and all(p.exists() for p in other)
    assert remove_stale_temporaries(target) == []
