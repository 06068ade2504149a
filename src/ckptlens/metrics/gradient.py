"""Gradient metrics of a layer's weight over the K fixed probe batches, from sufficient
statistics of the per-batch gradients g_k (flattened), never the K gradients themselves.

Registered metrics (family ``gradient``, no reference), and what each needs of the gradients:
    gradient_norm     mean Frobenius norm of the layer's weight gradient over the probe batches
                      — ‖g_k‖ for every k (statistic ``norm``)
    gradient_cosine   mean cosine of the gradients of consecutive probe batches
                      — ‖g_k‖ and ⟨g_{k−1}, g_k⟩ (``norm``, ``dot``)
    gradient_snr      (form="norm", debiased=False) signal-to-noise ratio across the batches:
                      ‖ḡ‖²/tr Σ — ‖ḡ‖² and Σ_k ‖g_k − ḡ‖² (``mean``: a running mean, one buffer);
                      form="parameter": the per-parameter mean of ḡ_j²/s_j² — ḡ_j and s_j² for
                      every parameter j, reduced to three numbers at the end (``variance``: the
                      running mean and Welford's running sum of squared deviations, two buffers)
The extraction keeps exactly those (``gradient_stats``, layout in
:data:`ckptlens.store.tensors.GRADIENT_STATISTICS`; which statistics: :func:`statistics`). The
context also takes the raw per-batch gradients ``{layer: [K, ...]}`` (a ``gradients`` extraction read
with ``group_gradients``, or arrays in a test) and computes the same statistics from them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..store.tensors import GRADIENT_SEP, GRADIENT_STATISTICS
from ._common import check_bool, check_choice
from .registry import Degenerate, family, metric, metric_warning

_ARRAYS = {a for arrays in GRADIENT_STATISTICS.values() for a in arrays}


def statistics(metrics: Mapping[str, Mapping]) -> list[str]:
    """The gradient statistics the enabled metrics ``{name: resolved params}`` read (``norm``
    always: it says K), in the order of :data:`~ckptlens.store.tensors.GRADIENT_STATISTICS`."""
    need = {"norm"}
    for name, params in metrics.items():
        if name == "gradient_cosine":
            need.add("dot")
        elif name == "gradient_snr":
            need.add("variance" if params.get("form") == "parameter" else "mean")
    return [s for s in GRADIENT_STATISTICS if s in need]


class _Missing(Exception):
    """A statistic the layer's input lacks or holds NaN/Inf in (warned where it was read)."""


class LayerGradients:
    """One layer's gradient statistics: read from a ``gradient_stats`` extraction (``arrays``:
    array name -> a getter giving the array, or None for NaN/Inf input) or computed from the raw
    gradients ``g`` [K, ...]."""

    def __init__(self, layer: str, arrays: Mapping | None = None, raw=None):
        self.layer = layer
        self._arrays = dict(arrays or {})
        self._raw = raw
        self._cache: dict[str, np.ndarray] = {}

    def _g(self) -> np.ndarray:
        g = self._raw()
        if g is None:
            raise _Missing
        g = np.asarray(g, dtype=np.float64)
        return g.reshape(g.shape[0], -1)

    def get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = self._compute(name) if self._raw is not None else self._read(name)
        return self._cache[name]

    def _read(self, name: str) -> np.ndarray:
        if name not in self._arrays:
            stat = next(s for s, arrays in GRADIENT_STATISTICS.items() if name in arrays)
            raise ValueError(
                f"layer {self.layer!r}: the gradient statistics lack {stat!r} (the extraction kept only what "
                "the metrics enabled then read: extract again)"
            )
        x = self._arrays[name]()
        if x is None:
            raise _Missing
        return np.asarray(x, dtype=np.float64).reshape(-1)

    def _compute(self, name: str) -> np.ndarray:
        """The statistics from the raw gradients, as the old full-gradient computation did."""
        g = self._g()
        if name == "norm":
            return np.linalg.norm(g, axis=1)
        if name == "dot":
            return np.einsum("ij,ij->i", g[:-1], g[1:])
        mean = g.mean(axis=0)
        if name == "mean_sq":
            return np.array([float(np.dot(mean, mean))])
        if name == "deviation_sq":
            return np.array([sum(float(np.dot(r, r)) for r in (row - mean for row in g))])
        if name == "gsnr":
            if g.shape[0] < 2:
                return np.zeros(3)
            var = g.var(axis=0, ddof=1)
            pos = var > 0
            return np.array(
                [float(np.sum(mean[pos] ** 2 / var[pos])), float(pos.sum()), float(np.sum(~pos & (mean != 0)))]
            )
        raise KeyError(name)

    @property
    def k(self) -> int:
        return int(self.get("norm").size)


@family("gradient", needs="gradient_stats", scope="model", statistics=statistics)
class GradientContext:
    """Every layer's gradient statistics (:class:`LayerGradients`) of one checkpoint: the keys
    ``"<layer>#<array>"`` of a ``gradient_stats`` extraction, or raw per-batch gradients
    ``"<layer>"`` -> [K, ...]."""

    def __init__(self, store):
        arrays: dict[str, dict] = {}
        self.layers: dict[str, LayerGradients] = {}
        for key in store:
            layer, sep, part = key.rpartition(GRADIENT_SEP)
            if sep and part in _ARRAYS:
                arrays.setdefault(layer, {})[part] = lambda key=key: store[key]
            else:
                self.layers[key] = LayerGradients(key, raw=lambda key=key: store[key])
        for layer, parts in arrays.items():
            self.layers[layer] = LayerGradients(layer, arrays=parts)


def _per_layer(ctx: GradientContext, fn) -> dict[str, float]:
    """``fn(layer statistics)`` on every layer; a layer whose value is undefined is NaN, warned."""
    out = {}
    for layer, lg in ctx.layers.items():
        try:
            out[layer] = fn(lg)
        except _Missing:  # NaN/Inf input: warned when read
            out[layer] = math.nan
        except Degenerate as exc:
            metric_warning(f"layer {layer!r}: undefined here ({exc})")
            out[layer] = math.nan
    return out


@metric("gradient_norm", label="gradient norm ‖∇W‖_F")
def gradient_norm(ctx: GradientContext) -> dict:
    """Mean Frobenius norm of the layer's weight gradient over the probe batches."""
    return _per_layer(ctx, lambda lg: float(lg.get("norm").mean()))


def _cosine(lg: LayerGradients) -> float:
    norms = lg.get("norm")
    if norms.size < 2:
        return float("nan")  # needs two batches; recorded as NaN with a warning
    return float(np.mean(lg.get("dot") / (norms[:-1] * norms[1:])))


@metric("gradient_cosine", label="cosine of probe-batch gradients")
def gradient_cosine(ctx: GradientContext) -> dict:
    """Mean cosine similarity of the gradients of consecutive probe batches."""
    return _per_layer(ctx, _cosine)


# ---------------------------------------------------------------- signal-to-noise ratio


def _check_snr(params):
    check_choice("gradient_snr", "form", params["form"], ("norm", "parameter"))
    check_bool("gradient_snr", "debiased", params["debiased"])


def _snr(lg: LayerGradients, form: str, debiased: bool) -> float:
    k = lg.k
    if k < 2:
        raise Degenerate(f"{k} probe batch(es): a gradient SNR needs at least 2")
    if form == "norm":
        signal = float(lg.get("mean_sq")[0])
        noise = float(lg.get("deviation_sq")[0]) / (k - 1)
        if noise == 0:
            raise Degenerate("all-zero gradients" if signal == 0 else "identical gradients on every batch: no noise")
        snr = signal / noise
    else:
        total, n_pos, n_zero = (float(v) for v in lg.get("gsnr"))
        if n_pos == 0 and n_zero == 0:
            raise Degenerate("all-zero gradients")
        if n_zero:
            raise Degenerate(
                f"{int(n_zero)} parameters have the same nonzero gradient on every batch: their SNR is infinite"
            )
        snr = total / n_pos
    return snr - 1.0 / k if debiased else snr


@metric("gradient_snr", label="gradient signal-to-noise ratio", validate=_check_snr)
def gradient_snr(ctx: GradientContext, form="norm", debiased=False) -> dict:
    """Signal-to-noise ratio of the layer's gradient across the K probe batches.

    With g_k the flattened gradient on batch k, ḡ = (1/K) Σ_k g_k:
      form="norm" (default): ‖ḡ‖² / V, V = (1/(K−1)) Σ_k ‖g_k − ḡ‖² the trace of the per-batch
        gradient covariance (unbiased): how much of the gradient is shared by the batches; 1/SNR
        is McCandlish et al. 2018's gradient noise scale in units of one probe batch.
      form="parameter": mean_j ḡ_j² / s_j², s_j² the unbiased variance of parameter j over the
        batches (Liu et al. 2020's GSNR, averaged over the layer's parameters; parameters with zero
        gradient on every batch are left out).
    debiased=True subtracts 1/K (E‖ḡ‖² = ‖E g‖² + tr Σ/K): an unbiased numerator, ≈ 0 for a
    layer whose batch gradients share nothing (it can then be slightly negative).
    The ratio depends on the probe batch size (the noise of a batch mean is Σ/B); per-batch, not
    per-sample, gradients: Liu et al.'s and Cockpit's per-sample GSNR is not what this measures.
    Fewer than 2 batches, an all-zero gradient, or identical gradients on every batch (no noise)
    are NaN with a warning."""
    return _per_layer(ctx, lambda lg: _snr(lg, form, debiased))
