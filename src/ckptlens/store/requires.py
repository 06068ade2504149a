"""Packages imported only where a feature needs them (transformers, huggingface_hub, pygments):
:func:`require` imports one, or raises :class:`MissingDependency`, whose message is one line naming
the package, what needs it and the pip command that installs it. The command line prints it as its
error line and a job log (:func:`ckptlens.store.joblog.job_log`) ends with it, without a traceback:
the fix is an install, not a code change.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType


class MissingDependency(ImportError):
    """A package a feature needs cannot be imported; the message says which, why and how to install it."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement(package: str) -> str:
    """``package`` as ckptlens's own metadata requires it (``transformers>=4.40``), so that the
    install hint never disagrees with pyproject.toml; the bare name where ckptlens does not list it
    (or is not installed as a distribution)."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        reqs = requires("ckptlens") or []
    except PackageNotFoundError:
        return package
    for req in reqs:
        spec, _, marker = req.partition(";")
        name = re.split(r"[\s\[<>=!~]", spec.strip(), maxsplit=1)[0]
        if _normalise(name) == _normalise(package) and "extra" not in marker:
            return spec.strip().replace(" ", "")
    return package


def require(module: str, why: str, package: str | None = None) -> ModuleType:
    """``module`` imported, or :class:`MissingDependency` saying that ``why`` (e.g. "activations of
    Hugging Face models") needs it and how to install it. ``package``: its distribution name where
    it differs from the module's."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module
        pin = requirement(package)
        if exc.name in (module, module.partition(".")[0]):
            state = "is not installed"
        else:  # installed, but something it imports is missing or broken
            state = f"cannot be imported ({type(exc).__name__}: {' '.join(str(exc).split())})"
        raise MissingDependency(
            f"{why} needs the Python package {package}, which {state}: pip install '{pin}' in this environment "
            "(a plain `pip install ckptlens` brings it)"
        ) from None
