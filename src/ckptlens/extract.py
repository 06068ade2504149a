"""Extraction: from a checkpoint to the per-layer tensors that metrics read.

- weights: selected weight matrices, read lazily from the checkpoint (numpy only, no torch);
- activations: forward-hook outputs of the target modules on a fixed probe batch, [n_samples, features];
- gradients: per-layer weight gradients of the training loss on a few fixed probe batches, kept
  separately (key "<layer>#<batch>") so that similarity across batches can be computed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .io import GRADIENT_SEP, TensorFile, save_tensors
from .patterns import select


def extract_weights(checkpoint, patterns, out_path, adapter: str = "auto") -> list[str]:
    """The weight matrices (and per-head pieces/circuits) whose names match ``patterns``, as the
    architecture adapter names them; tensors are read one at a time (numpy only, no torch)."""
    from .adapters import get_adapter
    from .checkpoint_io import open_checkpoint
    from .patterns import matches

    with open_checkpoint(checkpoint) as ckpt:
        arch = get_adapter(adapter, ckpt.keys, ckpt.metadata, shapes=ckpt.shapes)
        tensors = dict(arch.weight_matrices(ckpt.keys, ckpt.get, list(patterns), match=matches, shapes=ckpt.shapes))
    if not tensors:
        raise ValueError(f"{checkpoint}: no weight matches the target patterns {list(patterns)}")
    save_tensors(tensors, out_path, {"source": str(checkpoint), "adapter": arch.name})
    return list(tensors)


def load_toy(checkpoint, device=None):
    """The demo model and task from a checkpoint's own metadata."""
    import torch
    from safetensors.torch import load_file

    from .toy.model import AttnOnlyTransformer, ToyModelConfig
    from .toy.tasks import InductionTask, InductionTaskConfig

    meta = TensorFile(checkpoint).metadata
    if meta.get("ckptlens_arch") != "toy":
        raise ValueError(f"{checkpoint}: not a ckptlens demo checkpoint (no 'ckptlens_arch: toy' metadata)")
    model = AttnOnlyTransformer(ToyModelConfig(**json.loads(meta["ckptlens_model"])))
    model.load_state_dict(load_file(str(checkpoint)))
    model.to(device or "cpu").eval()
    task = InductionTask(InductionTaskConfig(**json.loads(meta["ckptlens_task"])))
    return model, task


def activations(model, inputs, module_names) -> dict[str, np.ndarray]:
    """Outputs of the named modules on ``inputs``, flattened to [n_samples (× positions), features]."""
    import torch

    modules = dict(model.named_modules())
    missing = [n for n in module_names if n not in modules]
    if missing:
        raise ValueError(f"modules not found in the model: {missing}")
    captured: dict[str, np.ndarray] = {}
    hooks = []

    def hook(name):
        def fn(_module, _inp, out):
            out = out[0] if isinstance(out, tuple) else out
            captured[name] = out.detach().float().reshape(-1, out.shape[-1]).cpu().numpy()

        return fn

    for n in module_names:
        hooks.append(modules[n].register_forward_hook(hook(n)))
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        for h in hooks:
            h.remove()
    return captured


def gradients(model, batches, loss_fn, module_names) -> dict[str, np.ndarray]:
    """Weight gradient of each named module for each batch: {"<module>#<i>": grad}."""
    params = dict(model.named_parameters())
    keys = {n: f"{n}.weight" if f"{n}.weight" in params else n for n in module_names}
    missing = [k for k in keys.values() if k not in params]
    if missing:
        raise ValueError(f"parameters not found in the model: {missing}")
    out = {}
    model.train()
    for i, batch in enumerate(batches):
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        for name, key in keys.items():
            out[f"{name}{GRADIENT_SEP}{i}"] = params[key].grad.detach().float().cpu().numpy()
    model.eval()
    return out


def extract_model(checkpoint, targets: dict, probe: dict, outputs: dict[str, str], device=None) -> None:
    """Activations and/or gradients (whichever ``outputs`` names) of one checkpoint, one model load."""
    import torch

    from .devices import pick_device
    from .toy.names import toy_module_names

    torch.manual_seed(0)
    dev = device or pick_device()
    model, task = load_toy(checkpoint, dev)
    names = toy_module_names({"n_layers": model.cfg.n_layers})
    batches = [b.to(dev) for b in task.probe_batches(probe["n_batches"], probe["batch_size"], probe["seed"])]
    meta = {"source": str(checkpoint), "probe": json.dumps(probe)}
    if "activations" in outputs:
        mods = select(targets["activations"], names["activations"])
        save_tensors(activations(model, task.inputs(batches[0]), mods), outputs["activations"], meta)
    if "gradients" in outputs:
        mods = select(targets["gradients"], names["gradients"])
        save_tensors(gradients(model, batches, task.loss, mods), outputs["gradients"], meta)
