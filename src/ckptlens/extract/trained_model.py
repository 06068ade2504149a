"""The models trained here (the demo transformer, the two-output MLP) as probed models: rebuilt
from a checkpoint's own metadata, probed with batches of their own task. :data:`TRAINED` is their
entry in :data:`ckptlens.extract.model.MODEL_FAMILIES`."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from ..store.tensors import SafetensorsFile, followed
from .probed import ExtractionError, ModelFamily, ProbedModel

#: the ``ckptlens_arch`` metadata values of the checkpoints trained here (see :func:`_build`)
ARCHS = ("toy", "mlp")


def load_trained(checkpoint, device=None):
    """``(model, task)`` of a checkpoint trained by ckptlens, its weights loaded, in eval mode."""
    model, task = _build(checkpoint)
    _load(model, checkpoint, device)
    return model, task


def _build(checkpoint):
    meta = SafetensorsFile(followed(checkpoint)).metadata
    arch = meta.get("ckptlens_arch")
    if arch == "toy":
        from ..sources.trained.induction import InductionTask, InductionTaskConfig
        from ..sources.trained.transformer import AttnOnlyTransformer, ToyModelConfig

        model = AttnOnlyTransformer(ToyModelConfig(**json.loads(meta["ckptlens_model"])))
        task = InductionTask(InductionTaskConfig(**json.loads(meta["ckptlens_task"])))
    elif arch == "mlp":
        from ..sources.trained.mlp import TwoForcesConfig, TwoForcesTask, TwoOutputMLP

        cfg = TwoForcesConfig(**json.loads(meta["ckptlens_model"]))
        model, task = TwoOutputMLP(cfg), TwoForcesTask(cfg)
    else:
        raise ExtractionError(
            f"{checkpoint}: not a checkpoint trained by ckptlens (metadata 'ckptlens_arch' is {arch!r})"
        )
    return model, task


def _load(model, checkpoint, device) -> None:
    import torch

    # the project's one reader: a bad file or a failure record is a CheckpointError naming the file
    f = SafetensorsFile(followed(checkpoint))  # a reference: the local file it names
    try:
        state = {k: torch.from_numpy(np.array(f.get(k))) for k in f.keys}  # a copy: the mmap is read-only
    finally:
        f.close()
    model.load_state_dict(state)
    model.to(device or "cpu").eval()


def recognises(checkpoint, hf_config: Mapping | None = None) -> bool:
    """A safetensors checkpoint trained here (by its ``ckptlens_arch`` metadata), unless a Hugging
    Face config is given to build the model from."""
    if not str(checkpoint).endswith(".safetensors"):
        return False
    checkpoint = followed(checkpoint)  # a reference: the local file it names
    if not str(checkpoint).endswith(".safetensors"):
        return False
    return SafetensorsFile(checkpoint).metadata.get("ckptlens_arch") in ARCHS and hf_config is None


def open_trained_model(checkpoint, probe: Mapping, device=None) -> ProbedModel:
    model, task = _build(checkpoint)
    model.to(device or "cpu").eval()
    batches = [
        b.to(device or "cpu") for b in task.probe_batches(probe["n_batches"], probe["batch_size"], probe["seed"])
    ]
    modules = {n: n for n, _ in model.named_modules() if n}
    params = [n[: -len(".weight")] for n, _ in model.named_parameters() if n.endswith(".weight")]
    attention = [n for n, m in model.named_modules() if hasattr(m, "keep_pattern")]  # the demo transformer's

    def attentions(batch, chosen):
        found = dict(model.named_modules())
        for n in chosen:
            found[n].keep_pattern = True
        try:
            model(task.inputs(batch))
            return {n: found[n].pattern for n in chosen}
        finally:
            for n in chosen:
                found[n].keep_pattern, found[n].pattern = False, None

    return ProbedModel(
        model=model,
        modules=modules,
        params=params,
        batches=batches,
        forward=lambda batch: model(task.inputs(batch)),
        loss=lambda i: task.loss(model, batches[i]),
        no_loss_reason="",
        mask=lambda batch: None,
        n_outputs=getattr(task, "n_outputs", None),
        transposed=lambda module: False,
        load=lambda ckpt: _load(model, ckpt, device),
        kind=SafetensorsFile(followed(checkpoint)).metadata.get("ckptlens_arch", ""),
        attention_modules=attention,
        attentions=attentions if attention else None,
    )


def _open(checkpoint, probe: Mapping, device=None, hf_config: Mapping | None = None) -> ProbedModel:
    return open_trained_model(checkpoint, probe, device)  # recognised only without an hf_config


TRAINED = ModelFamily("trained", recognises, _open)
