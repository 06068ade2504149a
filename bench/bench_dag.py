"""Snakemake's own cost at the scale of the Pythia suite: the dry run of five Pythia models × the 154
published steps, ten metrics on weights, activations and gradients (nothing is downloaded: a dry
run only builds the DAG).

    .venv/bin/python bench/bench_dag.py [--checkout PATH]

Prints the number of jobs and the dry run's wall time (best of 3, the first run's too).
``--checkout`` measures another version of ckptlens (e.g. a clone of an older commit).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
MODELS = [
    "pythia-70m-deduped",
    "pythia-160m-deduped",
    "pythia-410m-deduped",
    "pythia-1.4b-deduped",
    "pythia-2.8b-deduped",
]
MODULES = [
    "gpt_neox.layers.*.attention.query_key_value",
    "gpt_neox.layers.*.attention.dense",
    "gpt_neox.layers.*.mlp.dense_4h_to_h",
]


def suite_config() -> dict:
    runs = {
        m: {
            "source": {"type": "huggingface", "model": f"EleutherAI/{m}", "steps": "pythia"},
            "targets": {"weights": MODULES, "activations": MODULES, "gradients": MODULES},
            "probe": {"tokens": "data/pythia_probe.npy", "batch_size": 8, "n_batches": 8, "seed": 0},
        }
        for m in MODELS
    }
    metrics = [
        "frobenius_norm",
        "spectral_norm",
        "stable_rank",
        "effective_rank",
        "update_norm_previous",
        "cka_to_final",
        "cka_to_previous",
        "activation_norm",
        "gradient_norm",
        "gradient_cosine",
    ]
    return {"runs": runs, "metrics": {m: {} for m in metrics}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkout", type=Path, default=REPO)
    args = ap.parse_args()
    checkout = args.checkout.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "p"
        files = subprocess.run(["git", "-C", str(checkout), "ls-files", "-z"], check=True, capture_output=True).stdout
        for rel in files.decode().split("\0"):
            src = checkout / rel
            if rel and src.is_file() and not src.is_symlink():
                (project / rel).parent.mkdir(parents=True, exist_ok=True)
                (project / rel).write_bytes(src.read_bytes())
            elif rel and src.is_symlink():
                (project / rel).parent.mkdir(parents=True, exist_ok=True)
                os.symlink(os.readlink(src), project / rel)
        (project / "suite.yaml").write_text(yaml.safe_dump(suite_config()))
        env = {**os.environ, "PYTHONPATH": str(project / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
        snakemake = str(Path(sys.executable).with_name("snakemake"))
        times, jobs = [], None
        for _ in range(3):
            t = time.perf_counter()
            proc = subprocess.run(
                [snakemake, "-n", "--configfile", "suite.yaml"], cwd=project, env=env, capture_output=True, text=True
            )
            times.append(time.perf_counter() - t)
            if proc.returncode:
                raise SystemExit(proc.stderr[-4000:])
            m = re.search(r"^total\s+(\d+)$", proc.stdout + proc.stderr, re.M)
            jobs = int(m.group(1)) if m else None
    print(f"Pythia suite dry run ({checkout}): {jobs} jobs; {min(times):.1f} s best of 3 (first {times[0]:.1f} s)")


if __name__ == "__main__":
    main()
