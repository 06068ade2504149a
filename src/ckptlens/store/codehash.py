"""Which library code a workflow job runs, as a hash: the job's rule passes it to Snakemake as a
parameter, so that editing that code reruns the job, and editing other code does not (Snakemake
itself tracks only the job's script file).

The code of a job is the *import closure* of its starting points (a script file, or modules such
as a metric family's): every ckptlens module they import, at the top or inside a function, and
so on, found by reading the source (``ast``) — nothing is imported, so this is cheap enough to run
while Snakemake parses the workflow. ``from ckptlens.pkg import name`` counts the submodule
``pkg.name`` when there is one, and the package's ``__init__`` otherwise; importing a submodule
does not count its package's ``__init__`` (a package that re-exports many modules would otherwise
make every job depend on all of them).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "ckptlens"
_ROOT = Path(__file__).resolve().parents[1]  # src/ckptlens (or site-packages/ckptlens)


def module_file(module: str) -> Path | None:
    """The source file of a ckptlens module (``ckptlens.metrics.weights``), None if there is none."""
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
def _imports(path: Path) -> tuple[str, ...]:
    """ckptlens modules imported anywhere in the file ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    try:
        here = _module_of(path)
        package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    except ValueError:  # a file outside the package (a workflow script)
        package = None
    found: list[str] = []
    for node in ast.walk(tree):
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


def closure(starts: Iterable[str | Path]) -> list[Path]:
    """Source files of the modules (names) or files (paths) in ``starts`` and of every ckptlens
    module they import, transitively; sorted."""
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
        todo += [module_file(m).resolve() for m in _imports(f)]
    return sorted(seen)


@functools.cache
def code_hash(*starts: str | Path) -> str:
    """A short hash of the import closure of ``starts`` (module names or file paths); see the
    module docstring. A script file in ``starts`` is part of the hash too. Cached for the process
    (Snakemake asks once per job while it builds the DAG)."""
    h = hashlib.sha256()
    for f in closure(starts):
        try:
            name = f.relative_to(_ROOT).as_posix()
        except ValueError:
            name = f.name
        h.update(name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]
