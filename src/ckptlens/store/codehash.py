"""Which library code a workflow job runs, as a hash: the job's rule passes it to Snakemake as a
parameter, so that editing that code reruns the job, and editing other code does not (Snakemake
itself tracks only the job's script file).

The code of a job is the *import closure* of its starting points (a script file, or modules such
as a metric family's): every ckptlens module they import, at the top or inside a function, and
so on, found by reading the source (``ast``) — nothing is imported, so this is cheap enough to run
while Snakemake parses the workflow. ``from ckptlens.<package> import <name>`` counts the submodule
``<package>.<name>`` when there is one, and the package's ``__init__`` otherwise; a module's packages'
``__init__`` files count too, since Python runs them first.

Registries (:data:`REGISTRIES`) register every kind by importing its modules from their package's
``__init__`` (``from . import hub, local, trained``). A job that runs only some kinds of a registry
names them (:func:`job_code`'s ``kinds``): that registry's registration imports are then not
followed and the named kinds' modules are starting points instead (a metric job's family, a
training job none: its script imports the training code itself), so editing the hub source does not retrain a run. A
job that names no kinds of a registry it imports (one that reads every metric's label, say) keeps
every kind in its closure.

Files are named relative to the package (or, for a workflow script, as ``workflow/scripts/<name>``),
so a hash does not depend on where the package is installed or how (wheel or editable checkout).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path

PACKAGE = "ckptlens"
_ROOT = Path(__file__).resolve().parents[1]  # src/ckptlens (or site-packages/ckptlens)
#: packages whose ``__init__`` registers every kind of a registry with ``from . import a, b, …``
REGISTRIES = ("ckptlens.metrics", "ckptlens.sources", "ckptlens.plots.studies")


@functools.cache
def module_file(module: str) -> Path | None:
    """The source file of a ckptlens module (``ckptlens.metrics.weight_spectrum``), None if there is none."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = _ROOT.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_of(path: Path) -> str:
    rel = path.resolve().relative_to(_ROOT).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _imports(path: Path, narrowed: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """ckptlens modules imported anywhere in the file ``path`` (for the ``__init__`` of a registry
    in ``narrowed``, not its registration imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    try:
        here = _module_of(path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    except ValueError:  # a file outside the package (a workflow script)
        package = None
    found: list[str] = []
    registrations = _registration_imports(tree) if package in narrowed and path.name == "__init__.py" else set()
    for node in ast.walk(tree):
        if id(node) in registrations:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(sub if module_file(sub) is not None else base)
    return tuple(dict.fromkeys(m for m in found if module_file(m) is not None))


def _registration_imports(tree: ast.Module) -> set[int]:
    """ids of a registry ``__init__``'s top-level ``from . import kind, …`` statements."""
    return {
        id(node) for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
    }


@functools.cache
def file_name(path: Path) -> str:
    """How a file is named in a hash: relative to the package, or ``workflow/scripts/<name>`` for a
    workflow script (the workflow lives in the package when installed from a wheel, beside ``src/``
    in a checkout), else its bare name."""
    path = Path(path).resolve()
    try:
        return path.relative_to(_ROOT).as_posix()
    except ValueError:
        pass
    if path.parent.name == "scripts" and path.parent.parent.name == "workflow":
        return f"workflow/scripts/{path.name}"
    return path.name


def closure(starts: Iterable[str | Path], narrowed: Iterable[str] = ()) -> list[Path]:
    """Source files of the modules (names) or files (paths) in ``starts`` and of every ckptlens
    module they import, transitively, not following the registration imports of the registries in
    ``narrowed``; sorted."""
    narrowed = frozenset(narrowed)
    unknown = narrowed - set(REGISTRIES)
    if unknown:
        raise ValueError(f"not a registry: {sorted(unknown)}")
    todo: list[Path] = []
    for s in starts:
        f = Path(s) if isinstance(s, Path) or str(s).endswith(".py") else module_file(str(s))
        if f is None:
            raise ValueError(f"no module {s}")
        todo.append(f.resolve())
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += [module_file(m).resolve() for m in _imports(f, narrowed)]
        package_init = (f.parent.parent if f.name == "__init__.py" else f.parent) / "__init__.py"
        if package_init.is_file() and package_init.resolve().is_relative_to(_ROOT):
            todo.append(package_init.resolve())  # Python runs a module's packages' __init__ first
    return sorted(seen)


def job_code_files(script: str | Path, kinds: Mapping[str, Iterable[str]] | None = None) -> list[Path]:
    """The files a job runs: the import closure of its ``script`` and of the modules of the
    ``kinds`` it uses (registry package -> the kinds' module names); see the module docstring."""
    kinds = kinds or {}
    return closure([script, *(m for mods in kinds.values() for m in mods)], narrowed=kinds)


def job_code(script: str | Path, kinds: Mapping[str, Iterable[str]] | None = None) -> str:
    """The code parameter of every workflow job: a hash of :func:`job_code_files`."""
    key = tuple(sorted((reg, tuple(sorted(set(mods)))) for reg, mods in (kinds or {}).items()))
    return _job_code(Path(script).resolve() if str(script).endswith(".py") else str(script), key)


@functools.cache
def _job_code(script: str | Path, kinds: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    return _hash(job_code_files(script, dict(kinds)))


@functools.cache
def code_hash(*starts: str | Path) -> str:
    """A short hash of the import closure of ``starts`` (module names or file paths); see the
    module docstring. A script file in ``starts`` is part of the hash too. Cached for the process
    (Snakemake asks once per job while it builds the DAG)."""
    return _hash(closure(starts))


def _hash(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=file_name):  # by name: a checkout and a wheel order paths differently
        h.update(file_name(f).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
