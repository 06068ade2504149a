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
    # a metric job reads weights through the adapters: their code is the metric jobs' code
    assert {"adapters/base.py", "adapters/gpt2.py", "sources/readers.py", "extract/weights.py"} <= names(
        "metric_family"
    )
    assert "extract/weights.py" in names("task_vectors") and "metrics/weight_spectrum.py" not in names("task_vectors")


# --------------------------------------------------------------------------- the tests' layout
TESTS = REPO / "tests"
#: library modules whose tests live elsewhere than their mirrored path, each with where and why
#: (the mirrored path of src/ckptlens/<pkg>/<mod>.py is tests/<pkg>/test_<mod>.py, of a top-level
#: module tests/test_<mod>.py; a package's __init__.py is tests/<pkg>/test_<pkg>.py, not required)
COVERED_ELSEWHERE = {
    # the torch-free configs of the models trained here: every test that builds the toy model
    "sources/trained/configs.py": "tests/sources/trained/test_transformer.py",
    # the state-dict keys of the trained models: the default targets of every adapter
    "sources/trained/names.py": "tests/adapters/test_adapters.py",
    # the checkpoint-step schedules: the trained source's steps, validated and chunked with the config
    "sources/trained/steps.py": "tests/test_config.py",
    # training itself, and the MLP task's model, run only in the slow lane
    "sources/trained/train.py": "tests/workflow/test_train.py",
    "sources/trained/mlp.py": "tests/workflow/test_task_vector_sampling.py",
    # the evaluation tasks of task-vector samples: run by their workflow rule only
    "task_vectors/evaluate.py": "tests/workflow/test_task_vector_sampling.py",
    # which device a job uses, and the probed-model types: through every model extraction
    "sources/devices.py": "tests/extract/test_model.py",
    "extract/probed.py": "tests/extract/test_model.py",
    # a metric job's inputs, opened lazily: with the extraction it reads (and its failure records)
    "metrics/inputs.py": "tests/extract/test_model.py",
    # the tidy table's record format: with the failure records of every stage
    "store/tidy.py": "tests/store/test_records.py",
    # target patterns: with the adapters' default targets they select
    "store/patterns.py": "tests/adapters/test_adapters.py",
    # the results layout: with the job plan that computes every path from it
    "store/layout.py": "tests/test_plan.py",
}


def _library_modules() -> list[Path]:
    return [
        p
        for p in sorted(SRC.rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py") and not p.name.startswith("_")
    ]


def mirrored_test(module: Path) -> Path:
    rel = module.relative_to(SRC)
    return TESTS.joinpath(*rel.parts[:-1], f"test_{rel.stem}.py")


def test_every_library_module_has_a_test_module_at_its_mirrored_path():
    """src/ckptlens/metrics/gradient.py -> tests/metrics/test_gradient.py; private _modules are
    covered through their public module; the few others name where they are covered."""
    missing = []
    for module in _library_modules():
        rel = module.relative_to(SRC).as_posix()
        if rel in COVERED_ELSEWHERE:
            assert (REPO / COVERED_ELSEWHERE[rel]).is_file(), (rel, COVERED_ELSEWHERE[rel])
            continue
        if not mirrored_test(module).is_file():
            missing.append(f"{rel}: no {mirrored_test(module).relative_to(REPO)}")
    assert not missing, "library modules without a test module:\n" + "\n".join(missing)
    stale = [rel for rel in COVERED_ELSEWHERE if not (SRC / rel).is_file() or mirrored_test(SRC / rel).is_file()]
    assert not stale, f"allow-list entries whose module is gone or now has its mirrored test: {stale}"


def test_slow_is_a_folder_not_a_marker():
    """Only tests/workflow/ (its conftest.py marks every test there) and tests/slurm/ are slow."""
    marker = "mark." + "slow"
    wrong = [
        p.relative_to(REPO).as_posix()
        for p in sorted(TESTS.rglob("*.py"))
        if marker in p.read_text() and not {"workflow", "slurm"} & set(p.relative_to(TESTS).parts[:1])
    ]
    assert not wrong, f"slow tests outside tests/workflow/: {wrong}"


# --------------------------------------------------------------------------- import circles
def _sibling(package: str, target: str) -> str | None:
    """The name of the sibling (module or subpackage) of ``package`` that ``target`` lies in."""
    if not target.startswith(package + "."):
        return None
    name = target[len(package) + 1 :].split(".")[0]
    path = SRC.parent.joinpath(*package.split("."), name)
    return name if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() else None


def import_circles() -> list[list[str]]:
    """Circles of imports (at the top or inside a function) between the sibling modules of each
    package (a subpackage counts as one sibling); a package's __init__ is left out."""
    circles = []
    for init in sorted(SRC.rglob("__init__.py")):
        package = module_name(init)
        graph: dict[str, set[str]] = {}
        for path in sorted(init.parent.rglob("*.py")):
            name = module_name(path)
            node = _sibling(package, name)
            if node is None or path == init:
                continue
            graph.setdefault(node, set())
            for _, target in imports_of(path):
                other = _sibling(package, target)
                if other and other != node:
                    graph[node].add(other)
        # Tarjan's strongly connected components
        index, low, stack, on, out = {}, {}, [], set(), []

        def visit(v, index=index, low=low, stack=stack, on=on, out=out, graph=graph):
            index[v] = low[v] = len(index)
            stack.append(v)
            on.add(v)
            for w in sorted(graph.get(v, ())):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(f"{package}.{c}" for c in comp))

        for v in sorted(graph):
            if v not in index:
                visit(v)
        circles += out
    return circles


def test_no_import_circle_inside_a_package():
    assert import_circles() == []


def test_the_circle_check_sees_a_function_level_circle(tmp_path, monkeypatch):
    """The walk itself: two sibling modules importing each other, one inside a function."""
    pkg = tmp_path / "ckptlens" / "fake"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import B\n")
    (pkg / "b.py").write_text("def f():\n    from ckptlens.fake.a import A\n")
    monkeypatch.setitem(globals(), "SRC", tmp_path / "ckptlens")
    assert import_circles() == [["ckptlens.fake.a", "ckptlens.fake.b"]]


# --------------------------------------------------------------------------- references in docs
#: ckptlens.x.y written in prose; not a file name such as envs/ckptlens.yaml or ckptlens.egg-info
DOTTED = re.compile(r"(?<![\w/.-])ckptlens(?:\.[A-Za-z_]\w*)+")
DOC_FILES = [
    "README.md",
    "config/README.md",
    "CONTRIBUTING.md",
    *[f"docs/{p.name}" for p in sorted((REPO / "docs").glob("*.md"))],
]


def resolves(ref: str) -> bool:
    """A module, or an attribute (of an attribute ...) of the longest importable module prefix."""
    import importlib

    parts = ref.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        for attr in parts[n:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def _comments_and_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of the comments and string constants (docstrings included) of a Python file."""
    import io
    import tokenize

    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in (tokenize.COMMENT, tokenize.STRING):
            out.append((tok.start[0], tok.string))
    return out


def dotted_references() -> list[tuple[str, str]]:
    """(where, reference) of every ckptlens.x.y in the library's comments and docstrings, the rule
    files' comments and the Markdown docs."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        for line, text in _comments_and_strings(path):
            found += [(f"{path.relative_to(REPO)}:{line}", m.group()) for m in DOTTED.finditer(text)]
    for path in sorted((REPO / "workflow").rglob("*.smk")) + [REPO / "workflow" / "Snakefile"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "#" in line:
                comment = line[line.index("#") :]
                found += [(f"{path.relative_to(REPO)}:{n}", m.group()) for m in DOTTED.finditer(comment)]
    for name in DOC_FILES:
        path = REPO / name
        if path.is_file():
            for n, line in enumerate(path.read_text().splitlines(), 1):
                found += [(f"{name}:{n}", m.group()) for m in DOTTED.finditer(line)]
    return found


def test_dotted_references_in_docs_and_comments_resolve():
    refs = dotted_references()
    assert len(refs) > 20, refs
    wrong = [f"{where}: {ref}" for where, ref in refs if not resolves(ref)]
    assert not wrong, "references to no module or attribute:\n" + "\n".join(wrong)


def test_the_reference_check_sees_a_stale_name():
    assert resolves("ckptlens.sources.readers.open_checkpoint") and resolves("ckptlens.plots.studies")
    assert not resolves("ckptlens.checkpoint_io") and not resolves("ckptlens.sources.readers.no_such_name")


# --------------------------------------------------------------------------- the README's table
def _where_things_live() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("## Where things live", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def _entries(cell: str) -> list[tuple[str, str | None]]:
    """(name, parent) of each backticked `x/` or `x.py` of the package column: at the top level of
    the cell the parent is None; inside the parentheses after an entry, that entry."""
    out, depth, parent = [], 0, None
    for m in re.finditer(r"`([^`]+)`|[()]", cell):
        if m.group() == "(":
            depth += 1
        elif m.group() == ")":
            depth -= 1
        elif re.fullmatch(r"[\w]+(?:/|\.py)", m.group(1)):
            if depth == 0:
                parent = m.group(1)
                out.append((parent, None))
            else:
                out.append((m.group(1), parent))
    return out


def test_the_readme_table_lists_every_package_and_top_module():
    rows = _where_things_live()
    assert len(rows) >= 9, rows
    listed, wrong = set(), []
    for rules, scripts, package in (row[1:4] for row in rows):
        for name in re.findall(r"`([\w.]+\.smk)`", rules):
            if not (REPO / "workflow" / "rules" / name).is_file():
                wrong.append(f"rule file {name}")
        for name in re.findall(r"`([\w*]+)`", scripts):
            if not list((REPO / "workflow" / "scripts").glob(f"{name}.py")):
                wrong.append(f"script {name}")
        for name, parent in _entries(package):
            path = SRC / name if parent is None else SRC / parent / name
            if not (path.is_file() or (path / "__init__.py").is_file()):
                wrong.append(f"{path.relative_to(REPO)}")
            if parent is None:
                listed.add(name)
    existing = {f"{p.parent.name}/" for p in SRC.glob("*/__init__.py")}
    existing |= {p.name for p in SRC.glob("*.py") if p.name != "__init__.py"}
    assert not wrong, f"the README's 'Where things live' names what does not exist: {wrong}"
    assert listed == existing, f"missing from the table: {existing - listed}; not in src: {listed - existing}"
