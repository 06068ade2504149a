"""Per-layer activation statistics (family ``activation_spectrum``, input: activations
[n_samples, features], higher-rank arrays flattened per sample).

Registered metrics (no reference):
    activation_norm     mean over samples of the Euclidean norm of the (uncentred) output vector
    activation_pca_evr  (n_components=5) explained-variance ratios of the top principal components
                        of the centred activations, as ``.pc1`` … ``.pc{n}`` (what
                        ``sklearn.decomposition.PCA().explained_variance_ratio_[:n]`` gives;
                        components beyond min(n_samples, features) explain 0). Constant
                        activations have no variance to explain: NaN, with a warning.

The covariance spectrum comes from the eigenvalues of the smaller of XᶜᵀXᶜ (features²) and
XᶜXᶜᵀ (samples²), one per layer.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ._common import check_positive_int, pc_suffixes
from .registry import family, metric


@family("activation_spectrum", needs="activations")
class ActivationStatsContext:
    """One layer's activations: per-sample norms (uncentred) and the centred data."""

    def __init__(self, x: np.ndarray):
        x = np.array(x, dtype=np.float64)
        x = x.reshape(x.shape[0], -1)
        self.row_norms = np.linalg.norm(x, axis=1)
        x -= x.mean(axis=0, keepdims=True)
        self.x = x

    @cached_property
    def covariance_eigenvalues(self) -> np.ndarray:
        """Eigenvalues of XᶜᵀXᶜ (unnormalised covariance), decreasing, clipped at 0."""
        x = self.x
        g = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
        ev = np.linalg.eigvalsh(g)[::-1]
        return np.clip(ev, 0.0, None)


@metric("activation_norm", label="mean activation norm", family="activation_spectrum")
def activation_norm(ctx: ActivationStatsContext) -> float:
    """Mean Euclidean norm of the layer's output vectors over the probe samples."""
    return float(ctx.row_norms.mean()) if ctx.row_norms.size else float("nan")


def _check_pca(params):
    check_positive_int("activation_pca_evr", "n_components", params["n_components"])


@metric(
    "activation_pca_evr",
    label="explained variance ratio of activation PCs",
    family="activation_spectrum",
    validate=_check_pca,
    outputs=pc_suffixes,
    n_components=5,
)
def activation_pca_evr(ctx: ActivationStatsContext, n_components=5) -> dict:
    """Explained-variance ratios of the top principal components of the layer's activations."""
    ev = ctx.covariance_eigenvalues
    total = ev.sum()
    ratios = np.zeros(int(n_components))
    m = min(len(ratios), ev.size)
    ratios[:m] = ev[:m] / total if total > 0 else np.nan
    if total <= 0:
        ratios[:] = np.nan
    return {f"pc{i + 1}": float(r) for i, r in enumerate(ratios)}
