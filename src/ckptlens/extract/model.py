"""Activations, gradients and activation gradients of checkpoints: one model, built once, the
checkpoints' weights loaded in turn, each run on the same fixed probe batches.

:class:`~.probed.ProbedModel` is what extraction needs of a model, whatever it is (see
:mod:`.probed`). :func:`open_model` builds one from a checkpoint with the first family of
:data:`MODEL_FAMILIES` that recognises it — a model trained here (:mod:`.trained_model`, told apart
by the checkpoint's metadata) or else a Hugging Face ``transformers`` model (:mod:`.hf_model`).
:func:`extract_model` is the job: one checkpoint's extractions, or (:func:`extract_models`) a series
of checkpoints of one model, which is then built once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from ..store.failures import naming_source
from ..store.patterns import select
from ..store.tensors import write_tensors
from .hf_model import TRANSFORMERS
from .probed import ExtractionError, ModelFamily, ProbedModel
from .trained_model import TRAINED

KINDS = ("activations", "gradients", "activation_gradients", "attentions")

#: name -> model family, in recognition order ("transformers" last: it accepts any checkpoint)
MODEL_FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (TRAINED, TRANSFORMERS)}


def open_model(checkpoint, probe: Mapping, device=None, hf_config: Mapping | None = None) -> ProbedModel:
    """The model of ``checkpoint`` with its probe, weights not yet loaded (:attr:`ProbedModel.load`)."""
    for family in MODEL_FAMILIES.values():
        if family.recognises(checkpoint, hf_config):
            return family.open(checkpoint, probe, device, hf_config)
    raise ExtractionError(  # pragma: no cover  ("transformers" recognises every checkpoint)
        f"{checkpoint}: no model family recognises it (families: {', '.join(MODEL_FAMILIES)})"
    )


def _chosen(targets: Mapping, kind: str, names: Sequence[str], checkpoint) -> list[str]:
    found = select(targets.get(kind, []), list(names))
    if not found:
        raise ExtractionError(f"{checkpoint}: no module matches targets.{kind} {list(targets.get(kind, []))}")
    return found


def run_extractions(pm: ProbedModel, checkpoint, targets: Mapping, probe: Mapping, outputs: Mapping[str, str]) -> None:
    """The extractions ``outputs`` names (kind -> path) of the checkpoint whose weights ``pm`` holds."""
    from .capture import capture_attentions, capture_outputs, output_gradients, weight_gradients

    if "gradients" in outputs and pm.loss is None:  # before anything is written
        raise ExtractionError(f"{checkpoint}: {pm.no_loss_reason}")
    meta = {"source": str(checkpoint), "probe": json.dumps(dict(probe), sort_keys=True), "model_kind": pm.kind}
    first = pm.batches[0]
    if "activations" in outputs:
        mods = {c: pm.modules[c] for c in _chosen(targets, "activations", pm.modules, checkpoint)}
        acts = capture_outputs(pm.model, lambda: pm.forward(first), mods, pm.mask(first))
        write_tensors(acts, outputs["activations"], meta)
    if "gradients" in outputs:
        mods = {c: pm.modules[c] for c in _chosen(targets, "gradients", pm.params, checkpoint)}
        grads = weight_gradients(pm.model, pm.loss, len(pm.batches), mods, pm.transposed)
        write_tensors(grads, outputs["gradients"], meta)
    if "activation_gradients" in outputs:
        if not pm.n_outputs:
            raise ExtractionError(
                f"{checkpoint}: activation gradients need a model with several outputs (the two-forces MLP)"
            )
        mods = {c: pm.modules[c] for c in _chosen(targets, "activation_gradients", pm.modules, checkpoint)}
        write_tensors(
            output_gradients(pm.model, lambda: pm.forward(first), mods, pm.n_outputs),
            outputs["activation_gradients"],
            meta,
        )
    if "attentions" in outputs:
        if pm.attentions is None:
            raise ExtractionError(f"{checkpoint}: this model does not expose its attention probabilities")
        chosen = _chosen(targets, "attentions", pm.attention_modules, checkpoint)
        write_tensors(
            capture_attentions(lambda: pm.attentions(first, chosen), pm.mask(first)), outputs["attentions"], meta
        )


def extract_models(
    checkpoints: Sequence,
    targets: Mapping,
    probe: Mapping,
    outputs: Sequence[Mapping[str, str]],
    device=None,
    hf_config: Mapping | None = None,
) -> None:
    """:func:`run_extractions` for a series of checkpoints of one model (``outputs[i]`` for
    ``checkpoints[i]``): the model and the probe are built once, from the first checkpoint."""
    import torch

    from ..sources.devices import pick_device

    if not checkpoints:
        return
    torch.manual_seed(0)
    dev = torch.device(device) if device is not None else pick_device()
    with naming_source(checkpoints[0]):
        pm = open_model(checkpoints[0], probe, dev, hf_config)
    for checkpoint, outs in zip(checkpoints, outputs):
        with naming_source(checkpoint):  # an error names the checkpoint, and its source file
            pm.load(checkpoint)
            run_extractions(pm, checkpoint, targets, probe, outs)


def extract_model(
    checkpoint,
    targets: Mapping,
    probe: Mapping,
    outputs: Mapping[str, str],
    device=None,
    hf_config: Mapping | None = None,
) -> None:
    """Activations, gradients and/or activation gradients (whichever ``outputs`` names: kind ->
    path) of one checkpoint, from one model load. ``hf_config``: a Hugging Face config to build the
    model from, instead of the one in the checkpoint's metadata."""
    extract_models([checkpoint], targets, probe, [outputs], device, hf_config)
