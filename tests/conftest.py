"""Fixtures shared by the suites at the top of tests/: the wheel built from this tree and its files as installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from this tree (in a copy: `pip wheel .` would reuse a stale build/ here)."""
    root = tmp_path_factory.mktemp("wheel")
    project = root / "project"
    project.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, project / name)
    for name in ("src", "workflow"):
        shutil.copytree(REPO / name, project / name, ignore=ignore)
    # no build isolation: the venv's setuptools builds it, no index is needed
    subprocess.run(
        [*PIP, "wheel", str(project), "--no-deps", "--no-build-isolation", "-q", "-w", str(root / "dist")],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return next((root / "dist").glob("ckptlens-*.whl"))


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel's files as installed, `pip install --no-deps --target SITE`, used on top of this
    environment's packages (what the wheel carries; its dependencies are `fresh_venv`'s question)."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [*PIP, "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return site
