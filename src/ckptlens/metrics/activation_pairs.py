"""Metrics between consecutive layers' activations (family ``activation_pairs``, model scope,
input: activations [n_samples, features] per module, the same probe samples for every module).

Consecutive layers: the activation modules in depth order (:func:`ckptlens.store.layers.layer_order`),
each paired with the next. Labels are
``"<layer i>~<layer i+1>"``.

Linearity score (Razzhigaev et al. 2024, "Your Transformer is Secretly Linear", as their
``procrustes_similarity``): X, Y = the two layers' outputs, each centred per feature and divided by
its Frobenius norm; A = argmin ‖XA − Y‖_F (least squares, minimum-norm for rank-deficient X);
score = 1 − ‖XA − Y‖²_F ∈ [0, 1]. With d ≥ n − 1 any Y is fitted exactly (score 1): use more probe
samples than features. Computed from one thin SVD of X per pair (the residual is Y minus its
projection onto X's column space), shared by ``linearity_score`` and ``linearity_per_sample``.

Registered metrics (no reference):
    linearity_score              1 − ‖XA − Y‖²_F
    linearity_score_no_residual  the same with Y − X (raw outputs, before centring) in place of Y
                                 ("without the residual stream"; needs equal widths, else NaN)
    linearity_per_sample         (quantiles=[0.05, 0.25, 0.5, 0.75, 0.95], scale="n") per-sample
                                 scores 1 − c·‖A x_i − y_i‖² (x_i, y_i rows of the normalised X, Y, A
                                 the global fit) summarised as ``.mean`` and ``.p5`` … ``.p95``.
                                 scale="n": c = n, so the mean equals linearity_score and a sample
                                 fitted as well as average scores it; scale="none": c = 1, literally
                                 the study's per-sample loop (values within O(1/n) of 1).
    consecutive_cosine           (quantiles=…) cosine between the raw output vectors of the two
                                 layers per sample, as ``.mean`` and quantiles; samples where either
                                 vector is zero are left out (NaN if none is left; widths must match).

Constant activations (zero Frobenius norm after centring) give NaN with a warning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..store.layers import layer_order, pair_label
from ._common import check_choice, check_quantiles, quantile_key, summarize
from .registry import family, metric

DEFAULT_QUANTILES = [0.05, 0.25, 0.5, 0.75, 0.95]


def _summary_outputs(params) -> list[str]:
    """The suffixes of :func:`summarize`: mean and one per quantile."""
    return ["mean"] + [quantile_key(q) for q in params["quantiles"]]


def _normalised(x: np.ndarray) -> np.ndarray | None:
    x = x - x.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x)
    return None if norm == 0 else x / norm


def linear_fit_residuals(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """Per-sample squared residuals ‖A x_i − y_i‖² of the least-squares fit of normalised Y by
    normalised X (see the module docstring); None if X or Y is constant."""
    xn, yn = _normalised(x), _normalised(y)
    if xn is None or yn is None:
        return None
    u, s, _ = np.linalg.svd(xn, full_matrices=False)
    tol = max(xn.shape) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    u = u[:, s > tol]
    resid = yn - u @ (u.T @ yn)
    return np.einsum("ij,ij->i", resid, resid)


@family("activation_pairs", needs="activations", scope="model")
class LayerPairContext:
    """The consecutive pairs of activation modules; per-pair fits cached for all metrics."""

    def __init__(self, store):
        self.store = store
        self.order = layer_order(list(store))
        self.pairs = list(zip(self.order, self.order[1:]))
        self._loaded: dict[str, np.ndarray | None] = {}
        self._fits: dict[tuple, np.ndarray | None] = {}

    def load(self, name: str) -> np.ndarray | None:
        """float64 [n, features] of a module; keeps the two most recently read ones."""
        if name not in self._loaded:
            x = self.store[name]
            if len(self._loaded) >= 2:
                self._loaded.pop(next(iter(self._loaded)))
            self._loaded[name] = None if x is None else np.asarray(x, dtype=np.float64).reshape(x.shape[0], -1)
        return self._loaded[name]

    def _pair(self, a: str, b: str):
        x, y = self.load(a), self.load(b)
        if x is None or y is None or x.shape[0] != y.shape[0]:
            return None, None
        return x, y

    def residuals(self, a: str, b: str, without_residual: bool = False) -> np.ndarray | None:
        key = (a, b, without_residual)
        if key not in self._fits:
            x, y = self._pair(a, b)
            if x is None or (without_residual and x.shape != y.shape):
                self._fits[key] = None
            else:
                if x.shape[0] <= x.shape[1] + 1:
                    # centred X of rank n - 1 spans every centred Y: the score is 1 by construction
                    warnings.warn(
                        f"linearity {a} -> {b}: {x.shape[0]} probe samples for {x.shape[1]} features; "
                        "any map fits exactly (score 1): use more probe samples than features",
                        stacklevel=2,
                    )
                self._fits[key] = linear_fit_residuals(x, y - x if without_residual else y)
        return self._fits[key]


def _check(name, with_scale=False):
    def check(params):
        check_quantiles(name, params["quantiles"])
        if with_scale:
            check_choice(name, "scale", params["scale"], ("n", "none"))

    return check


@metric("linearity_score", label="linearity score")
def linearity_score(ctx: LayerPairContext) -> dict:
    """1 − ‖XA − Y‖²_F for centred, Frobenius-normalised consecutive layer outputs X, Y."""
    out = {}
    for a, b in ctx.pairs:
        r = ctx.residuals(a, b)
        out[pair_label(a, b)] = math.nan if r is None else 1.0 - float(r.sum())
    return out


@metric("linearity_score_no_residual", label="linearity score without the residual")
def linearity_score_no_residual(ctx: LayerPairContext) -> dict:
    """Linearity score of X against Y − X (the layer's contribution without the residual stream)."""
    out = {}
    for a, b in ctx.pairs:
        r = ctx.residuals(a, b, without_residual=True)
        out[pair_label(a, b)] = math.nan if r is None else 1.0 - float(r.sum())
    return out


@metric(
    "linearity_per_sample",
    label="per-sample linearity score",
    validate=_check("linearity_per_sample", with_scale=True),
    outputs=_summary_outputs,
)
def linearity_per_sample(ctx: LayerPairContext, quantiles=DEFAULT_QUANTILES, scale="n") -> dict:
    """Distribution over samples of 1 − c‖A x_i − y_i‖² (mean and quantiles)."""
    out = {}
    for a, b in ctx.pairs:
        r = ctx.residuals(a, b)
        if r is None:
            values = np.array([])
        else:
            values = 1.0 - (r.size if scale == "n" else 1) * r
        out[pair_label(a, b)] = summarize(values, quantiles)
    return out


def per_sample_cosine(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cosine of x_i and y_i for every row; NaN where either row is zero."""
    nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
    dots = np.einsum("ij,ij->i", x, y)
    with np.errstate(all="ignore"):
        return np.where((nx > 0) & (ny > 0), dots / (nx * ny), np.nan)


@metric(
    "consecutive_cosine",
    label="cosine of consecutive layers' outputs",
    validate=_check("consecutive_cosine"),
    outputs=_summary_outputs,
)
def consecutive_cosine(ctx: LayerPairContext, quantiles=DEFAULT_QUANTILES) -> dict:
    """Per-sample cosine similarity of consecutive layers' outputs (mean and quantiles)."""
    out = {}
    for a, b in ctx.pairs:
        x, y = ctx._pair(a, b)
        ok = x is not None and x.shape == y.shape
        out[pair_label(a, b)] = summarize(per_sample_cosine(x, y) if ok else np.array([]), quantiles)
    return out
