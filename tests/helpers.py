"""Helpers shared across stages: a tiny checkpoint file, and the rows of the fault figures
(bench/bench_faults.py collects them through CKPTLENS_FAULT_REPORT)."""

from __future__ import annotations

import json
import os

import numpy as np


def figure(category: str, case: str, outcome: str) -> None:
    """One row of the fault figures (written only once the case's checks have passed)."""
    path = os.environ.get("CKPTLENS_FAULT_REPORT")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"category": category, "case": case, "outcome": outcome}) + "\n")


# =============================================================================================
# library level (fast)
# =============================================================================================
def _tiny_checkpoint(path, value=1.0):
    from safetensors.numpy import save_file

    save_file({"a.weight": np.full((3, 2), value, np.float32)}, str(path))
    return path
