"""New weights drawn from the principal components of the task vectors of runs that share a base.

Runs fine-tuned from one base checkpoint θ_base (e.g. fine-tuning seeds) give, per layer (one
tensor of the checkpoint), task vectors τ_j = θ_j − θ_base, j = 1..n. Their PCA across the runs is
the one of :func:`ckptlens.task_vectors.pca.task_vector_pca` (centred across runs, variances with
ddof = 1, i.e. scikit-learn's ``PCA`` of the flattened task vectors): mean task vector τ̄,
orthonormal components pc_i and standard deviations σ_i (at most n − 1 of them are non-zero).
A new point in weight space is

    θ(z) = θ_base + τ̄ + Σ_i z_i · σ_i · pc_i                                        (per layer)

``z = 0`` gives the mean of the runs (θ_base + τ̄ = the plain average of the fine-tuned weights);
a *sample* draws z ~ N(0, scale² I) with a seeded generator, so that with scale = 1 the samples
have, per layer, the runs' empirical covariance Σ_i σ_i² pc_i pc_iᵀ.

How z is drawn across layers (``coupling``):

``joint`` (default) — one draw per sample for the whole model: w ~ N(0, scale² I_n) in *run space*
    (one number per fine-tuned run), and per layer z = Uᵀw, where U (n × k) holds the layer's
    principal directions in run space (the left singular vectors of the centred task-vector
    matrix; σ_i pc_i = X ᵀu_i / √(n−1)). Each layer's z is exactly N(0, scale² I_k), and in addition
    the layers are coupled the way the runs couple them: the joint distribution over all layers is
    the Gaussian with the empirical covariance of the *whole* task vectors across runs. With all
    components kept, θ = θ_base + Σ_j (1/n + (w_j − w̄)/√(n−1)) τ_j — the same random combination of
    the runs for every layer: a draw of "a new fine-tuning run" from the runs' Gaussian.
    Sharing z itself (the PC coordinates) across layers would not be this: the order and sign of
    each layer's components are arbitrary (a sign flip of pc_i in one layer would change the
    sample), and the i-th component of two layers are different directions in run space.
``independent`` — z drawn independently per layer (block-diagonal covariance: every layer has the
    runs' covariance, the layers are uncorrelated), for comparison.

Sample i depends only on (seed, i) (and the layer's name with ``independent``), not on the number
of samples or the order in which layers are read. Everything is lazy: the inputs are mappings
layer name -> array (such as :class:`ckptlens.store.tensors.TensorFile`), read one layer at a time, and the
fit keeps per layer only the n × n Gram matrix's eigenvectors — the components themselves are
never stored; a layer of a point is computed on access, in column chunks, as
θ_base + Σ_j a_j τ_j with run weights a (float64, returned in the base tensor's dtype).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..store.patterns import select

COUPLINGS = ("joint", "independent")
CHUNK = 1 << 20  # parameters per column chunk (float64 temporaries: n_runs × 8 MiB)
_RANK_TOL = 1e-12  # eigenvalues of the centred Gram below this × the largest are zero


@dataclass(frozen=True)
class LayerFit:
    """The task-vector PCA of one layer across n runs, in run space: ``loadings`` (n × k, unit
    columns, orthogonal to the all-ones vector) are the left singular vectors of the centred
    task-vector matrix X (n × n_params); ``sigma`` the standard deviations along the components
    (ddof = 1), so that σ_i · pc_i = Xᵀ u_i / √(n − 1)."""

    layer: str
    shape: tuple
    dtype: np.dtype
    loadings: np.ndarray
    sigma: np.ndarray
    total_variance: float  # the sum of every component's variance (the trace of the covariance)

    @property
    def n_components(self) -> int:
        return int(self.sigma.size)

    @property
    def explained_variance(self) -> np.ndarray:
        return self.sigma**2

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        if self.total_variance == 0:
            return np.zeros_like(self.sigma)
        return self.sigma**2 / self.total_variance


def _chunks(size: int, chunk: int) -> Iterator[slice]:
    for start in range(0, max(size, 1), chunk):
        yield slice(start, min(start + chunk, size))


def _flat(arr) -> np.ndarray:
    return np.asarray(arr).reshape(-1)


def fit_layer(
    base, finetuned: Sequence, n_components: int | None = None, *, layer: str = "", chunk: int = CHUNK
) -> LayerFit:
    """The PCA of one layer's task vectors across the runs (see :class:`LayerFit`): the centred
    n × n Gram matrix, accumulated over column chunks, and its eigendecomposition. ``n_components``
    (default all, n − 1) caps the components kept; components of zero variance are dropped.
    Signs: the largest-magnitude entry of each loading vector is positive (deterministic)."""
    base = np.asarray(base)
    n = len(finetuned)
    if n < 2:
        raise ValueError(f"layer {layer!r}: sampling from task vectors needs at least 2 fine-tuned runs, got {n}")
    b = _flat(base)
    fts = []
    for j, ft in enumerate(finetuned):
        ft = np.asarray(ft)
        if ft.shape != base.shape:
            raise ValueError(f"layer {layer!r}: fine-tuned run {j} has shape {ft.shape}, base {base.shape}")
        fts.append(_flat(ft))
    gram = np.zeros((n, n))
    for sl in _chunks(b.size, chunk):
        bb = b[sl].astype(np.float64)
        x = np.stack([f[sl].astype(np.float64) - bb for f in fts])
        if not np.isfinite(x).all():
            raise ValueError(f"layer {layer!r}: task vectors have NaN/Inf values; cannot sample from them")
        x -= x.mean(axis=0, keepdims=True)
        gram += x @ x.T
    ev, vec = np.linalg.eigh(gram)
    ev, vec = ev[::-1], vec[:, ::-1]
    ev = np.clip(ev, 0.0, None)
    keep = ev > _RANK_TOL * ev[0] if ev[0] > 0 else np.zeros(n, bool)
    k = int(keep.sum()) if n_components is None else min(int(n_components), int(keep.sum()))
    vec = vec[:, :k].copy()
    for i in range(k):  # sign convention: the largest-magnitude loading is positive
        if vec[np.argmax(np.abs(vec[:, i])), i] < 0:
            vec[:, i] *= -1
    return LayerFit(
        layer=layer,
        shape=tuple(base.shape),
        dtype=base.dtype,
        loadings=vec,
        sigma=np.sqrt(ev[:k] / (n - 1)),
        total_variance=float(ev.sum() / (n - 1)),
    )


def run_weights(fit: LayerFit, z) -> np.ndarray:
    """a (length n): the layer's point θ_base + τ̄ + Σ_i z_i σ_i pc_i equals θ_base + Σ_j a_j τ_j."""
    n = fit.loadings.shape[0]
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    if z.size != fit.n_components:
        raise ValueError(f"layer {fit.layer!r}: {z.size} coefficients for {fit.n_components} components")
    c = fit.loadings @ z / math.sqrt(n - 1) if fit.n_components else np.zeros(n)
    return 1.0 / n + c - c.mean()  # c ⟂ 1 up to rounding; the projection makes Σ a_j = 1 exact


def layer_point(base, finetuned: Sequence, fit: LayerFit, z, *, chunk: int = CHUNK) -> np.ndarray:
    """θ_base + τ̄ + Σ_i z_i σ_i pc_i for one layer, in float64, returned in the base's dtype."""
    a = run_weights(fit, z)
    base = np.asarray(base)
    b = _flat(base)
    fts = [_flat(f) for f in finetuned]
    out = np.empty(b.size, dtype=base.dtype)
    for sl in _chunks(b.size, chunk):
        bb = b[sl].astype(np.float64)
        acc = bb.copy()
        for aj, f in zip(a, fts):
            acc += aj * (f[sl].astype(np.float64) - bb)
        out[sl] = acc
    return out.reshape(base.shape)


def layer_components(base, finetuned: Sequence, fit: LayerFit) -> np.ndarray:
    """The unit principal components pc_i of one layer, (k, n_params) float64 (materialised: for
    inspection and tests; sampling never needs them)."""
    b = _flat(base).astype(np.float64)
    x = np.stack([_flat(f).astype(np.float64) - b for f in finetuned])
    x -= x.mean(axis=0, keepdims=True)
    n = x.shape[0]
    return (fit.loadings.T @ x) / (fit.sigma[:, None] * math.sqrt(n - 1))


def check_shared_base(base: Mapping, starts: Mapping[str, Mapping], layers=("**",)) -> dict[str, list[str]]:
    """{run: [layers whose start differs from the base]}: runs whose first checkpoint is not the base
    (e.g. fine-tuning seeds that drew their own classification head) have no task vector from it.
    Only runs with a differing layer are listed; layers the base lacks are ignored."""
    names = select(list(layers), list(base))
    out = {}
    for run, start in starts.items():
        have = set(start)  # iterating names reads no tensor (`in` on a plain Mapping would)
        diff = [k for k in names if k not in have or not np.array_equal(np.asarray(start[k]), np.asarray(base[k]))]
        if diff:
            out[run] = diff
    return out


class TaskVectorSampler:
    """Points in weight space from the task-vector PCA of ``finetuned`` runs around ``base``.

    ``base`` and each fine-tuned run: mappings layer name -> array, read lazily. ``finetuned``: a
    mapping run name -> weights, or a sequence (named ``run0``, ``run1``, ...). ``layers``: name
    patterns (``*`` within a dotted component, ``**`` across) of the base's tensors to sample;
    selected tensors that are not floating point (integer buffers) and every unselected tensor are
    the base's. Every point (:meth:`mean`, :meth:`sample`, :meth:`point`) is a lazy mapping with all
    of the base's names: a complete checkpoint. See the module docstring for the model and
    ``coupling``."""

    def __init__(
        self,
        base: Mapping,
        finetuned,
        *,
        layers=("**",),
        n_components: int | None = None,
        scale: float = 1.0,
        seed: int = 0,
        coupling: str = "joint",
        chunk: int = CHUNK,
    ):
        if isinstance(finetuned, Mapping):
            self.runs, self._ft = list(finetuned), list(finetuned.values())
        else:
            self._ft = list(finetuned)
            self.runs = [f"run{j}" for j in range(len(self._ft))]
        if len(self._ft) < 2:
            raise ValueError(f"sampling from task vectors needs at least 2 fine-tuned runs, got {len(self._ft)}")
        if coupling not in COUPLINGS:
            raise ValueError(f"coupling must be one of {COUPLINGS}, not {coupling!r}")
        if n_components is not None and int(n_components) < 1:
            raise ValueError(f"n_components must be a positive integer or None, not {n_components}")
        if not scale >= 0:
            raise ValueError(f"scale must be >= 0, not {scale}")
        self.base = base
        self.n_components = None if n_components is None else int(n_components)
        self.scale, self.seed, self.coupling, self.chunk = float(scale), int(seed), coupling, int(chunk)
        self.selected = select(list(layers), list(base))
        if not self.selected:
            raise ValueError(f"layer patterns {list(layers)} match none of the base's {len(base)} tensors")
        self._names = set(base)  # iterating names reads no tensor (`in` on a plain Mapping would)
        for run, ft in zip(self.runs, self._ft):
            have = set(ft)
            missing = [k for k in self.selected if k not in have]
            if missing:
                raise ValueError(f"fine-tuned run {run!r} has no layer {missing[0]!r} ({len(missing)} missing)")
        self._fits: dict[str, LayerFit | None] = {}

    @property
    def n_runs(self) -> int:
        return len(self._ft)

    def fit(self, layer: str) -> LayerFit | None:
        """The layer's PCA (cached; only the small run-space part is kept), or None when the layer
        is not sampled (unselected, or not floating point)."""
        if layer not in self._fits:
            if layer not in self.selected:
                self._fits[layer] = None
            else:
                b = np.asarray(self.base[layer])
                if not np.issubdtype(b.dtype, np.floating):
                    self._fits[layer] = None
                else:
                    self._fits[layer] = fit_layer(
                        b, [ft[layer] for ft in self._ft], self.n_components, layer=layer, chunk=self.chunk
                    )
        return self._fits[layer]

    def sampled_layers(self) -> list[str]:
        """The layers that are sampled (fits every selected layer: one pass over the data)."""
        return [k for k in self.selected if self.fit(k) is not None]

    def _max_components(self) -> int:
        return self.n_runs - 1 if self.n_components is None else min(self.n_components, self.n_runs - 1)

    def run_draw(self, sample: int) -> np.ndarray:
        """w ~ N(0, scale² I_n) of sample ``sample`` (the joint coupling's draw in run space)."""
        return np.random.default_rng([self.seed, int(sample)]).normal(0.0, self.scale, self.n_runs)

    def z(self, sample: int, layer: str) -> np.ndarray:
        """The layer's PC coordinates of sample ``sample`` (length: the layer's components)."""
        if int(sample) < 0:
            raise ValueError(f"sample index must be >= 0, not {sample}")
        fit = self.fit(layer)
        if fit is None:
            raise KeyError(f"layer {layer!r} is not sampled")
        if self.coupling == "joint":
            return fit.loadings.T @ self.run_draw(sample)
        rng = np.random.default_rng([self.seed, int(sample), zlib.crc32(layer.encode())])
        return rng.normal(0.0, self.scale, self._max_components())[: fit.n_components]

    def point(self, z: Callable[[str, LayerFit], np.ndarray]) -> Mapping:
        """The complete checkpoint whose sampled layers are θ_base + τ̄ + Σ z_i σ_i pc_i with
        ``z(layer, fit)`` (lazy)."""
        return _Point(self, z)

    def mean(self) -> Mapping:
        """z = 0: θ_base + τ̄, the average of the fine-tuned weights (sampled layers)."""
        return self.point(lambda layer, fit: np.zeros(fit.n_components))

    def sample(self, i: int) -> Mapping:
        """Sample ``i`` (z ~ N(0, scale²) from the seeded generator; see ``coupling``)."""
        return self.point(lambda layer, fit: self.z(i, layer))

    def layer_value(self, layer: str, z) -> np.ndarray:
        fit = self.fit(layer)
        if fit is None:
            return self.base[layer]
        return layer_point(self.base[layer], [ft[layer] for ft in self._ft], fit, z, chunk=self.chunk)

    def components(self, layer: str) -> np.ndarray:
        """The layer's unit principal components (k, n_params), materialised."""
        fit = self.fit(layer)
        if fit is None:
            raise KeyError(f"layer {layer!r} is not sampled")
        return layer_components(self.base[layer], [ft[layer] for ft in self._ft], fit)

    def summary(self) -> list[dict]:
        """Per sampled layer and component: ``{layer, component, sigma, variance,
        explained_variance_ratio}`` (a layer without variance across runs gets one row, component 0)."""
        rows = []
        for layer in self.sampled_layers():
            fit = self.fit(layer)
            if fit.n_components == 0:
                rows.append(
                    {"layer": layer, "component": 0, "sigma": 0.0, "variance": 0.0, "explained_variance_ratio": 0.0}
                )
            for i in range(fit.n_components):
                rows.append(
                    {
                        "layer": layer,
                        "component": i + 1,
                        "sigma": float(fit.sigma[i]),
                        "variance": float(fit.explained_variance[i]),
                        "explained_variance_ratio": float(fit.explained_variance_ratio[i]),
                    }
                )
        return rows


class _Point(Mapping):
    def __init__(self, sampler: TaskVectorSampler, z):
        self._s, self._z = sampler, z

    def __getitem__(self, layer):
        s = self._s
        if layer not in s._names:
            raise KeyError(layer)
        fit = s.fit(layer)
        if fit is None:
            return s.base[layer]
        return s.layer_value(layer, self._z(layer, fit))

    def __iter__(self):
        return iter(self._s.base)

    def __len__(self):
        return len(self._s.base)

    def __contains__(self, layer):
        return layer in self._s._names
