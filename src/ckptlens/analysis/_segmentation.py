"""The change-point search of :func:`ckptlens.analysis.dynamics.change_points`: the robust noise
level of a trajectory, its exact least-squares segmentation into constant-mean pieces, and the
tests that decide whether the changes of a segmentation are real (the criteria are written out in
the :mod:`ckptlens.analysis.dynamics` docstring). Everything works on the finite values of one
trajectory in checkpoint-index space (position i = the i-th checkpoint). Only numpy is imported.
"""

from __future__ import annotations

import numpy as np

#: MAD -> standard deviation of a Gaussian.
MAD_TO_SIGMA = 1.4826


def noise_sigma(x: np.ndarray, noise_floor: float) -> float:
    """Robust noise level from first differences, floored at ``noise_floor * range``."""
    d = np.diff(x)
    mad = float(np.median(np.abs(d - np.median(d)))) if d.size else 0.0
    sigma = MAD_TO_SIGMA * mad / np.sqrt(2.0)
    return max(sigma, noise_floor * float(np.ptp(x)))


def optimal_segmentation(x: np.ndarray, n_changes: int, min_size: int) -> list[int] | None:
    """Exact least-squares segmentation of ``x`` into ``n_changes + 1`` constant-mean segments
    of at least ``min_size`` points each (dynamic programming, O(n_changes * n^2)).

    Returns the sorted change indices (each the index of the first point of a new segment), or
    None if ``x`` is too short. Ties go to the earliest split. These are the breakpoints (less
    the final ``n``) that ``ruptures.Dynp(model="l2", min_size=min_size, jump=1)`` predicts.
    """
    n = x.size
    if n_changes < 1 or n < (n_changes + 1) * min_size:
        return None
    # Centre first: the cumulative-sum formula loses precision on a large common offset.
    y = x - x.mean()
    c1 = np.concatenate([[0.0], np.cumsum(y)])
    c2 = np.concatenate([[0.0], np.cumsum(y * y)])
    ends = np.arange(n + 1)
    # best[j]: least cost of x[:j] in the current number of segments (inf where impossible).
    best = np.full(n + 1, np.inf)
    best[min_size:] = c2[min_size:] - c1[min_size:] ** 2 / ends[min_size:]
    starts: list[np.ndarray] = []  # per added change: start of the last segment of each optimum
    for k in range(1, n_changes + 1):
        new = np.full(n + 1, np.inf)
        arg = np.zeros(n + 1, dtype=np.int64)
        for j in range((k + 1) * min_size, n + 1):
            i = np.arange(k * min_size, j - min_size + 1)
            cost = best[i] + (c2[j] - c2[i]) - (c1[j] - c1[i]) ** 2 / (j - i)
            m = int(np.argmin(cost))
            new[j], arg[j] = cost[m], i[m]
        best = new
        starts.append(arg)
    changes, j = [], n
    for arg in reversed(starts):
        j = int(arg[j])
        changes.append(j)
    return sorted(changes)


def _sse(x: np.ndarray) -> float:
    return float(np.sum((x - x.mean()) ** 2))


def _two_lines(x: np.ndarray, a: int, t: int, b: int, *, continuous: bool):
    """Least-squares fit of ``x[a:b]`` by one straight line on each side of the change at ``t``
    (a side of fewer than 3 points gets a constant instead: two points fit any line exactly).

    ``continuous=False``: the two lines are free (a broken line with a gap at the change).
    ``continuous=True``: they meet at ``t - 0.5``, midway between the last point before the
    change and the first after it (a continuous "hinge" bending there).
    Returns ``(sse, fitted values, gap)``; gap = right line - left line at ``t - 0.5``.
    """
    u = np.arange(a, b, dtype=float) - (t - 0.5)
    right = (u > 0).astype(float)
    left = 1.0 - right
    slopes = []
    if t - a >= 3:
        slopes.append(u * left)
    if b - t >= 3:
        slopes.append(u * right)
    levels = [np.ones_like(u)] if continuous else [left, right]
    design = np.column_stack(levels + slopes)
    coef, *_ = np.linalg.lstsq(design, x[a:b], rcond=None)
    fitted = design @ coef
    gap = 0.0 if continuous else float(coef[1] - coef[0])
    return float(np.sum((x[a:b] - fitted) ** 2)), fitted, gap


def _transition_bounds(
    x: np.ndarray, a: int, t: int, b: int, fitted: np.ndarray, sign: float, guard: float
) -> tuple[int, int]:
    """``(lo, hi)``: ``x[lo:hi]`` are the transition points of the change at ``t`` within
    ``x[a:b]``: the contiguous points next to ``t`` lying more than ``guard`` beyond their own
    side's fitted line, towards the other side. ``lo - 1`` is the last point on the old level,
    ``hi`` the first on the new level (both within the segment). ``sign``: +1 for a rise,
    -1 for a drop."""
    lo = t
    while lo - 1 > a and sign * (x[lo - 1] - fitted[lo - 1 - a]) > guard:
        lo -= 1
    hi = t
    while hi < b - 1 and sign * (fitted[hi - a] - x[hi]) > guard:
        hi += 1
    return lo, hi


def validate_changes(
    x: np.ndarray,
    changes: list[int],
    sigma: float,
    min_snr: float,
    max_fit_ratio: float,
    min_gap_fraction: float,
    min_size: int,
    min_jump: float = 0.0,
) -> list[dict] | None:
    """The change points of one segmentation if every one of them passes the tests of the
    :mod:`ckptlens.analysis.dynamics` docstring (against its two neighbouring segments), else None."""
    n = x.size
    bounds = [0, *changes, n]
    # Separation of two neighbouring changes, part 1: the level between them is occupied, at
    # least min_size of its points lie within one noise level of its median; otherwise it is a
    # few points caught inside one transition (the shoulders of a sigmoid).
    for a, b in zip(bounds[1:-2], bounds[2:-1]):
        seg = x[a:b]
        if int(np.sum(np.abs(seg - np.median(seg)) <= sigma)) < min_size:
            return None
    # Part 2: the middle level looks like a level, not like a ramp between its neighbours: its
    # own mean fits it clearly better than the straight ramp from the previous segment's mean
    # (at that segment's last point) to the next one's (at its first point). Otherwise the
    # middle "level" is the inside of one gradual transition and the two changes are one.
    for j in range(len(changes) - 1):
        a, t1, t2, b = bounds[j], bounds[j + 1], bounds[j + 2], bounds[j + 3]
        lev_left, lev_right = float(x[a:t1].mean()), float(x[t2:b].mean())
        frac = (np.arange(t1, t2) - (t1 - 1)) / (t2 - t1 + 1)
        sse_ramp = float(np.sum((x[t1:t2] - (lev_left + frac * (lev_right - lev_left))) ** 2))
        if not _sse(x[t1:t2]) <= max_fit_ratio * sse_ramp:
            return None
    out = []
    for j, t in enumerate(changes):
        a, b = bounds[j], bounds[j + 2]
        before, after = float(x[a:t].mean()), float(x[t:b].mean())
        jump = after - before
        sse_broken, fitted, gap = _two_lines(x, a, t, b, continuous=False)
        sse_hinge, _, _ = _two_lines(x, a, t, b, continuous=True)
        threshold = min_snr * sigma
        if not (abs(jump) > threshold and abs(gap) > threshold):
            return None
        # Large against the metric's own scale, not only against its (perhaps tiny) noise.
        if not abs(jump) >= min_jump:
            return None
        if not abs(gap) >= min_gap_fraction * abs(jump):
            return None
        if not sse_broken <= max_fit_ratio * sse_hinge:
            return None
        # Both levels are established: a side too short for its own line (fewer than 3 points,
        # fitted by a constant) must be level, its points within one noise level of their mean.
        # The first two points of a saturating curve, or of a decay after a warm-up, are no
        # level but the start of the curve: no change.
        for lo_, hi_ in ((a, t), (t, b)):
            if hi_ - lo_ < 3 and float(np.max(np.abs(x[lo_:hi_] - x[lo_:hi_].mean()))) > sigma:
                return None
        lo, hi = _transition_bounds(x, a, t, b, fitted, np.sign(jump), 0.5 * threshold)
        out.append(
            {
                "index": t,
                "lo": lo,
                "hi": hi,
                "before": before,
                "after": after,
                "jump": jump,
                "gap": gap,
                "fit_ratio": sse_broken / sse_hinge if sse_hinge > 0 else 0.0,
            }
        )
    return out
