"""Every job's code param is exactly the library code it runs.

The reference is Python's own :mod:`modulefinder` (bytecode, so imports inside functions count),
restricted to ckptlens, with the kinds of a registry a job does not run excluded. For every module
of the library, the jobs whose code param changes when that module changes must be exactly the
jobs whose reference closure holds it."""

from __future__ import annotations

import functools
import modulefinder
from pathlib import Path

import pytest

from ckptlens import config as ckcfg
from ckptlens import metrics as ckmetrics
from ckptlens.plan import Plan
from ckptlens.plots.studies import FIGURE_KINDS
from ckptlens.sources import SOURCES
from ckptlens.store import codehash

SRC = Path(codehash.__file__).resolve().parents[2]
SCRIPTS = ckcfg.WORKFLOW_DIR / "scripts"
#: registry package -> {kind: its modules}
REGISTRY_KINDS = {
    "ckptlens.metrics": {f: ckmetrics.family_modules(f) for f in ckmetrics.FAMILIES},
    "ckptlens.sources": {t: [s.steps.__module__] for t, s in SOURCES.items()},
    "ckptlens.plots.studies": {k: [f.draw.__module__] for k, f in FIGURE_KINDS.items()},
}
NARROWED_SCRIPT = {
    "metric_family": "ckptlens.metrics",
    "materialise_checkpoints": "ckptlens.sources",
    "plot_study_figure": "ckptlens.plots.studies",
}


def jobs() -> dict[str, tuple[Path, dict]]:
    """Every kind of job: each script, and each narrowed script once per kind it can run."""
    out = {}
    for script in sorted(SCRIPTS.glob("*.py")):
        registry = NARROWED_SCRIPT.get(script.stem)
        if script.stem == "train":  # imports its training code itself: no kind of the registry
            out["train"] = (script, {"ckptlens.sources": []})
            continue
        if registry is None:
            out[script.stem] = (script, {})
            continue
        for kind, modules in REGISTRY_KINDS[registry].items():
            if registry == "ckptlens.sources" and SOURCES[kind].kind != "fetch":
                continue
            out[f"{script.stem}[{kind}]"] = (script, {registry: modules})
    return out


class _CkptlensOnly(modulefinder.ModuleFinder):
    def find_module(self, name, path, parent=None):
        if parent is None and name not in ("ckptlens", "__init__"):
            raise ImportError(name)  # the standard library and third parties are not ours to hash
        return super().find_module(name, path, parent)


def reference(script: Path, kinds: dict) -> set[Path]:
    """The files modulefinder says the job imports; kinds of a narrowed registry other than the
    job's are excluded (the registry imports them only to register them)."""
    excludes = []
    for registry, modules in kinds.items():
        others = {m for ms in REGISTRY_KINDS[registry].values() for m in ms} - set(modules)
        excludes += [m for m in others if not any(m.startswith(o + ".") or m == o for o in modules)]
    finder = _CkptlensOnly(path=[str(SRC)], excludes=excludes)
    finder.run_script(str(script))
    for modules in kinds.values():
        for m in modules:
            finder.import_hook(m)
    files = {
        Path(m.__file__).resolve() for name, m in finder.modules.items() if name.startswith("ckptlens") and m.__file__
    }
    return files | {script.resolve()}


JOBS = jobs()


@functools.cache
def job_reference(job: str) -> frozenset[Path]:
    return frozenset(reference(*JOBS[job]))


@pytest.mark.parametrize("job", sorted(JOBS))
def test_a_jobs_code_is_what_it_imports(job):
    script, kinds = JOBS[job]
    assert set(codehash.job_code_files(script, kinds)) == job_reference(job)


def test_every_module_changes_the_code_of_exactly_the_jobs_importing_it(monkeypatch):
    """Edit each module in turn (one byte more, in memory): the jobs whose code param changes are
    the jobs whose reference closure holds it."""
    refs = {job: job_reference(job) for job in JOBS}
    files = {job: codehash.job_code_files(script, kinds) for job, (script, kinds) in JOBS.items()}
    for job, (script, kinds) in JOBS.items():
        assert codehash.job_code(script, kinds) == codehash._hash(files[job])
    library = sorted(p.resolve() for p in (SRC / "ckptlens").rglob("*.py"))
    # a short stand-in for each file's text: which files a hash reads is the question, not their size
    contents = {p: str(p).encode() for p in library} | {s.resolve(): str(s).encode() for s in SCRIPTS.glob("*.py")}
    edited: list[Path | None] = [None]
    monkeypatch.setattr(Path, "read_bytes", lambda self: contents[self] + (b"#" if self == edited[0] else b""))

    def codes():
        return {job: codehash._hash(files[job]) for job in JOBS}

    before = codes()
    wrong = {}
    for module in library:
        edited[0] = module
        changed = {job for job, code in codes().items() if code != before[job]}
        importing = {job for job, files in refs.items() if module in files}
        if changed != importing:
            wrong[str(module.relative_to(SRC))] = (sorted(changed - importing), sorted(importing - changed))
    assert not wrong, wrong
    unused = [str(p.relative_to(SRC)) for p in library if not any(p in f for f in refs.values())]
    # what no job runs: the command line, the parse-time config, plan and code hashes, the notebook loaders
    assert {u for u in unused if "/cli/" not in u} <= {
        "ckptlens/config.py",
        "ckptlens/plan.py",
        "ckptlens/results.py",
        "ckptlens/store/codehash.py",
    }


def test_the_rules_code_param_is_its_scripts(tmp_path):
    """Each rule passes get_code the name of the script it runs."""
    import re

    for smk in (ckcfg.WORKFLOW_DIR / "rules").glob("*.smk"):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*rule[ :])", text):
            code = re.findall(r'get_code\("(\w+)"', block)
            script = re.findall(r'scripts/(\w+)\.py"', block)
            assert code == script, (smk.name, block[:60])


def test_plan_names_the_kinds_a_job_runs():
    import yaml

    config = yaml.safe_load((ckcfg.WORKFLOW_DIR.parent / "config" / "config.yaml").read_text())
    plan = Plan(config)
    run = plan.runs[0]
    for family in plan.run_families[run]:
        assert plan.job_kinds("metric_family", run=run, family=family) == {
            "ckptlens.metrics": ckmetrics.family_modules(family)
        }
        assert plan.code("metric_family", run=run, family=family, part="0") == codehash.job_code(
            SCRIPTS / "metric_family.py", {"ckptlens.metrics": ckmetrics.family_modules(family)}
        )
    assert plan.job_kinds("aggregate_metrics", run=run) == {}
    assert plan.job_kinds("train", run=run) == {"ckptlens.sources": []}


def test_a_training_job_runs_no_adapter_and_no_other_source():
    files = {codehash.file_name(f) for f in codehash.job_code_files(*JOBS["train"])}
    assert not {f for f in files if f.startswith("adapters/")}
    assert not files & {"sources/hub.py", "sources/local.py", "sources/readers.py", "sources/layer_names.py"}
    assert {"sources/trained/train.py", "sources/trained/transformer.py"} <= files


def _bound_names(init) -> set[str]:
    """Names a package's ``__init__`` binds when it runs (not under ``if TYPE_CHECKING``)."""
    import ast

    names = set()
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, ast.Try):
            names |= {(a.asname or a.name) for n in ast.walk(node) if isinstance(n, ast.ImportFrom) for a in n.names}
    return names


def test_no_job_imports_a_lazily_loaded_name():
    """``from ckptlens.plots import plot_pca`` would run plots/pca.py through the package's
    ``__getattr__``, unseen by the code hash: library code and scripts import such names from
    their modules."""
    import ast

    wrong = []
    files = [*(SRC / "ckptlens").rglob("*.py"), *SCRIPTS.glob("*.py")]
    for f in files:
        here = None
        if f.is_relative_to(SRC):
            parts = list(f.relative_to(SRC).with_suffix("").parts)
            here = ".".join(parts if parts[-1] != "__init__" else parts[:-1])
            package = here if f.name == "__init__.py" else here.rpartition(".")[0]
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            init = codehash.module_file(target)
            if not target.startswith("ckptlens") or init is None or init.name != "__init__.py":
                continue
            bound = _bound_names(init)
            for alias in node.names:
                if codehash.module_file(f"{target}.{alias.name}") is None and alias.name not in bound:
                    wrong.append(f"{f.relative_to(SRC.parent)}:{node.lineno}: from {target} import {alias.name}")
    assert not wrong, wrong
