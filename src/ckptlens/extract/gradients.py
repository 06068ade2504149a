"""Weight gradients of the probe batches' losses, streamed: one backward per batch, and after each
what the enabled metrics need of it — its sufficient statistics (:class:`GradientStatistics`, the
``gradient_stats`` extraction) and/or the raw gradient, handed on at once (the ``gradients``
extraction, for a metric that needs every batch's gradient). Nothing holds the K gradients.

Memory: besides the model's own ``.grad`` of the target weights, the statistics keep at most three
gradient-sized buffers whatever K is: the previous batch's gradient (``dot``; the model's own
``.grad`` tensor, kept rather than copied), the running mean (``mean``, ``variance``) and the
running sum of squared deviations per parameter (``variance``), the last two in
:func:`accumulator_dtype` on the model's device. The norm and the dot are summed block by block
in that dtype, without a gradient-sized copy. Everything is computed on that device; only the
statistics (a few numbers a layer) come back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from ..store.tensors import GRADIENT_STATISTICS


def accumulator_dtype(device) -> torch.dtype:
    """float64 where the device has it (CPU, CUDA), else float32 (Apple's MPS)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def parameter_keys(model: torch.nn.Module, modules: Mapping[str, str]) -> dict[str, str]:
    """``{name in the outputs: parameter name}``: each module's ``weight`` (or the parameter of that name)."""
    params = dict(model.named_parameters())
    keys = {}
    for name, m in modules.items():
        key = f"{m}.weight" if f"{m}.weight" in params else m
        if key not in params:
            raise ValueError(f"module {name} has no weight parameter to take a gradient of")
        keys[name] = key
    return keys


def backward_passes(
    model: torch.nn.Module, losses: Callable[[int], torch.Tensor], n_batches: int, keys: Mapping[str, str]
) -> Iterator[dict[str, torch.Tensor]]:
    """One backward of ``losses(i)`` per probe batch, in eval mode, with only the parameters
    ``keys`` names requiring a gradient; yields ``{name: gradient}`` after each (the parameters'
    own ``.grad``: a consumer may keep one, the next backward gets a new tensor)."""
    params = dict(model.named_parameters())
    wanted = set(keys.values())
    old = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in wanted)
    model.eval()
    try:
        for i in range(n_batches):
            model.zero_grad(set_to_none=True)
            losses(i).backward()
            grads = {}
            for name, key in keys.items():
                g = params[key].grad
                if g is None:
                    raise ValueError(f"module {name} gets no gradient from the loss")
                grads[name] = g.detach()
            yield grads
            del grads
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(old[n])


#: elements per block of :func:`_norm_sq_and_dot` on the CPU: the two blocks' float64 copies
#: (1 MiB) stay in cache, where a whole layer's copy (134 MB at Pythia-1.4B's MLP) would go out to
#: memory and back: half the time of converting whole layers at Pythia-160M's shapes
CPU_BLOCK = 1 << 16
#: on an accelerator, larger blocks: each is a few kernel launches
DEVICE_BLOCK = 1 << 24


def _norm_sq_and_dot(g: torch.Tensor, prev: torch.Tensor | None, dtype: torch.dtype):
    """‖g‖² and (when ``prev`` is given) g·prev of two flat gradients, each block converted to
    ``dtype`` (exactly: float16/bfloat16/float32 → float64) and summed there; no gradient-sized
    copy is made. Equal to the whole-vector sums up to summation order (≈1e-16 relative)."""
    block = CPU_BLOCK if g.device.type == "cpu" else DEVICE_BLOCK
    norm_sq = torch.zeros((), dtype=dtype, device=g.device)
    dot = None if prev is None else torch.zeros((), dtype=dtype, device=g.device)
    for start in range(0, g.numel(), block):
        x = g[start : start + block].to(dtype)
        norm_sq += torch.dot(x, x)
        if dot is not None:
            dot += torch.dot(prev[start : start + block].to(dtype), x)
    return norm_sq, dot


class GradientStatistics:
    """Sufficient statistics of each layer's weight gradient over the probe batches, updated with
    :meth:`update` as each backward finishes; :meth:`result` gives the ``gradient_stats`` arrays
    (:data:`ckptlens.store.tensors.GRADIENT_STATISTICS`) of the ``statistics`` asked for.

    The mean and the per-parameter sum of squared deviations follow Welford: with δ = g_k − ḡ_{k−1},
    ḡ_k = ḡ_{k−1} + δ/k and M2 += δ ⊙ (g_k − ḡ_k), which stays exact where a sum of squares minus
    K ḡ² would cancel (gradients that agree closely). Without ``variance`` only their sum over the
    parameters is kept (a number a layer, no M2 buffer)."""

    def __init__(self, statistics: Iterable[str] | None = None, dtype: torch.dtype = torch.float64):
        stats = set(GRADIENT_STATISTICS) if statistics is None else set(statistics)
        unknown = sorted(stats - set(GRADIENT_STATISTICS))
        if unknown:
            raise ValueError(f"unknown gradient statistics {unknown} (known: {', '.join(GRADIENT_STATISTICS)})")
        self.statistics = [s for s in GRADIENT_STATISTICS if s in stats]
        self.dtype = dtype
        self.k = 0
        self._norms: dict[str, list[torch.Tensor]] = {}
        self._dots: dict[str, list[torch.Tensor]] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._mean: dict[str, torch.Tensor] = {}
        self._m2: dict[str, torch.Tensor] = {}
        self._dev: dict[str, torch.Tensor] = {}  # Σ_k ‖g_k − ḡ‖² without the per-parameter M2

    def buffers(self) -> list[torch.Tensor]:
        """The gradient-sized tensors held between batches (for the memory tests)."""
        return [*self._prev.values(), *self._mean.values(), *self._m2.values()]

    @torch.no_grad()
    def update(self, grads: Mapping[str, torch.Tensor]) -> None:
        """One batch's gradients ``{layer: gradient}`` (any shape, any float dtype)."""
        self.k += 1
        k, want = self.k, self.statistics
        for name, g in grads.items():
            flat = g.reshape(-1)
            if "norm" in want or "dot" in want:
                prev = self._prev.get(name) if "dot" in want else None
                norm_sq, dot = _norm_sq_and_dot(flat, prev, self.dtype)
                if "norm" in want:
                    self._norms.setdefault(name, []).append(norm_sq.sqrt())
                if dot is not None:
                    self._dots.setdefault(name, []).append(dot)
                if "dot" in want:
                    self._prev[name] = flat  # the model's own .grad: the next backward makes a new one
            if "mean" in want or "variance" in want:
                x = flat.to(self.dtype)  # a per-layer temporary (no copy when already in self.dtype)
                if k == 1:
                    self._mean[name] = x.clone()
                    if "variance" in want:
                        self._m2[name] = torch.zeros_like(x)
                    else:
                        self._dev[name] = torch.zeros((), dtype=self.dtype, device=x.device)
                    continue
                mean = self._mean[name]
                delta = x - mean
                mean.add_(delta, alpha=1.0 / k)
                if "variance" in want:
                    self._m2[name].addcmul_(delta, x - mean)
                else:
                    self._dev[name] += torch.dot(delta, x - mean)
                del delta

    @torch.no_grad()
    def result(self) -> dict[str, np.ndarray]:
        """``{"<layer>#<array>": float64 array}`` (see the module docstring); the buffers are freed."""
        from ..store.tensors import GRADIENT_SEP

        def arr(values) -> np.ndarray:
            if not values:
                return np.zeros(0, dtype=np.float64)
            return torch.stack(values).to(torch.float64).cpu().numpy()

        out: dict[str, np.ndarray] = {}
        names = list(dict.fromkeys([*self._norms, *self._prev, *self._mean]))
        for name in names:
            key = f"{name}{GRADIENT_SEP}"
            if "norm" in self.statistics:
                out[key + "norm"] = arr(self._norms[name])
            if "dot" in self.statistics:
                out[key + "dot"] = arr(self._dots.get(name, []))
            if name in self._mean:
                mean = self._mean[name]
                dev = self._m2[name].sum() if name in self._m2 else self._dev[name]
                out[key + "mean_sq"] = arr([torch.dot(mean, mean)])
                out[key + "deviation_sq"] = arr([dev])
            if name in self._m2:
                out[key + "gsnr"] = self._gsnr(self._mean[name], self._m2[name])
        self._prev.clear()
        self._mean.clear()
        self._m2.clear()
        return out

    def _gsnr(self, mean: torch.Tensor, m2: torch.Tensor) -> np.ndarray:
        """(Σ ḡ_j²/s_j² over s_j² > 0, their number, the number with s_j² = 0 and ḡ_j ≠ 0)."""
        if self.k < 2:
            return np.zeros(3, dtype=np.float64)
        var = m2 / (self.k - 1)
        pos = var > 0
        ratio = torch.where(pos, mean * mean / torch.where(pos, var, torch.ones_like(var)), torch.zeros_like(var))
        zero_var = (~pos) & (mean != 0)
        return np.array(
            [float(ratio.sum()), float(pos.sum()), float(zero_var.sum())],
            dtype=np.float64,
        )
