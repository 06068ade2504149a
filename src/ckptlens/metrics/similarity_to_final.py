"""Linear CKA to the final checkpoint (``cka_to_final``), from the terms the extraction keeps
(:mod:`ckptlens.extract.similarity`: nine float64 numbers per layer and checkpoint) instead of the
activations of every checkpoint. The values are those of :func:`.activation_similarity.linear_cka`
and :func:`.activation_similarity.debiased_linear_cka` on the two checkpoints' activations (the
formulas are in that module's docstring; the unbiased HSIC₁ is :func:`._common.hsic1_of` on both
paths)."""

from __future__ import annotations

import numpy as np

from ..extract.similarity import TERMS
from ._common import check_bool, hsic1_of
from .registry import Degenerate, family, metric


def _check_debiased(params):
    check_bool("cka_to_final", "debiased", params["debiased"])


@family("similarity_to_final", needs="similarity_terms")
class SimilarityTerms:
    """One layer's :data:`ckptlens.extract.similarity.TERMS` against the final checkpoint, computed
    by the extraction from activations it never writes (so CKA to the final checkpoint costs
    nine numbers per layer on disk, not the activations)."""

    def __init__(self, terms: np.ndarray):
        self.t = dict(zip(TERMS, np.asarray(terms, dtype=np.float64).ravel().tolist()))
        if len(self.t) != len(TERMS):
            raise ValueError(f"{len(self.t)} similarity terms, not the {len(TERMS)} of {TERMS}")
        self.n = int(self.t["n"])


@metric(
    "cka_to_final",
    label="linear CKA to the final checkpoint",
    validate=_check_debiased,
)
def cka_to_final(ctx: SimilarityTerms, debiased=False) -> float:
    """Linear CKA between the layer's activations and those of the final checkpoint: the same
    value as :func:`linear_cka` / :func:`debiased_linear_cka` of the two activations, from their
    terms."""
    t = ctx.t
    if not debiased:
        if t["xx"] <= 0 or t["yy"] <= 0:
            raise Degenerate("constant activations: CKA is 0/0")
        return t["xy"] / float(np.sqrt(t["xx"] * t["yy"]))
    n = ctx.n
    if n < 4:
        raise Degenerate(f"debiased CKA needs at least 4 probe samples, not {n}")
    kl = hsic1_of(n, t["xy"], t["rxry"], t["sx"], t["sy"])
    kk = hsic1_of(n, t["xx"], t["rxrx"], t["sx"], t["sx"])
    ll = hsic1_of(n, t["yy"], t["ryry"], t["sy"], t["sy"])
    if kk <= 0 or ll <= 0:
        raise Degenerate("the unbiased HSIC of a representation with itself is not positive (constant activations)")
    return kl / float(np.sqrt(kk * ll))
