"""The fault figures of the README: how many bad inputs, interruption points, degenerate inputs and
config errors tests/workflow/test_faults.py provokes for real (and the library-level cases of the
stage tests that write fault rows: every test file importing tests.helpers.figure), and how many
random examples the property tests of tests/test_properties.py try — each row counted only if its
test passed.

    .venv/bin/python bench/bench_faults.py [--examples 200]

Runs these test files with pytest (CKPTLENS_FAULT_REPORT collects one row per checked case) and
prints a markdown table.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import OrderedDict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the tests that write fault rows: all of tests/workflow/test_faults.py, and each test of a stage's
#: test file that calls tests.helpers.figure (the library-level cases)
FAULT_TESTS = ["tests/workflow/test_faults.py"] + [
    f"{path.relative_to(REPO)}::{node.name}"
    for path in sorted((REPO / "tests").rglob("test_*.py"))
    if "tests.helpers import" in path.read_text() and path.parent.name != "workflow"
    for node in ast.parse(path.read_text()).body
    if isinstance(node, ast.FunctionDef)
    and node.name.startswith("test_")
    and any(isinstance(c, ast.Call) and getattr(c.func, "id", None) == "figure" for c in ast.walk(node))
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=200, help="hypothesis examples per property (default 200)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report, junit = Path(tmp) / "faults.jsonl", Path(tmp) / "junit.xml"
        env = {**os.environ, "CKPTLENS_FAULT_REPORT": str(report), "CKPTLENS_PROPERTY_EXAMPLES": str(args.examples)}
        started = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={junit}",
                *FAULT_TESTS,
                "tests/test_properties.py",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
        testcases = list(ET.parse(junit).getroot().iter("testcase")) if junit.exists() else []
    passed = [
        c for c in testcases if c.find("failure") is None and c.find("error") is None and c.find("skipped") is None
    ]
    properties = [c for c in passed if c.get("classname", "").endswith("test_properties")]

    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for r in rows:
        groups.setdefault(r["category"], []).append(r)
    print("| what is provoked | cases | outcome, checked for each |")
    print("|---|---|---|")
    for category, items in groups.items():
        outcomes = sorted({r["outcome"] for r in items})
        print(f"| {category} | {len(items)} | {'; '.join(outcomes)} |")
    print(
        f"| property tests (hypothesis), random shapes and values | {len(properties)} properties × up to "
        f"{args.examples} examples | finite where defined, NaN only with a warning; CKA symmetric and invariant; "
        f"rank metrics scale-invariant; analysis never crashes |"
    )
    print()
    print(
        f"pytest: {'all passed' if proc.returncode == 0 else 'FAILURES'} ({len(passed)} of {len(testcases)} tests passed, {wall:.0f} s)"
    )
    if proc.returncode != 0:
        print(proc.stdout[-4000:])
    print("cases by name:")
    for category, items in groups.items():
        print(f"  {category}: " + "; ".join(r["case"] for r in items))
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
