"""Checkpoint-step schedules (torch-free: used while Snakemake parses the workflow)."""

from __future__ import annotations

from collections.abc import Iterable


def checkpoint_steps(total_steps: int, every: int | None = None, steps: Iterable[int] | None = None) -> list[int]:
    """Steps to save: an explicit list, or 0, every, 2·every, … and total_steps."""
    if steps is not None:
        out = sorted({int(s) for s in steps})
    else:
        out = sorted(set(range(0, total_steps + 1, every)) | {total_steps})
    if not out or out[0] < 0 or out[-1] > total_steps:
        raise ValueError(f"checkpoint steps must lie in [0, {total_steps}]")
    return out
