"""Gradient metrics over the fixed probe batches (gradients stacked as [n_batches, ...]).

Registered metrics (family ``gradient``, no reference):
    gradient_norm     mean Frobenius norm of the layer's weight gradient over the probe batches
    gradient_cosine   mean cosine of the gradients of consecutive probe batches
    gradient_snr      (form="norm", debiased=False) signal-to-noise ratio across the batches:
                      ‖ḡ‖²/tr Σ (or the per-parameter mean of ḡ_j²/s_j², form="parameter")
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ._common import check_bool, check_choice
from .registry import Degenerate, family, metric


@family("gradient", needs="gradients")
class GradientContext:
    """The gradients of one layer's weight on each probe batch, flattened to [n_batches, n_params]."""

    def __init__(self, g: np.ndarray):
        g = np.asarray(g, dtype=np.float64)
        self.g = g.reshape(g.shape[0], -1)

    @cached_property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.g, axis=1)


@metric("gradient_norm", label="gradient norm ‖∇W‖_F")
def gradient_norm(ctx: GradientContext) -> float:
    """Mean Frobenius norm of the layer's weight gradient over the probe batches."""
    return float(ctx.norms.mean())


@metric("gradient_cosine", label="cosine of probe-batch gradients")
def gradient_cosine(ctx: GradientContext) -> float:
    """Mean cosine similarity of the gradients of consecutive probe batches."""
    if ctx.g.shape[0] < 2:
        return float("nan")  # needs two batches; recorded as NaN with a warning
    dots = np.einsum("ij,ij->i", ctx.g[:-1], ctx.g[1:])
    denom = ctx.norms[:-1] * ctx.norms[1:]
    return float(np.mean(dots / denom))


# ---------------------------------------------------------------- signal-to-noise ratio


def _check_snr(params):
    check_choice("gradient_snr", "form", params["form"], ("norm", "parameter"))
    check_bool("gradient_snr", "debiased", params["debiased"])


@metric("gradient_snr", label="gradient signal-to-noise ratio", validate=_check_snr)
def gradient_snr(ctx: GradientContext, form="norm", debiased=False) -> float:
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
    g = ctx.g
    k = g.shape[0]
    if k < 2:
        raise Degenerate(f"{k} probe batch(es): a gradient SNR needs at least 2")
    mean = g.mean(axis=0)
    if form == "norm":
        signal = float(np.dot(mean, mean))
        noise = sum(float(np.dot(r, r)) for r in (row - mean for row in g)) / (k - 1)
        if noise == 0:
            raise Degenerate("all-zero gradients" if signal == 0 else "identical gradients on every batch: no noise")
        snr = signal / noise
    else:
        var = g.var(axis=0, ddof=1)
        used = (var > 0) | (mean != 0)
        if not used.any():
            raise Degenerate("all-zero gradients")
        if np.any(var[used] == 0):
            n0 = int(np.sum(var[used] == 0))
            raise Degenerate(f"{n0} parameters have the same nonzero gradient on every batch: their SNR is infinite")
        snr = float(np.mean(mean[used] ** 2 / var[used]))
    return snr - 1.0 / k if debiased else snr
