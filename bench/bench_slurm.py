"""sbatch submissions of the demo on the one-node test cluster, with and without bundling.

    .venv/bin/python bench/bench_slurm.py        # as root; starts and stops .ci/slurm-cluster.sh

Runs the embedded demo (config.yaml) twice through `--executor slurm` in fresh project copies:
with the SLURM profile as shipped (per-checkpoint numpy jobs bundled), and with a copy of the
profile without the grouping keys. Prints jobs, submissions and wall time of each.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from workflow_helpers import SNAKEMAKE, copy_project  # noqa: E402


def run(project: Path, profile: Path) -> tuple[int, int, float]:
    t = time.perf_counter()
    proc = subprocess.run(
        ["timeout", "-s", "INT", "1800", SNAKEMAKE, "--workflow-profile", str(profile), "--cores", "2"],
        cwd=project,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(project / "src"), "PATH": "/usr/bin:/bin"},
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise SystemExit(out[-4000:])
    jobs = len([m for m in re.findall(r"^\s*rule (\w+):", out, re.M) if m != "all"])
    submissions = len(re.findall(r"has been submitted with SLURM jobid", out))
    return jobs, submissions, time.perf_counter() - t


def main() -> None:
    cluster = REPO / ".ci" / "slurm-cluster.sh"
    subprocess.run([str(cluster), "start"], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            plain = Path(tmp) / "profile-plain"
            plain.mkdir()
            cfg = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
            for key in ("groups", "group-components"):
                cfg.pop(key, None)
            (plain / "config.yaml").write_text(yaml.safe_dump(cfg))  # a profile folder holds config.yaml
            rows = []
            for name, profile in (
                ("bundled (profile as shipped)", REPO / "workflow/profiles/slurm"),
                ("one sbatch per job", plain),
            ):
                project = copy_project(Path(tmp) / name.split()[0])
                rows.append((name, *run(project, profile)))
        print(f"{'demo on the one-node test cluster':<32} {'jobs':>5} {'sbatch':>7} {'wall':>8}")
        for name, jobs, subs, wall in rows:
            print(f"{name:<32} {jobs:>5} {subs:>7} {wall:>7.0f}s")
    finally:
        subprocess.run([str(cluster), "stop"], check=False)


if __name__ == "__main__":
    main()
