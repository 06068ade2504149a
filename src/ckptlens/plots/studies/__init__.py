"""Study figures across runs (the config's ``figures`` section): a registry of figure kinds.

Each kind is a module here that calls :func:`register` with a :class:`FigureKind`: its name,
what it reads of each run (:data:`INPUTS`), its options beyond ``kind``/``runs``/``title`` (as
JSON-schema fragments), its drawing function, and optional config checks and config-derived spec
entries. The config validates a figure entry with :func:`check_figure` (while Snakemake parses the
workflow: importing this package imports numpy and pandas, never matplotlib); the workflow's
figure job calls :func:`plot_study_figure` with the normalised spec and the inputs the kind reads.

Kinds (modules): ``compare`` (one metric, several runs, a panel per layer), ``induction``
(training curves and K-composition circuit metrics of the induction task), ``rotary_sweep``
(QK–OV matching against the relative position), ``linearity`` (consecutive-layer linearity of one
run), ``gradient_pca`` (gradient PCA of the two-output MLP), ``model_size`` (PCA and correlation
summaries against model size). Shared helpers: :mod:`._common`.

Every figure is a pyplot-free Figure on the Agg canvas written atomically, a "no data" figure
for empty input, symlog step axes for log-spaced checkpoints (:mod:`ckptlens.plots._style`). Each
kind's public ``plot_*`` function is a thin wrapper around a ``_figure_*`` function that returns
the Figure (tests read the drawn data back from it) or raises :class:`._common.NoData`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: Per-run inputs a figure may read: the tidy metrics table (``metrics.parquet``), the detected
#: dynamics (``analysis/dynamics.csv``), the training log (``train_log.csv``, trained runs only),
#: and the analysis tables (``analysis/pca.csv``, ``analysis/correlation.csv``).
INPUTS = ("table", "dynamics", "log", "pca", "correlation")

#: Entries of every figure besides the kind's options, with their JSON-schema fragments.
COMMON_OPTIONS: dict[str, dict] = {
    "title": {"type": "string", "description": "the figure's title (default: the kind's)"},
}
#: JSON schema of a figure's ``runs``: the runs shown, in order; a mapping gives each a legend label.
RUNS_SCHEMA = {
    "description": "the runs shown, in order; a mapping gives each run a legend label",
    "oneOf": [
        {"type": "array", "items": {"type": "string"}, "minItems": 1},
        {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
    ],
}
_RESERVED = ("kind", "runs", "labels", *COMMON_OPTIONS)


@dataclass(frozen=True)
class RunFacts:
    """What the config knows about the runs, handed to the kinds' checks and ``prepare``."""

    #: run -> "train_toy" | "train_mlp" | "local" | "huggingface" | "table"
    source_type: Callable[[str], str]
    #: run -> its ``source:`` config mapping
    source: Callable[[str], Mapping]
    #: (metric name, config key) -> raises ValueError naming the key if no row of that name will exist
    check_metric_value: Callable[[str, str], None]


@dataclass(frozen=True)
class FigureKind:
    """One kind of study figure.

    ``reads``: the subset of :data:`INPUTS` the figure reads of each of its runs ("log" = the
    training log: trained runs only). ``options``: option -> JSON-schema fragment, beyond
    kind/runs/title (e.g. ``"ks": {"type": "array", "items": {"type": "integer", "minimum": 1},
    "minItems": 1}``). ``draw(spec, path, inputs)`` writes the PNG and returns its path; ``inputs``
    maps each input of ``reads`` to {run: DataFrame} (a run may lack an entry). ``check(spec, key,
    facts)``: kind-specific config checks of the normalised spec (``runs`` a list, ``labels``) of
    the entry at config key ``key`` (``figures.<name>``), raising
    ``ValueError("config key '<key>...': ...")``. ``prepare(spec, facts)``: extra spec entries
    computed from the config (gradient_pca's ``dims``, model_size's ``sizes``).
    """

    name: str
    description: str
    reads: tuple[str, ...]
    options: Mapping[str, Mapping]
    draw: Callable[[Mapping, Path, Mapping[str, Mapping[str, pd.DataFrame]]], Path]
    check: Callable[[Mapping, str, RunFacts], None] | None = None
    prepare: Callable[[Mapping, RunFacts], Mapping] | None = None


#: name -> kind, filled by :func:`register` in each kind module (all imported below).
FIGURE_KINDS: dict[str, FigureKind] = {}


def register(kind: FigureKind) -> FigureKind:
    """Add ``kind`` to :data:`FIGURE_KINDS` (a name registered twice, an unknown input or an
    option named like a common entry is a programming error: ValueError)."""
    if kind.name in FIGURE_KINDS:
        raise ValueError(f"figure kind {kind.name!r} is registered twice")
    unknown = [r for r in kind.reads if r not in INPUTS]
    if unknown:
        raise ValueError(f"figure kind {kind.name!r} reads unknown input(s) {unknown} (inputs: {', '.join(INPUTS)})")
    clash = [o for o in kind.options if o in _RESERVED]
    if clash:
        raise ValueError(f"figure kind {kind.name!r}: option(s) {clash} are entries of every figure")
    FIGURE_KINDS[kind.name] = kind
    return kind


def check_figure(name: str, fig: Mapping, facts: RunFacts) -> dict:
    """Validate ONE config entry ``figures.<name>`` and return its normalised spec.

    Checks: the kind is known (the error lists the kinds); ``runs`` is a non-empty list or a
    mapping run -> legend label (that the runs exist is the config's check, made before); no
    option the kind lacks; option values valid against the kind's JSON-schema fragments; then the
    kind's own :attr:`FigureKind.check`. Errors are ``ValueError("config key 'figures.<name>...':
    ...")``. Returns ``{**fig, "runs": [run, ...], "labels": {run: label}, **prepare(...)}``.
    """
    key = f"figures.{name}"
    if not isinstance(fig, Mapping):
        raise ValueError(f"config key '{key}': a figure is a mapping {{kind, runs, ...}}, not {type(fig).__name__}")
    kind = FIGURE_KINDS.get(fig.get("kind"))
    if kind is None:
        what = f"unknown figure kind {fig['kind']!r}" if "kind" in fig else "no figure kind given"
        raise ValueError(f"config key '{key}.kind': {what} (kinds: {', '.join(FIGURE_KINDS)})")
    if "runs" not in fig:
        raise ValueError(f"config key '{key}.runs': a figure needs the runs it shows")
    _validate(RUNS_SCHEMA, fig["runs"], f"{key}.runs")
    allowed = {**COMMON_OPTIONS, **kind.options}
    for opt in fig:
        if opt not in ("kind", "runs") and opt not in allowed:
            raise ValueError(
                f"config key '{key}.{opt}': the {kind.name} figure has no option '{opt}' "
                f"(options: {', '.join(allowed)})"
            )
    for opt, schema in allowed.items():
        if opt in fig:
            _validate(schema, fig[opt], f"{key}.{opt}")
    from ._common import runs_and_labels

    runs, labels = runs_and_labels(fig)
    spec = {**fig, "runs": runs, "labels": labels}
    if kind.check is not None:
        kind.check(spec, key, facts)
    if kind.prepare is not None:
        spec.update(kind.prepare(spec, facts))
    return spec


def _validate(schema: Mapping, value, key: str) -> None:
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: -len(e.absolute_path))
    if errors:
        err = errors[0]  # the most specific one names the key best
        where = "".join(f".{p}" for p in err.absolute_path)
        raise ValueError(f"config key '{key}{where}': {err.message}")


def plot_study_figure(spec: Mapping, path: str | os.PathLike, inputs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Path:
    """Draw one figure of the config's ``figures`` section to ``path`` (a PNG) and return the path.

    ``spec`` is :func:`check_figure`'s result (``{kind, runs, labels, title?, <options>,
    <prepared entries>}``; a ``runs`` mapping is read as the labels too). ``inputs[input][run]``:
    the per-run DataFrames of the inputs the kind reads (:attr:`FigureKind.reads`); missing
    inputs and runs are tolerated (the figure shows what there is, or says "no data"). Runs are
    shown under their labels, in the order of ``runs``. An unknown kind gives a "no data" figure.
    """
    from ._common import runs_and_labels

    runs, labels = runs_and_labels(spec)
    spec = {**spec, "runs": runs, "labels": labels}
    inputs = {name: dict(inputs.get(name) or {}) for name in INPUTS} if inputs else {n: {} for n in INPUTS}
    kind = FIGURE_KINDS.get(spec.get("kind"))
    if kind is None:
        from .. import _style

        return _style.no_data(path, spec.get("title") or "study figure", f"unknown figure kind {spec.get('kind')!r}")
    return kind.draw(spec, Path(path), inputs)


# Importing the kind modules registers the kinds (in this order, alphabetical: the order of the errors).
from . import compare, gradient_pca, induction, linearity, model_size, rotary_sweep  # noqa: E402,F401
