"""PCA of per-sample gradients of several model outputs with respect to a hidden layer's
activations (the multi-task study). Family ``gradient_pca``, model scope,
``needs="activation_gradients"``.

Input layout (the ``activation_gradients`` extraction): one array per (layer, output) under the key
``"<layer>|<output>"`` — e.g. ``"blocks.3.mlp|out0"`` and ``"blocks.3.mlp|out1"`` — of shape
[n_samples, d]: row i is ∂(output on probe sample i)/∂(activation of <layer> on sample i), flattened
(any trailing dimensions are flattened; a scalar output per sample, e.g. the per-sample loss of
each task head, summed over positions for sequence models). All outputs of a layer must use the
same samples in the same order. The layer part is everything before the last "|"; outputs are
taken in sorted name order.

Registered metrics (no reference), for every layer and output:
    gradient_pca_evr       (n_components=3) explained-variance ratios of the top principal
                           components of the centred gradients (sklearn's PCA convention), label
                           ``"<layer>|<output>"``, rows ``.pc1`` … ``.pc{n}``
    gradient_pca_variance  (n_components=3) the explained variances themselves (ddof = 1)
    gradient_pca_cosine    (n_components=3) for every pair of outputs of a layer (label
                           ``"<layer>|<a>~<layer>|<b>"``): |cos| between the i-th principal
                           component of a and the i-th of b, rows ``.pc{i}`` (absolute value: the
                           sign of a component is arbitrary)

A component beyond the rank of the centred gradients explains 0 (its direction is undefined, so its
cosine is NaN); all-constant gradients give NaN ratios (nothing to explain), with a warning.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

from ..store.layers import pair_label
from ..store.tensors import OUTPUT_SEP
from ._common import check_positive_int, pc_suffixes
from .registry import family, metric


def pca_top(g: np.ndarray, n_components: int) -> dict:
    """Top principal components of the rows of ``g`` [n, d] (centred, as sklearn's PCA).

    Returns ``variance`` [n_components] (ddof = 1), ``ratio`` (of the total variance),
    ``components`` [n_components, d] (unit rows; NaN beyond the rank). Uses the eigen-decomposition
    of the smaller Gram matrix (d×d or n×n), computing only the top eigenpairs."""
    g = np.asarray(g, dtype=np.float64).reshape(len(g), -1)
    n, d = g.shape
    x = g - g.mean(axis=0, keepdims=True)
    small = min(n, d)
    k = min(int(n_components), small)
    gram = x.T @ x if d <= n else x @ x.T
    total = float(np.trace(gram))
    variance = np.zeros(int(n_components))
    components = np.full((int(n_components), d), np.nan)
    if k > 0:
        from scipy.linalg import eigh  # here, not at import: every metric job imports this module

        ev, vec = eigh(gram, subset_by_index=[small - k, small - 1])
        ev, vec = np.clip(ev[::-1], 0.0, None), vec[:, ::-1]
        if d > n:  # vec are left singular vectors: components = xᵀu / σ
            with np.errstate(all="ignore"):
                vec = (x.T @ vec) / np.sqrt(ev)[None, :]
        tol = max(n, d) * np.finfo(np.float64).eps * (ev[0] if ev.size else 0.0)
        keep = ev > tol
        components[:k][keep] = vec.T[keep]
        variance[:k] = np.where(keep, ev, 0.0) / max(n - 1, 1)
    ratio = variance * max(n - 1, 1) / total if total > 0 else np.full(int(n_components), np.nan)
    return {"variance": variance, "ratio": ratio, "components": components}


def gradient_pca(grad_a: np.ndarray, grad_b: np.ndarray, n_components: int = 3) -> dict:
    """PCA of the per-sample gradients of two outputs w.r.t. the same hidden activations.

    ``grad_a``, ``grad_b``: [n_samples, d]. Returns ``evr_a``, ``evr_b`` (explained-variance ratios
    of the top ``n_components``), ``variance_a``, ``variance_b``, ``components_a``, ``components_b``
    and ``cosine`` = |⟨component i of a, component i of b⟩| for each i."""
    pa, pb = pca_top(grad_a, n_components), pca_top(grad_b, n_components)
    if pa["components"].shape[1] != pb["components"].shape[1]:
        raise ValueError("the two outputs' gradients must have the same width")
    cosine = np.abs(np.einsum("ij,ij->i", pa["components"], pb["components"]))
    return {
        "evr_a": pa["ratio"],
        "evr_b": pb["ratio"],
        "variance_a": pa["variance"],
        "variance_b": pb["variance"],
        "components_a": pa["components"],
        "components_b": pb["components"],
        "cosine": cosine,
    }


@family("gradient_pca", needs="activation_gradients", scope="model")
class GradientPCAContext:
    """Per-sample output gradients grouped by layer; one PCA per (layer, output) for all metrics."""

    def __init__(self, store):
        self.store = store
        self.layers: dict[str, list[str]] = {}
        for key in store:
            layer, sep, _ = key.rpartition(OUTPUT_SEP)
            if sep:
                self.layers.setdefault(layer, []).append(key)
        self.layers = {layer: sorted(keys) for layer, keys in self.layers.items()}
        self._pca: dict[tuple[str, int], dict | None] = {}

    def pca(self, key: str, n_components: int) -> dict | None:
        if (key, n_components) not in self._pca:
            g = self.store[key]
            self._pca[(key, n_components)] = None if g is None else pca_top(g, n_components)
        return self._pca[(key, n_components)]


def _check(name):
    return lambda params: check_positive_int(name, "n_components", params["n_components"])


def _per_output(ctx: GradientPCAContext, n_components: int, field: str) -> dict:
    out = {}
    for keys in ctx.layers.values():
        for key in keys:
            p = ctx.pca(key, int(n_components))
            values = p[field] if p is not None else np.full(int(n_components), math.nan)
            out[key] = {f"pc{i + 1}": float(v) for i, v in enumerate(values)}
    return out


@metric(
    "gradient_pca_evr",
    label="explained variance ratio of gradient PCs",
    validate=_check("gradient_pca_evr"),
    outputs=pc_suffixes,
)
def gradient_pca_evr(ctx: GradientPCAContext, n_components=3) -> dict:
    """Explained-variance ratios of the top PCA components of each output's per-sample gradients."""
    return _per_output(ctx, n_components, "ratio")


@metric(
    "gradient_pca_variance",
    label="explained variance of gradient PCs",
    validate=_check("gradient_pca_variance"),
    outputs=pc_suffixes,
)
def gradient_pca_variance(ctx: GradientPCAContext, n_components=3) -> dict:
    """Explained variance of the top PCA components of each output's per-sample gradients."""
    return _per_output(ctx, n_components, "variance")


@metric(
    "gradient_pca_cosine",
    label="|cos| between the outputs' gradient PCs",
    validate=_check("gradient_pca_cosine"),
    outputs=pc_suffixes,
)
def gradient_pca_cosine(ctx: GradientPCAContext, n_components=3) -> dict:
    """|cos| between the i-th gradient PCA components of two outputs of the same layer."""
    out = {}
    for keys in ctx.layers.values():
        for a, b in combinations(keys, 2):
            pa, pb = ctx.pca(a, int(n_components)), ctx.pca(b, int(n_components))
            if pa is None or pb is None or pa["components"].shape[1] != pb["components"].shape[1]:
                cos = np.full(int(n_components), math.nan)
            else:
                cos = np.abs(np.einsum("ij,ij->i", pa["components"], pb["components"]))
            out[pair_label(a, b)] = {f"pc{i + 1}": float(c) for i, c in enumerate(cos)}
    return out
