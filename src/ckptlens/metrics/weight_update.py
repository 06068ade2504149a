"""Update metrics between checkpoints (family ``weight_update``, input: weights).

W_t is the current checkpoint's matrix, W_prev the previous checkpoint's, W_prev2 the one before
that, W_0 the first (initial) checkpoint's. A separate family from ``weight_spectrum`` so that the
spectrum jobs do not depend on other checkpoints.

Registered metrics:
    update_norm_previous            ‖W_t − W_prev‖_F                    reference "previous"
    update_norm_initial             ‖W_t − W_0‖_F                       reference "initial"
    relative_update_norm_previous   ‖W_t − W_prev‖_F / ‖W_t‖_F          reference "previous"
    relative_update_norm_initial    ‖W_t − W_0‖_F / ‖W_t‖_F             reference "initial"
    update_cosine                   cos(W_t − W_prev, W_prev − W_prev2)  references ("previous", "previous2")

Degenerate cases: a relative update is 0 when the update is 0 (also for W_t = 0) and NaN (with a
warning) when W_t = 0 but the update is not; the cosine is 0 when either update is exactly zero (a
frozen layer), the convention of ``torch.nn.functional.cosine_similarity``. A shape change between
checkpoints gives NaN.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from .registry import family, metric


@family("weight_update", needs="weights")
class UpdateContext:
    """One weight matrix, as float64 (compared with the same layer of other checkpoints)."""

    def __init__(self, w: np.ndarray):
        self.w = np.asarray(w, dtype=np.float64)

    @cached_property
    def norm(self) -> float:
        return float(np.linalg.norm(self.w.ravel()))


def _diff(a: UpdateContext, b: UpdateContext) -> np.ndarray | None:
    return (a.w - b.w).ravel() if a.w.shape == b.w.shape else None


def _norm_of_diff(a: UpdateContext, b: UpdateContext) -> float:
    d = _diff(a, b)
    return float("nan") if d is None else float(np.linalg.norm(d))


def _relative(diff_norm: float, norm: float) -> float:
    if diff_norm == 0:
        return 0.0
    if norm == 0:
        return float("nan")  # W_t = 0 but it moved: recorded as NaN with a warning
    return diff_norm / norm


@metric("update_norm_previous", label="update norm ‖W_t − W_prev‖_F", reference="previous")
def update_norm_previous(ctx: UpdateContext, prev: UpdateContext) -> float:
    """‖W_t − W_prev‖_F, the size of the update since the previous checkpoint."""
    return _norm_of_diff(ctx, prev)


@metric("update_norm_initial", label="distance from init ‖W_t − W_0‖_F", reference="initial")
def update_norm_initial(ctx: UpdateContext, init: UpdateContext) -> float:
    """‖W_t − W_0‖_F, the distance travelled from the initial checkpoint."""
    return _norm_of_diff(ctx, init)


@metric("relative_update_norm_previous", label="relative update ‖W_t − W_prev‖_F / ‖W_t‖_F", reference="previous")
def relative_update_norm_previous(ctx: UpdateContext, prev: UpdateContext) -> float:
    """‖W_t − W_prev‖_F / ‖W_t‖_F."""
    return _relative(_norm_of_diff(ctx, prev), ctx.norm)


@metric(
    "relative_update_norm_initial", label="relative distance from init ‖W_t − W_0‖_F / ‖W_t‖_F", reference="initial"
)
def relative_update_norm_initial(ctx: UpdateContext, init: UpdateContext) -> float:
    """‖W_t − W_0‖_F / ‖W_t‖_F."""
    return _relative(_norm_of_diff(ctx, init), ctx.norm)


@metric("update_cosine", label="cosine of consecutive updates", reference=("previous", "previous2"))
def update_cosine(ctx: UpdateContext, prev: UpdateContext, prev2: UpdateContext) -> float:
    """Cosine between consecutive updates, W_t − W_prev and W_prev − W_prev2."""
    a, b = _diff(ctx, prev), _diff(prev, prev2)
    if a is None or b is None:
        return float("nan")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a / na, b / nb))
