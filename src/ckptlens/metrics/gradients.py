"""Gradient metrics over the fixed probe batches (gradients stacked as [n_batches, ...])."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .registry import family, metric


@family("gradient", needs="gradients")
class GradientContext:
    """The gradients of one layer's weight on each probe batch, flattened to [n_batches, n_params]."""

    def __init__(self, g: np.ndarray):
        g = np.asarray(g, dtype=np.float64)
        self.g = g.reshape(g.shape[0], -1)

    @cached_property
    def norms(self) -> np.ndarray:
        return np.linalg.norm(self.g, axis=1)


@metric("gradient_norm", label="gradient norm ‖∇W‖_F", family="gradient")
def gradient_norm(ctx: GradientContext) -> float:
    """Mean Frobenius norm of the layer's weight gradient over the probe batches."""
    return float(ctx.norms.mean())


@metric("gradient_cosine", label="cosine of probe-batch gradients", family="gradient")
def gradient_cosine(ctx: GradientContext) -> float:
    """Mean cosine similarity of the gradients of consecutive probe batches."""
    if ctx.g.shape[0] < 2:
        return float("nan")  # needs two batches; recorded as NaN with a warning
    dots = np.einsum("ij,ij->i", ctx.g[:-1], ctx.g[1:])
    denom = ctx.norms[:-1] * ctx.norms[1:]
    return float(np.mean(dots / denom))
