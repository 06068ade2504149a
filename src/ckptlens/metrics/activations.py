"""Activation-similarity metrics on a fixed probe batch (activations as [n_samples, features]).

Registered metrics (family ``activation_similarity``):
    cka_to_final     linear CKA to the same layer at the final checkpoint     reference "final"
    cka_to_previous  ... at the previous checkpoint                           reference "previous"
    cka_to_initial   ... at the first checkpoint (step 0)                     reference "initial"

Linear CKA (Kornblith et al., 2019) = HSIC(K, L) / sqrt(HSIC(K, K)·HSIC(L, L)) with K = XXᵀ,
L = YYᵀ, HSIC(K, L) = tr(KHLH) (the 1/(n−1)² factors cancel), H = I − 11ᵀ/n. It is computed in
feature space, ‖XᶜᵀYᶜ‖²_F / (‖XᶜᵀXᶜ‖_F‖YᶜᵀYᶜ‖_F) (Xᶜ = centred X), when n² ≥ d² (n ≫ d), and from
the centred Gram matrices otherwise; both equal the HSIC form. Constant activations (a layer of
dead units) make the denominator 0: the value is NaN, with a warning (CKA is undefined there).
"""

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


@metric("cka_to_final", label="linear CKA to the final checkpoint", family="activation_similarity", reference="final")
def cka_to_final(ctx: ActivationContext, ref: ActivationContext) -> float:
    """Linear CKA between the layer's activations and those of the final checkpoint."""
    return linear_cka(ctx, ref)


@metric(
    "cka_to_previous",
    label="linear CKA to the previous checkpoint",
    family="activation_similarity",
    reference="previous",
)
def cka_to_previous(ctx: ActivationContext, ref: ActivationContext) -> float:
    """Linear CKA between the layer's activations and those of the previous checkpoint."""
    return linear_cka(ctx, ref)


@metric(
    "cka_to_initial", label="linear CKA to the initial checkpoint", family="activation_similarity", reference="initial"
)
def cka_to_initial(ctx: ActivationContext, ref: ActivationContext) -> float:
    """Linear CKA between the layer's activations and those of the first checkpoint (step 0)."""
    return linear_cka(ctx, ref)
