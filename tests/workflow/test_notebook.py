"""docs/notebook.md runs exactly as written on the demo's results (no task-vector sets there)."""

import re
import shutil

import pytest
from workflow_helpers import REPO

pytestmark = pytest.mark.slow


def test_the_notebook_page_runs_as_written_on_the_demo_results(small_project, tmp_path, monkeypatch):
    """Every python block of the page, in order and unchanged, in a folder whose results/ holds
    the shrunk demo's trained run (tests/configs/small.yaml's ``small``) as run ``demo``, the name
    the page's first block uses."""
    shutil.copytree(
        small_project / "results/runs/small",
        tmp_path / "results/runs/demo",
        ignore=shutil.ignore_patterns("checkpoints", "extract"),
    )
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs/notebook.md").read_text(), re.S)
    assert len(blocks) >= 4
    assert blocks[0].startswith('results_dir, run = "results", "demo"')
    monkeypatch.chdir(tmp_path)
    ns = {}
    for block in blocks:
        exec(block, ns)
    assert ns["task_vectors"].empty  # the demo has no task-vector sets: an empty frame, not an error
    assert len(ns["table"]) and len(ns["log"]) and {"pca", "correlation", "dynamics"} <= set(ns["analysis"])
    for png in ("training.png", "compare.png", "task_vectors.png"):
        assert (tmp_path / ns["out"] / png).stat().st_size > 0, png
    assert {r["metric"] for r in ns["rows"]} == {"effective_rank", "stable_rank"}
