"""Hook capture, one implementation for every model: what a forward pass gives at named modules,
and the gradients a loss gives to their weights or their outputs.

Modules are given as ``{name in the outputs: module name in the model}`` (a checkpoint names modules
as it was saved, the model built to run it may name them differently: see
:class:`ckptlens.extract.hf_model.HFModel`). Everything runs in eval mode (no dropout), so that a
value is a deterministic function of the weights and the probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch

from ..store.tensors import GRADIENT_SEP, OUTPUT_SEP


def _first_tensor(name: str, out) -> torch.Tensor:
    """A module's output tensor: itself, the first element of a tuple, or of a ModelOutput."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    elif hasattr(out, "to_tuple"):
        out = out.to_tuple()[0]
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"module {name}: its output is a {type(out).__name__}, not a tensor")
    return out


def _modules(model: torch.nn.Module, modules: Mapping[str, str]) -> dict[str, torch.nn.Module]:
    found = dict(model.named_modules())
    missing = [n for n in modules.values() if n not in found]
    if missing:
        raise ValueError(f"modules not found in the model: {missing}")
    return {name: found[m] for name, m in modules.items()}


def capture_outputs(
    model: torch.nn.Module, forward: Callable[[], object], modules: Mapping[str, str], mask: torch.Tensor | None = None
) -> dict[str, np.ndarray]:
    """The output of each module during ``forward()`` (no gradients), as float32
    [rows, features]: outputs with a [batch, position] layout matching ``mask`` keep only the
    positions where it is true (the real, non-padding tokens, so that the rows are the same tokens
    at every checkpoint); everything else is flattened over its leading dimensions."""
    with torch.no_grad(), capturing(model, modules, mask) as captured:
        forward()
    return captured


@contextmanager
def capturing(
    model: torch.nn.Module, modules: Mapping[str, str], mask: torch.Tensor | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """:func:`capture_outputs` of whatever forward runs inside the ``with`` block (a training
    loss's forward too: the outputs are detached), into the dict it yields."""
    captured: dict[str, np.ndarray] = {}

    def hook(name):
        def fn(_module, _inp, out):
            out = _first_tensor(name, out).detach().float().cpu()
            if mask is not None and out.dim() >= 3 and tuple(out.shape[:2]) == tuple(mask.shape):
                out = out[mask.cpu()]
            captured[name] = out.reshape(-1, out.shape[-1]).numpy()

        return fn

    hooks = [m.register_forward_hook(hook(name)) for name, m in _modules(model, modules).items()]
    try:
        yield captured
    finally:
        for h in hooks:
            h.remove()


def weight_gradients(
    model: torch.nn.Module,
    losses: Callable[[int], torch.Tensor],
    n_batches: int,
    modules: Mapping[str, str],
    transposed: Callable[[str], bool] = lambda m: False,
) -> dict[str, np.ndarray]:
    """``{"<name>#<i>": d loss_i / d weight}`` of each module's ``weight`` (or the parameter of that
    name) for every probe batch i; ``losses(i)`` computes loss i. Only these weights require a
    gradient meanwhile. Weights stored [in, out] (``transposed(module)``) get [out, in] gradients.
    Holds every batch's gradient: the extraction streams them instead (:func:`raw_gradients`)."""
    return dict(raw_gradients(model, losses, n_batches, modules, transposed))


def raw_gradients(
    model: torch.nn.Module,
    losses: Callable[[int], torch.Tensor],
    n_batches: int,
    modules: Mapping[str, str],
    transposed: Callable[[str], bool] = lambda m: False,
    each: Callable[[Mapping[str, torch.Tensor]], None] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`weight_gradients` one array at a time, ``("<name>#<i>", float32 gradient)``, each
    batch's as its backward finishes (for :func:`ckptlens.store.tensors.write_tensors`, which holds
    one). ``each(grads)``, if given, sees every batch's ``{name: gradient}`` on the device first (the
    gradient statistics)."""
    from .gradients import backward_passes, parameter_keys

    keys = parameter_keys(model, modules)
    for i, grads in enumerate(backward_passes(model, losses, n_batches, keys)):
        if each is not None:
            each(grads)
        for name, key in keys.items():
            g = grads[name].float().cpu()
            if transposed(key.rpartition(".")[0]):
                g = g.T
            yield f"{name}{GRADIENT_SEP}{i}", g.contiguous().numpy()
            del g
        del grads  # this batch's gradients are not kept alive through the next backward


def output_gradients(
    model: torch.nn.Module, forward: Callable[[], torch.Tensor], modules: Mapping[str, str], n_outputs: int
) -> dict[str, np.ndarray]:
    """Per-sample gradient of each model output with respect to each module's output:
    ``{"<name>|out<k>": [n_samples, features]}``. Samples are independent, so the gradient of the
    summed output gives every sample's row."""
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda _m, _i, out, n=name: captured.__setitem__(n, out))
        for name, m in _modules(model, modules).items()
    ]
    try:
        out = forward()
    finally:
        for h in hooks:
            h.remove()
    names = list(modules)
    hidden = [captured[n] for n in names]
    result = {}
    for k in range(n_outputs):
        grads = torch.autograd.grad(out[:, k].sum(), hidden, retain_graph=k < n_outputs - 1)
        for n, g in zip(names, grads):
            result[f"{n}{OUTPUT_SEP}out{k}"] = g.detach().float().reshape(g.shape[0], -1).cpu().numpy()
    return result


def capture_attentions(
    patterns: Callable[[], Mapping[str, torch.Tensor]], mask: torch.Tensor | None = None
) -> dict[str, np.ndarray]:
    """Attention probabilities of one forward pass (``patterns()`` runs it and returns
    ``{module: [batch, heads, query, key]}``) as float32 [rows, heads, keys]: one row per real query
    position (``mask`` [batch, position] true; every position without one). Padding queries are
    left out: a model gives them a uniform row that would read as a real, maximally spread one."""
    with torch.no_grad():
        found = patterns()
    out = {}
    for name, p in found.items():
        p = p.detach().float().cpu()  # [b, h, q, k]
        p = p.permute(0, 2, 1, 3)  # [b, q, h, k]
        p = p[mask.cpu()] if mask is not None else p.reshape(-1, p.shape[2], p.shape[3])
        out[name] = p.contiguous().numpy()
    return out
