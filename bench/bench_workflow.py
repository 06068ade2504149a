"""Workflow speed on this machine: cold demo (training included), no-op rerun, and where the time goes.

    .venv/bin/python bench/bench_workflow.py [--cores 2]

Runs the embedded demo (config.yaml) in a fresh copy of the project, so results/ is untouched.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_helpers import copy_project, snakemake  # noqa: E402


def timed(project, *args) -> float:
    t = time.perf_counter()
    snakemake(project, *args)
    return time.perf_counter() - t


def seconds_in_logs(project: Path, pattern: str) -> float:
    total = 0.0
    for log in (project / "results").rglob("*.log"):
        for m in re.finditer(pattern, log.read_text(errors="ignore")):
            total += float(m.group(1))
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = copy_project(Path(tmp) / "p")
        cold = timed(project, "--cores", args.cores)
        noop = min(timed(project, "--cores", args.cores) for _ in range(3))
        n_jobs = len(list((project / "results").rglob("logs/**/*.log")))
        metric_s = seconds_in_logs(project, r"metric computation: ([0-9.]+) s")
        budget = cold * int(args.cores)
        rows = [
            ("cold demo wall time (training included)", f"{cold:.1f} s"),
            ("no-op rerun wall time (best of 3)", f"{noop:.2f} s"),
            ("jobs", str(n_jobs)),
            ("time inside metric computation (sum over jobs)", f"{metric_s:.1f} s"),
            (f"share of core-time outside metric computation ({args.cores} cores)", f"{1 - metric_s / budget:.1%}"),
        ]
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
