"""Code hashes (ckptlens.store.codehash): a job's hash is the import closure of what it runs."""

import shutil
import textwrap

import pytest

from ckptlens.store import codehash

FILES = {
    "__init__.py": "",
    "a/__init__.py": "",
    "a/b.py": "from ..s.h import f\n",
    "a/c.py": "import numpy\n",
    "s/__init__.py": "",
    "s/h.py": "def f():\n    from ckptlens.s import k\n",
    "s/k.py": "",
    "t.py": "from ckptlens.a import b\n",
    # a registry: its __init__ registers every kind by importing it
    "r/__init__.py": "REGISTRY = {}\nfrom . import one, two  # noqa\n",
    "r/one.py": "from ckptlens.s import k\n",
    "r/two.py": "from ckptlens.a import c\n",
    "job.py": "from ckptlens.r import REGISTRY\n",
}


def _clear():
    for f in (codehash._imports, codehash.code_hash, codehash._job_code, codehash.module_file, codehash.file_name):
        f.cache_clear()


@pytest.fixture
def package(tmp_path, monkeypatch):
    def make(root):
        for rel, text in FILES.items():
            f = root / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(textwrap.dedent(text))
        monkeypatch.setattr(codehash, "_ROOT", root)
        monkeypatch.setattr(codehash, "REGISTRIES", ("ckptlens.r",))
        _clear()
        return root

    yield make
    _clear()


def names(root, *starts, narrowed=()):
    return sorted(p.relative_to(root).as_posix() for p in codehash.closure(starts, narrowed))


def test_the_closure_follows_imports_anywhere_and_the_packages_python_runs_first(package, tmp_path):
    root = package(tmp_path / "ckptlens")
    assert names(root, "ckptlens.a.b") == [
        "__init__.py",
        "a/__init__.py",
        "a/b.py",
        "s/__init__.py",
        "s/h.py",
        "s/k.py",
    ]
    assert names(root, "ckptlens.t") == [
        "__init__.py",
        "a/__init__.py",
        "a/b.py",
        "s/__init__.py",
        "s/h.py",
        "s/k.py",
        "t.py",
    ]
    before = codehash.code_hash("ckptlens.t")
    (root / "a" / "c.py").write_text("import numpy as np\n")
    _clear()
    assert codehash.code_hash("ckptlens.t") == before  # c is not imported by t
    (root / "s" / "k.py").write_text("x = 1\n")
    _clear()
    assert codehash.code_hash("ckptlens.t") != before  # k is, inside a function of h
    with pytest.raises(ValueError, match="no module"):
        codehash.closure(["ckptlens.nope"])


def test_a_job_naming_its_kinds_depends_on_those_kinds_only(package, tmp_path):
    root = package(tmp_path / "ckptlens")
    every = names(root, "ckptlens.job")
    assert {"r/one.py", "r/two.py", "a/c.py", "s/k.py"} <= set(every)  # no kinds named: all of them
    files = [
        p.relative_to(root).as_posix()
        for p in codehash.job_code_files(root / "job.py", {"ckptlens.r": ["ckptlens.r.one"]})
    ]
    assert "r/one.py" in files and "s/k.py" in files and "r/__init__.py" in files
    assert "r/two.py" not in files and "a/c.py" not in files
    one = codehash.job_code(root / "job.py", {"ckptlens.r": ["ckptlens.r.one"]})
    (root / "r" / "two.py").write_text("from ckptlens.a import c\nx = 2\n")
    _clear()
    assert codehash.job_code(root / "job.py", {"ckptlens.r": ["ckptlens.r.one"]}) == one
    assert codehash.job_code(root / "job.py") != codehash.job_code(root / "job.py", {"ckptlens.r": ["ckptlens.r.one"]})
    with pytest.raises(ValueError, match="not a registry"):
        codehash.closure(["ckptlens.t"], narrowed=["ckptlens.s"])


def test_the_hash_does_not_depend_on_where_the_package_is_installed(package, tmp_path):
    first = package(tmp_path / "checkout" / "src" / "ckptlens")
    h = codehash.code_hash("ckptlens.t")
    second = tmp_path / "venv" / "site-packages" / "ckptlens"
    shutil.copytree(first, second)
    package(second)
    assert codehash.code_hash("ckptlens.t") == h
    # a workflow script is named workflow/scripts/<name> from a checkout and from the package alike
    for where in (tmp_path / "checkout" / "workflow" / "scripts", second / "workflow" / "scripts"):
        where.mkdir(parents=True)
        (where / "train.py").write_text("from ckptlens.a import b\n")
    assert codehash.job_code(tmp_path / "checkout" / "workflow" / "scripts" / "train.py") == codehash.job_code(
        second / "workflow" / "scripts" / "train.py"
    )
