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

from .io import GRADIENT_SEP, TensorFile, save_tensors, save_tensors_streaming
from .patterns import select


def extract_weights(checkpoint, patterns, out_path, adapter: str = "auto") -> list[str]:
    """The weight matrices (and per-head pieces/circuits) whose names match ``patterns``, as the
    architecture adapter names them; tensors are read one at a time (numpy only, no torch)."""
    from .adapters import get_adapter
    from .checkpoint_io import open_checkpoint
    from .patterns import matches

    with open_checkpoint(checkpoint) as ckpt:
        arch = get_adapter(adapter, ckpt.keys, ckpt.metadata, shapes=ckpt.shapes)
        matrices = arch.weight_matrices(ckpt.keys, ckpt.get, list(patterns), match=matches, shapes=ckpt.shapes)
        # streamed: one matrix in memory at a time, whatever the model's size
        names = save_tensors_streaming(matrices, out_path, {"source": str(checkpoint), "adapter": arch.name})
    if not names:
        Path(out_path).unlink()
        raise ValueError(f"{checkpoint}: no weight matches the target patterns {list(patterns)}")
    return names


def load_toy(checkpoint, device=None):
    """A model trained by this workflow (the demo transformer or the two-output MLP) and its task,
    rebuilt from the checkpoint's own metadata."""
    from safetensors.torch import load_file

    meta = TensorFile(checkpoint).metadata
    arch = meta.get("ckptlens_arch")
    if arch == "toy":
        from .toy.model import AttnOnlyTransformer, ToyModelConfig
        from .toy.tasks import InductionTask, InductionTaskConfig

        model = AttnOnlyTransformer(ToyModelConfig(**json.loads(meta["ckptlens_model"])))
        task = InductionTask(InductionTaskConfig(**json.loads(meta["ckptlens_task"])))
    elif arch == "mlp":
        from .toy.mlp import TwoForcesConfig, TwoForcesTask, TwoOutputMLP

        cfg = TwoForcesConfig(**json.loads(meta["ckptlens_model"]))
        model, task = TwoOutputMLP(cfg), TwoForcesTask(cfg)
    else:
        raise ValueError(f"{checkpoint}: not a checkpoint trained by ckptlens (metadata 'ckptlens_arch' is {arch!r})")
    model.load_state_dict(load_file(str(checkpoint)))
    model.to(device or "cpu").eval()
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


def activation_gradients(model, inputs, module_names, n_outputs: int) -> dict[str, np.ndarray]:
    """Per-sample gradient of each model output with respect to each named module's output:
    {"<module>|out<k>": [n_samples, features]} (the input of the gradient-PCA metrics).
    Samples are independent, so the gradient of the summed output gives every sample's row."""
    import torch

    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    hooks = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out)) for n in module_names]
    try:
        out = model(inputs)
    finally:
        for h in hooks:
            h.remove()
    hidden = [captured[n] for n in module_names]
    result = {}
    for k in range(n_outputs):
        grads = torch.autograd.grad(out[:, k].sum(), hidden, retain_graph=k < n_outputs - 1)
        for n, g in zip(module_names, grads):
            result[f"{n}|out{k}"] = g.detach().float().reshape(g.shape[0], -1).cpu().numpy()
    return result


def extract_model(checkpoint, targets: dict, probe: dict, outputs: dict[str, str], device=None) -> None:
    """Activations, gradients and/or activation gradients (whichever ``outputs`` names) of one
    checkpoint, from one model load."""
    import torch

    from .devices import pick_device

    torch.manual_seed(0)
    dev = device or pick_device()
    model, task = load_toy(checkpoint, dev)
    module_names = [n for n, _ in model.named_modules() if n]
    param_owners = [n[: -len(".weight")] for n, _ in model.named_parameters() if n.endswith(".weight")]
    batches = [b.to(dev) for b in task.probe_batches(probe["n_batches"], probe["batch_size"], probe["seed"])]
    meta = {"source": str(checkpoint), "probe": json.dumps(probe)}

    def chosen(kind, names):
        found = select(targets.get(kind, []), names)
        if not found:
            raise ValueError(f"{checkpoint}: no module matches targets.{kind} {targets.get(kind)}")
        return found

    if "activations" in outputs:
        acts = activations(model, task.inputs(batches[0]), chosen("activations", module_names))
        save_tensors(acts, outputs["activations"], meta)
    if "gradients" in outputs:
        grads = gradients(model, batches, task.loss, chosen("gradients", param_owners))
        save_tensors(grads, outputs["gradients"], meta)
    if "activation_gradients" in outputs:
        n_out = getattr(task, "n_outputs", None)
        if not n_out:
            raise ValueError(f"{checkpoint}: activation gradients need a model with several outputs (the two-forces MLP)")
        mods = chosen("activation_gradients", module_names)
        save_tensors(activation_gradients(model, task.inputs(batches[0]), mods, n_out), outputs["activation_gradients"], meta)
