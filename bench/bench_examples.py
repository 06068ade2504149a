"""Cold wall time of each example study on this machine, as `./run.sh example NAME` runs it.

    .venv/bin/python bench/bench_examples.py [--cores 2] [NAME ...]

Each example runs in a fresh copy of the project (results/ and data/ of the checkout untouched).
The MiniLM fine-tuning (examples/minilm/finetune.py, shared by `linearity` and `minilm`), the ViT
fine-tuning (examples/vit_digits/finetune.py) and the Llama training (examples/llama/train.py) are
timed once on their own, as `./run.sh example` runs them first; the pythia_table example reads
../shared beside the checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from workflow_helpers import REPO, copy_project, snakemake  # noqa: E402

EXAMPLES = ("induction", "two_tasks", "pythia_table", "linearity", "minilm", "vit_digits", "llama_gqa")
FINETUNE = ["--seeds", "0", "1", "2", "--head-seed", "0", "--steps", "60", "--save-every", "10"]
#: the data an example reads under data/, and how `./run.sh example` makes it (its arguments there)
DATA = {
    "minilm": ("examples/minilm/finetune.py", FINETUNE, "MiniLM fine-tuning, 3 seeds × 60 steps"),
    "vit_digits": ("examples/vit_digits/finetune.py", ["--seeds", "0", "1", "2"], "ViT digits, base + 3 seeds"),
    "llama_gqa": ("examples/llama/train.py", [], "GQA Llama trained by the Trainer"),
}
#: which data each example reads
NEEDS = {"linearity": "minilm", "minilm": "minilm", "vit_digits": "vit_digits", "llama_gqa": "llama_gqa"}


def make_data(name: str, out: Path) -> float:
    script, args, _ = DATA[name]
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, str(REPO / script), "--out", str(out), *args],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    return time.perf_counter() - t


def run_example(name: str, cores: str, data: dict[str, Path], tmp: Path) -> float:
    project = copy_project(tmp / name)
    shutil.copytree(REPO / "examples", project / "examples")
    (project / "data").mkdir(exist_ok=True)
    for what, folder in data.items():
        os.symlink(folder, project / "data" / what)
    shared = REPO.parent / "shared"
    if shared.exists() and not (project.parent / "shared").exists():
        os.symlink(shared, project.parent / "shared")  # pythia_table reads ../shared
    t = time.perf_counter()
    snakemake(project, "--cores", cores, "--configfile", f"examples/{name}.yaml", timeout=3600)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cores", default="2")
    ap.add_argument("names", nargs="*", default=list(EXAMPLES))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = {}
        for what in dict.fromkeys(NEEDS[n] for n in args.names if n in NEEDS):
            data[what] = tmp / what
            rows.append((f"{DATA[what][2]} (once)", make_data(what, data[what])))
        for name in args.names:
            rows.append((name, run_example(name, args.cores, data, tmp)))
    width = max(len(k) for k, _ in rows)
    print(f"cold wall time, {args.cores} cores")
    for k, v in rows:
        print(f"{k:<{width}}  {v:6.1f} s")


if __name__ == "__main__":
    main()
