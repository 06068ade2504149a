"""What extraction needs of a model, whatever it is, and how a family of models says so.

:class:`ProbedModel` is a model ready to be probed: the model, the names of its modules as the
checkpoint calls them, the probe batches, how to run a batch, its training loss on batch i, which
rows of a [batch, position] output are real tokens, and how many outputs it has.
:class:`ModelFamily` is one family of models (those trained here, Hugging Face ``transformers``
models): how it recognises a checkpoint of its own and how it opens one as a :class:`ProbedModel`.
The families themselves are registered in :data:`ckptlens.extract.model.MODEL_FAMILIES`.

This module imports no other module of :mod:`ckptlens.extract`: every family imports it, so it sits
below them all and the package has no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np


class ExtractionError(ValueError):
    """A checkpoint, config, probe or target that cannot be turned into a model run; the message
    names it."""


@dataclass
class ProbedModel:
    model: object  # torch.nn.Module
    modules: dict[str, str]  # checkpoint module name -> model module name
    params: list[str]  # checkpoint names of the modules that own a weight (gradient targets)
    batches: list  # probe batches, on the model's device
    forward: Callable[[object], object]  # run one batch; returns the model's output
    loss: Callable[[int], object] | None  # training loss on probe batch i (None: the model has none)
    no_loss_reason: str
    mask: Callable[[object], object]  # batch -> [batch, position] bool mask of real tokens, or None
    n_outputs: int | None  # separate outputs (activation gradients), or None
    transposed: Callable[[str], bool]  # model module name -> weight stored [in, out]
    load: Callable[[str], None]  # put a checkpoint's weights into the model
    kind: str  # what kind of model (for the files' metadata)
    attention_modules: list[str] = field(default_factory=list)  # checkpoint names of the attention modules
    # batch, chosen attention modules -> {module: probabilities [batch, heads, query, key]}; None: the
    # model cannot expose them
    attentions: Callable[[object, list[str]], dict] | None = None
    # whether loss(0) runs forward(batches[0]) (same inputs, eval mode): the activations are then
    # captured from the first gradient batch's forward instead of a forward of their own
    loss_runs_first_forward: bool = False


@dataclass(frozen=True)
class ModelFamily:
    """One family of models extraction can run. ``recognises(checkpoint, hf_config)``: whether a
    checkpoint is one of this family's (cheap: metadata only, no model built); ``open(checkpoint,
    probe, device, hf_config)``: its model with the probe, weights not yet loaded
    (:attr:`ProbedModel.load`). ``hf_config`` is a Hugging Face config given by the caller, or None."""

    name: str
    recognises: Callable[[object, Mapping | None], bool]
    open: Callable[[object, Mapping, object, Mapping | None], ProbedModel]


def _indices(n: int, batch_size: int, n_batches: int, seed: int, what: str) -> list[np.ndarray]:
    """Batch i of a probe set of n samples: disjoint slices of one seeded permutation when the set is
    large enough, else an independent seeded sample (without replacement) per batch."""
    if batch_size > n:
        raise ExtractionError(f"{what}: batch_size {batch_size} is larger than the probe set ({n} samples)")
    rng = np.random.default_rng(seed)
    if n >= batch_size * n_batches:
        order = rng.permutation(n)
        return [order[i * batch_size : (i + 1) * batch_size] for i in range(n_batches)]
    return [rng.choice(n, batch_size, replace=False) for _ in range(n_batches)]
