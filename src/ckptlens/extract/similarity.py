"""What linear CKA to a fixed reference checkpoint is a function of, computed in the extraction job
from activations it holds and never writes.

For one layer, X (n × d₁) this checkpoint's activations on probe batch 0 and Y (n × d₂) the
reference checkpoint's, both centred per feature, linear CKA (Kornblith et al., 2019) and its
debiased form (the unbiased HSIC₁ of Song et al., 2012, in Kornblith's feature form) depend on the
data only through nine numbers, :data:`TERMS`:

    xy = ‖XᵀY‖²_F, xx = ‖XᵀX‖²_F, yy = ‖YᵀY‖²_F (= Σ K∘L, Σ K∘K, Σ L∘L of the Gram matrices
    K = XXᵀ, L = YYᵀ), rxry = r_X·r_Y, rxrx = r_X·r_X, ryry = r_Y·r_Y with r the rows' squared
    norms (the Grams' diagonals), sx = Σ r_X, sy = Σ r_Y, and n.

:mod:`ckptlens.metrics.activation_similarity` turns them into CKA. So a study that needs CKA to the
final checkpoint stores nine float64 numbers per layer and checkpoint, not the activations (at
Pythia-160M's targets, probe 8 × 128 tokens: 189 MB a checkpoint in float32). Computed in float64 on
the model's device, in the Gram form (n × n products) or the feature form (d × d), whichever is
cheaper for the shapes, as the metric does with stored activations.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

TERMS = ("xy", "xx", "yy", "rxry", "rxrx", "ryry", "sx", "sy", "n")


class Centred:
    """One layer's activations, centred per feature, in float64 on ``device``, with what the terms
    need of them alone (kept for the reference, which every checkpoint is compared with)."""

    def __init__(self, a: np.ndarray, device=None):
        import torch

        x = torch.as_tensor(np.asarray(a).reshape(a.shape[0], -1)).to(device=device, dtype=torch.float64)
        self.x = x - x.mean(dim=0, keepdim=True)
        self.rows = (self.x * self.x).sum(dim=1)  # r: the rows' squared norms
        self._gram = None
        self._features = None

    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def gram(self):
        if self._gram is None:
            self._gram = _self_product(self.x.T)
        return self._gram

    @property
    def features(self):
        if self._features is None:
            self._features = _self_product(self.x)
        return self._features


def _self_product(a):
    """AᵀA: on the CPU through numpy, whose matmul runs a symmetric rank-k update for a matrix
    times its own transpose (half the multiplications of torch's general product)."""
    import torch

    if a.device.type == "cpu":
        n = a.numpy()
        return torch.from_numpy(n.T @ n)
    return a.T @ a


def layer_terms(x: Centred, y: Centred) -> np.ndarray:
    """:data:`TERMS` of one layer (float64)."""
    if x.n != y.n:
        raise ValueError(f"{x.n} rows against the reference's {y.n}: not the same probe tokens")
    d = x.x.shape[1] + y.x.shape[1]
    if x.n * x.n < d * d:  # Gram form: n × n products
        k, l = x.gram, y.gram
        xy, xx, yy = (k * l).sum(), (k * k).sum(), (l * l).sum()
    else:  # feature form: d × d products
        cross = x.x.T @ y.x
        xy, xx, yy = (cross * cross).sum(), (x.features**2).sum(), (y.features**2).sum()
    rx, ry = x.rows, y.rows
    values = [xy, xx, yy, rx @ ry, rx @ rx, ry @ ry, rx.sum(), ry.sum()]
    return np.array([float(v) for v in values] + [float(x.n)], dtype=np.float64)


def similarity_terms(
    acts: Mapping[str, np.ndarray], reference: Mapping[str, Centred], device=None, itself: bool = False
) -> dict:
    """{layer: :data:`TERMS`} of this checkpoint's captured activations against the reference's
    (:class:`Centred` per layer); NaN terms where the reference has no such layer (its checkpoint
    failed: the metric is then NaN with a warning). ``itself``: these are the reference's own
    activations (its centred form and products are reused)."""
    out = {}
    for name, a in acts.items():
        ref = reference.get(name)
        if ref is None:
            out[name] = np.full(len(TERMS), np.nan)
        else:
            out[name] = layer_terms(ref if itself else Centred(a, device), ref)
    return out
