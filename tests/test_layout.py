"""The layout says how data flows: each library package imports only from the stages before it,
each workflow script is named after its rule, the rules' software environment mirrors the
package's dependencies."""

import ast
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "ckptlens"
#: the stages, in the order data flows through them; a package may import from its own stage and
#: the ones before it (top: the config, the workflow's plan, the notebook loaders and the command line)
STAGES = ["store", "adapters", "sources", "extract", "metrics", "table", "analysis", "task_vectors", "plots", "top"]


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return parts[1]
    return "top"


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute ckptlens module) of every import in a file, at the top or in a function."""
    tree = ast.parse(path.read_text())
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("ckptlens")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("ckptlens"):
                if node.module is None or target in ("ckptlens", *[f"ckptlens.{s}" for s in STAGES]):
                    out += [(node.lineno, f"{target}.{a.name}") for a in node.names]
                else:
                    out.append((node.lineno, target))
    return out


def test_imports_follow_the_data_flow():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        src_stage = stage_of(module_name(path))
        for line, target in imports_of(path):
            dst_stage = stage_of(target)
            if STAGES.index(dst_stage) > STAGES.index(src_stage):
                wrong.append(f"{path.relative_to(REPO)}:{line}: {src_stage} imports {target} ({dst_stage})")
    assert not wrong, "imports against the flow:\n" + "\n".join(wrong)


def test_the_flow_check_sees_a_backward_import(tmp_path, monkeypatch):
    """The walk itself: an import of plots from metrics would be caught."""
    fake = SRC / "metrics" / "weight_spectrum.py"
    lines = imports_of(fake)
    assert any(t.startswith("ckptlens.metrics.registry") for _, t in lines)
    assert STAGES.index(stage_of("ckptlens.plots.studies")) > STAGES.index(stage_of(module_name(fake)))


def test_every_stage_package_exists_and_no_module_is_left_at_the_top():
    for stage in STAGES[:-1]:
        assert (SRC / stage / "__init__.py").is_file(), stage
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert top == ["__init__.py", "config.py", "plan.py", "results.py"]
    # the command line is the one package of the top stage (stage_of: it may import every stage)
    packages = sorted(p.parent.name for p in SRC.glob("*/__init__.py"))
    assert packages == sorted([*STAGES[:-1], "cli"]) and stage_of("ckptlens.cli.layers") == "top"


def _rules() -> dict[str, str]:
    """rule name (or the prefix of a generated rule family) -> its script."""
    out = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^(\s*)rule(?: (\w+))?:\n(.*?)(?=^\S|^\1rule|\Z)", text, re.S | re.M):
            body = m.group(3)
            name = m.group(2)
            if name is None:
                g = re.search(r'f"(\w+?)_\{identifier', body)
                name = g.group(1) if g else "?"
            script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+)\.py"', body)
            out[name] = script.group(1) if script else None
    return out


def test_scripts_are_named_after_their_rules():
    rules = _rules()
    assert rules, "no rules found"
    for name, script in rules.items():
        if script is not None:
            assert script == name, f"rule {name} runs scripts/{script}.py"
    scripts = {p.stem for p in (REPO / "workflow" / "scripts").glob("*.py")}
    assert scripts == {s for s in rules.values() if s}, scripts ^ {s for s in rules.values() if s}


def test_every_rule_has_a_log_and_the_environment():
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^(\s*)rule(?: (\w+))?:\n(.*?)(?=^\S|\Z)", text, re.S | re.M):
            body = m.group(3)
            if "use rule" in body:
                continue
            name = m.group(2) or "generated"
            if name == "all":
                continue
            assert re.search(r"^\s+log:", body, re.M), f"{smk.name}: rule {name} has no log"
            assert "conda:\n" in body and '"../envs/ckptlens.yaml"' in body, f"{smk.name}: rule {name} has no conda env"


def test_every_rule_with_a_log_has_a_benchmark_beside_it():
    """Each job's time and memory (Snakemake's benchmark TSV) under benchmarks/, named as its log is
    under logs/ (ckptlens.store.layout), so that scaling a study up shows which jobs grow."""
    n = 0
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^(\s*)rule(?: (\w+))?:\n(.*?)(?=^\S|\Z)", text, re.S | re.M):
            body, name = m.group(3), m.group(2) or "generated"
            log = re.search(r"^\s+log:\n\s+(.+?),?\n", body, re.M)
            if log is None or "use rule" in body:
                continue
            bench = re.search(r"^\s+benchmark:\n\s+(.+?),?\n", body, re.M)
            assert bench, f"{smk.name}: rule {name} has a log but no benchmark"
            assert bench.group(1) == log.group(1).replace("_log(", "_benchmark("), (smk.name, name, bench.group(1))
            n += 1
    assert n >= 20, n


def test_the_rules_environment_mirrors_the_package_dependencies():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "workflow" / "envs" / "ckptlens.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip) == sorted(deps)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python == "python=3.11"


@pytest.mark.parametrize(
    "path",
    [
        ".snakemake-workflow-catalog.yml",
        "config/README.md",
        "config/config.yaml",
        "workflow/Snakefile",
        "workflow/schemas/config.schema.yaml",
    ],
)
def test_the_catalog_layout(path):
    assert (REPO / path).is_file()
    assert not (REPO / "Snakefile").exists() and not (REPO / "profiles").exists()


def test_each_rule_hashes_the_code_its_script_imports():
    """No hand-kept lists: a rule's code param is its script's import closure. (Hand-kept lists had
    drifted: editing the plots reran plot_task_vectors but not plot_task_vector_samples, and
    extract_weights hashed nothing it imports.)"""
    from ckptlens.store.codehash import closure

    scripts = REPO / "workflow" / "scripts"

    def names(script):
        return {p.relative_to(SRC).as_posix() for p in closure([scripts / f"{script}.py"]) if SRC in p.parents}

    assert "plots/_style.py" in names("plot_task_vector_samples") and "plots/_style.py" in names("plot_task_vectors")
    assert {"adapters/base.py", "adapters/gpt2.py", "sources/readers.py", "store/tensors.py"} <= names(
        "extract_weights"
    )
    assert "metrics/weight_spectrum.py" not in names("extract_weights")
