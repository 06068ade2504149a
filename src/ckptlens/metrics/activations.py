"""Activation-similarity metrics on a fixed probe batch (activations as [n_samples, features])."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .registry import family, metric


@family("activation_similarity", needs="activations")
class ActivationContext:
    """One layer's activations on the probe batch, centred per feature."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        self.x = x - x.mean(axis=0, keepdims=True)

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @cached_property
    def gram(self) -> np.ndarray:
        return self.x @ self.x.T


def linear_cka_features(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of centred x [n, d1], y [n, d2] in feature space (cheap when n >> d)."""
    cross = np.linalg.norm(x.T @ y) ** 2
    return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def linear_cka_gram(kx: np.ndarray, ky: np.ndarray) -> float:
    """Linear CKA from the Gram matrices of centred inputs (cheap when d >> n)."""
    return float(np.sum(kx * ky) / (np.linalg.norm(kx) * np.linalg.norm(ky)))


def linear_cka(a: ActivationContext, b: ActivationContext) -> float:
    """Linear CKA (Kornblith et al., 2019), in whichever form is cheaper for the shapes."""
    if a.n != b.n:
        raise ValueError(f"CKA needs the same probe samples: {a.n} vs {b.n} rows")
    d = a.x.shape[1] + b.x.shape[1]
    if a.n * a.n < d * d:
        return linear_cka_gram(a.gram, b.gram)
    return linear_cka_features(a.x, b.x)


@metric("cka_to_final", family="activation_similarity", reference="final")
def cka_to_final(ctx: ActivationContext, ref: ActivationContext) -> float:
    """Linear CKA between the layer's activations and those of the final checkpoint."""
    return linear_cka(ctx, ref)
