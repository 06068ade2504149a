"""Optional dependencies (ckptlens.store.requires): the message names the package, why and how."""

from __future__ import annotations

import sys

import pytest


def test_require_names_the_package_why_and_how_to_install_it(tmp_path, monkeypatch):
    import importlib.metadata

    from ckptlens.store.requires import MissingDependency, require, requirement

    monkeypatch.setattr(
        importlib.metadata,
        "requires",
        lambda dist: ["torch==2.13.0", "transformers>=4.40", 'pytest>=8; extra == "test"'],
    )
    assert requirement("transformers") == "transformers>=4.40" and requirement("pytest") == "pytest"
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependency) as err:
        require("transformers", "building a model")
    assert str(err.value) == (
        "building a model needs the Python package transformers, which is not installed: pip install "
        "'transformers>=4.40' in this environment (a plain `pip install ckptlens` brings it)"
    )
    # installed, but what it imports is not
    (tmp_path / "brokenpkg").mkdir()
    (tmp_path / "brokenpkg" / "__init__.py").write_text("import no_such_module_of_ckptlens\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingDependency) as err:
        require("brokenpkg", "a feature")
    assert "needs the Python package brokenpkg, which cannot be imported (ModuleNotFoundError: No module named " in str(
        err.value
    ) and str(err.value).endswith(
        "pip install 'brokenpkg' in this environment (a plain `pip install ckptlens` brings it)"
    )
