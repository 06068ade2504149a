"""Where checkpoints come from: one :class:`Source` per config ``source.type``, in :data:`SOURCES`.

A source knows, from its config entry alone (no network, no torch: this runs while Snakemake
parses the workflow, on every cluster job too):

* ``schema``: the JSON schema of its config entry;
* ``steps(spec)``: the run's checkpoint steps;
* ``layer_names(spec)``: the names target patterns are matched against, where they can be known
  without loading a model (None: the extraction job checks the patterns instead);
* how its checkpoints are made, ``kind``:

  - ``"train"``: one job trains the model and writes every checkpoint and a training log
    (``train(spec, steps, paths, log_path)``);
  - ``"fetch"``: each checkpoint is brought into the results folder as safetensors, or as a
    reference to a local safetensors checkpoint read in place (:mod:`ckptlens.sources.importer`;
    one job per chunk of steps, :func:`ckptlens.config.chunks`)
    (``materialise(spec, step, out)``, which writes a failure record for a checkpoint that cannot be
    read and returns it; ``inputs(spec, step)`` are the local files it reads
    and ``step_params(spec, step)`` the rest of what decides that checkpoint, so that a change of
    either fetches its chunk again, and only that chunk; ``temporary(spec)``: the copy is deleted once extracted);
    the steps' weight digests are compared, since published revisions sometimes hold identical
    weights;
  - ``"table"``: no checkpoints, the run's metrics come as a finished table.

* ``checkpoint_bytes(spec)``: about how large one checkpoint is (None: unknown), so that jobs are
  sized to their work (:func:`ckptlens.config.checkpoints_per_job`);
* ``notes(spec)``: what the run leaves out of what it was pointed at, and why, in the words
  ``ckptlens layers`` uses (the import job's log and the run's ``notes.txt`` say it);
* ``training_log(spec)``: the file holding a fetched run's training history (a Hugging Face
  Trainer's ``trainer_state.json``, a Lightning ``CSVLogger``'s ``metrics.csv``), or None; the workflow turns
  it into the run's ``train_log.csv``.

Adding a source is one module here that registers a :class:`Source` (and its test); the workflow
reads everything else from the registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

KINDS = ("train", "fetch", "table")
_SIZE = re.compile(r"(?<![A-Za-z0-9.])(\d+(?:\.\d+)?)([kmbt])(?![A-Za-z])", re.IGNORECASE)
_SIZE_FACTOR = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}


class SourceError(ValueError):
    """A source entry that cannot be used; ``key`` is the offending key below ``source``
    (``"path"``, ``"train"``; empty for the entry as a whole)."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.key = key


def _no_names(spec: Mapping) -> None:
    return None


def _not_temporary(spec: Mapping) -> bool:
    return False


def _no_inputs(spec: Mapping, step: int) -> list[str]:
    return []


def _no_params(spec: Mapping, step: int) -> dict:
    return {}


def _unknown_size(spec: Mapping) -> None:
    return None


def _no_notes(spec: Mapping) -> list[str]:
    return []


def _no_log(spec: Mapping) -> None:
    return None


@dataclass(frozen=True)
class Source:
    type: str
    kind: str
    description: str
    schema: Mapping
    steps: Callable[[Mapping], list[int]]
    layer_names: Callable[[Mapping], dict | None] = _no_names
    materialise: Callable | None = None
    train: Callable | None = None
    inputs: Callable[[Mapping, int], list[str]] = _no_inputs
    step_params: Callable[[Mapping, int], dict] = _no_params
    checkpoint_bytes: Callable[[Mapping], int | None] = _unknown_size
    temporary: Callable[[Mapping], bool] = _not_temporary
    notes: Callable[[Mapping], list[str]] = _no_notes
    training_log: Callable[[Mapping], str | None] = _no_log

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"source {self.type!r}: kind must be one of {KINDS}, not {self.kind!r}")
        if self.kind == "fetch" and self.materialise is None:
            raise ValueError(f"source {self.type!r}: a fetch source needs materialise()")
        if self.kind == "train" and self.train is None:
            raise ValueError(f"source {self.type!r}: a train source needs train()")


SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    if source.type in SOURCES:
        raise ValueError(f"source {source.type!r} is registered twice")
    SOURCES[source.type] = source
    return source


def get_source(type_: str) -> Source:
    try:
        return SOURCES[type_]
    except KeyError:
        raise SourceError(f"unknown source type {type_!r}; known: {', '.join(SOURCES)}", "type") from None


def parse_model_size(name: str) -> float | None:
    """Parameter count written in a model name: "pythia-1.4b-deduped" -> 1.4e9, "70m" -> 7e7."""
    m = _SIZE.search(name)
    return None if m is None else float(m.group(1)) * _SIZE_FACTOR[m.group(2).lower()]


# the sources that ship with ckptlens register themselves
from . import hub, local, table, training  # noqa: E402,F401
