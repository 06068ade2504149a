"""Per-layer convergence and phase-transition (change-point) detection over training.

The input of :func:`detect_dynamics` is a *tidy metrics table*: a DataFrame with the columns
``run`` (str), ``step`` (int), ``layer`` (str), ``metric`` (str) and ``value`` (float, may be
NaN or Inf), one row per (run, step, layer, metric). Steps may be evenly spaced (0, 50, 100, ...)
or log-spaced (0, 1, 2, 4, ..., 512, 1000, 3000, 13000, ..., 143000). Every (run, metric, layer)
trajectory is examined on its own, for two things:

* **When does it settle?** :func:`convergence_step`.

  - With a threshold (``direction="above"``): the first step from which *every* later finite
    value is ``>= threshold`` (``"below"``: ``<= threshold``), i.e. the step right after the last
    violation. ``None`` if the final finite value is itself on the wrong side.
  - Without a threshold: the first step from which every later finite value stays within
    ``tolerance * (max - min)`` of the final finite value (max and min over the finite
    trajectory; the comparison is ``<=``, so a constant trajectory settles at its first step).
    The final value is trivially within its own band, so settling "at the last checkpoint only"
    says nothing: the result is ``None`` unless at least the last *two* finite values are in the
    band (otherwise the trajectory was still moving at its second-to-last checkpoint).
  - Non-finite values (NaN, +-Inf) are ignored: they neither break nor start a settled stretch,
    and the returned step is always the step of a finite value. Fewer than 2 finite values:
    ``None``. Steps need not be sorted (they are sorted first).

* **Where does it jump?** :func:`change_points`, a phase transition being an abrupt change of
  level (a loss plateau that suddenly drops, a CKA that snaps to its final value).

  Detection works in *checkpoint-index space*: the i-th finite checkpoint is at position i,
  whatever its step. On evenly spaced checkpoints "abrupt" means abrupt in steps; on log-spaced
  checkpoints it means abrupt in log-step (a change completed between step 512 and step 1000
  counts as sharp as one completed between 13000 and 23000). Non-finite values are dropped
  before detection.

  Locations come from the exact least-squares segmentation of the trajectory into
  piecewise-constant means (dynamic programming, every segment at least ``min_size`` points; for
  k changes the same breakpoints as ``ruptures.Dynp(model="l2", min_size=min_size, jump=1)``
  with ``n_bkps=k``). Whether they are real changes is decided by explicit tests:

  0. Enough checkpoints to tell a jump from noise: fewer than ``min_points`` (default 10) finite
     values give no change point at all (the MAD of a handful of differences is no noise
     estimate, and a smooth 7- or 8-point curve is indistinguishable from a step in
     checkpoint-index space: the fine-tuning runs of 8 checkpoints get none).
  1. Noise level ``sigma``: the robust standard deviation of the first differences of the whole
     trajectory, ``1.4826 * MAD(diff(x)) / sqrt(2)`` (a difference of two independent noisy
     values has variance ``2 sigma^2``; the MAD ignores the few large differences at a jump and
     the median removes a constant slope). It is floored at ``noise_floor * (max - min)``
     (default 1 %) so that on noise-free trajectories wiggles of a few per mille of the range do
     not count as jumps. A trajectory whose range is round-off (``<= 1e-12 * max|x|``) is
     constant and has no change point.
  2. For ``k = max_points, ..., 1`` (most first: a staircase of two jumps is not one jump, so
     each k is tried on its own optimal segmentation), the k changes are accepted if every one of
     them passes, on the two segments around it (bounded by its neighbouring changes):

     - *it is large*: the jump of the segment means ``after - before`` and the *gap* (below)
       both exceed ``min_snr * sigma`` (default 4: visible point by point above the noise; on
       pure Gaussian noise the best split essentially never reaches it);
     - *it is large against the metric's own scale*: ``|jump| >= min_relative_jump * scale``
       (default 2 %), ``scale`` = :func:`series_scale` (the larger of the trajectory's typical
       magnitude ``median |x|`` and its range), so that a move of 1e-4 on an effective rank of
       100 is no change however small the noise of a smooth trajectory makes it look;
     - *both levels are established*: a side of fewer than 3 points (fitted by a constant)
       must be level, within ``sigma`` of its mean: the first points of a saturating curve or
       of a decay after warm-up are the start of the curve, not an old level;
     - *it is a discontinuity, not a bend*: each side is fitted by its own straight line (a
       side of fewer than 3 points by a constant). This broken line must leave at most
       ``max_fit_ratio`` (default 0.5) of the squared residual of the *continuous* fit by two
       lines that meet midway between the two checkpoints around the change (a hinge; a straight
       line is a special case). A straight line and an exponential or power-law decay are
       continuous, so the hinge fits them about as well: no change. A step or a sigmoid
       completed within a few checkpoints cannot be followed by a continuous fit: change. Using
       lines rather than constants on each side keeps a drop that follows a slow trend (a loss
       that creeps down, then collapses) detectable;
     - *it is abrupt*: the gap (right line minus left line, midway between the two checkpoints
       around the change) is at least ``min_gap_fraction`` (default 0.5) of the jump of the
       segment means: at least half of the change happens at the change point, the rest may be
       gradual. A slow S-curve spread over a large part of the run fails this;
     - *neighbouring changes are separate*: the level between two changes is occupied (at
       least ``min_size`` of its points lie within ``sigma`` of its median) and looks like a
       level rather than a ramp (its mean fits it with at most ``max_fit_ratio`` of the squared
       residual of the straight ramp from the previous level to the next). Otherwise it is the
       inside of one transition (the shoulders of a sigmoid), and the two changes are one.

     The first k whose changes all pass is the answer; none: no change point.

  Convention for the reported location: ``step`` is the step of the **first checkpoint of the new
  segment**, the first checkpoint whose value is (in the least-squares sense) on the new level;
  the change happened between the previous checkpoint and this one. ``start_step`` /
  ``end_step`` bracket the whole transition: the last checkpoint still on the old level and the
  first one on the new level, judged against each side's fitted line with a margin of
  ``min_snr / 2 * sigma`` (for a clean step: the checkpoints just before and at ``step``).

  Limits: abruptness is relative to the run's length in checkpoints (a sigmoid spread over 8 of
  27 checkpoints is gradual, the same over 8 of 200 abrupt); a decay completed within the first
  two or three checkpoints is, in checkpoint-index space, an abrupt change at the start; on
  log-spaced checkpoints ``1 / (1 + s / s0)`` *is* a logistic sigmoid in ``log s`` (about 1.4
  doublings wide), so such a power law with exponent 1 is reported as a transition near
  ``s0``, while shallower ones (exponent 0.5 or less) are not; a
  change is judged against the trajectory's own noise and range, not an absolute scale (filter
  the ``value`` column for practical significance).

:func:`detect_dynamics` applies both to every (run, metric, layer) group of a table and returns a
tidy table (:data:`DYNAMICS_COLUMNS`): one ``kind="converged"`` row per settled trajectory (a
trajectory that never settles gets no row, but a note) and one ``kind="change_point"`` row per
change. :func:`training_log_dynamics` does the same for a training log (``step, loss, id_error,
ood_error, seconds``), so that a phase transition visible in the loss is detected as well.

Like the other analyses, nothing here crashes on degenerate input: groups with too few
finite points are skipped and explained in the returned notes. Only numpy and pandas are
imported.

Example::

    df = pd.read_csv("metrics.csv").rename(columns={"model": "run"})
    events, notes = detect_dynamics(
        df, thresholds={"cka_scores": {"value": 0.9, "direction": "above"}}
    )
    events[events.kind == "change_point"]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..store.layers import layer_key
from ..store.tidy import TIDY_COLUMNS, check_tidy
from ._common import CONSTANT_RTOL
from ._segmentation import noise_sigma, optimal_segmentation, validate_changes

__all__ = [
    "DYNAMICS_COLUMNS",
    "KINDS",
    "LOG_COLUMNS",
    "MODEL_LAYER",
    "base_metric",
    "threshold_for",
    "convergence_step",
    "change_points",
    "series_scale",
    "detect_dynamics",
    "training_log_dynamics",
]

#: Columns of the table returned by :func:`detect_dynamics`, in this order.
DYNAMICS_COLUMNS = ["run", "metric", "layer", "kind", "step", "value", "score"]
#: Row kinds, in their sort order within a (run, metric, layer) group.
KINDS = ("converged", "change_point")
#: Metric columns of a training log that :func:`training_log_dynamics` examines by default.
LOG_COLUMNS = ("loss", "id_error", "ood_error")
#: ``layer`` of the rows made from a training log (model-level, not per layer).
MODEL_LAYER = "model"

DIRECTIONS = ("above", "below")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def base_metric(metric: str) -> str:
    """The metric name before the first dot.

    ``"qk_ov_overlap_max.k1"`` -> ``"qk_ov_overlap_max"``; a name without a dot is its own base.
    """
    return metric.split(".", 1)[0]


def _normalise_threshold(metric: str, spec) -> tuple[float, str]:
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return float(spec), "above"
    if not isinstance(spec, Mapping) or "value" not in spec:
        raise ValueError(
            f"threshold for {metric!r} must be a number or a mapping "
            f"{{'value': float, 'direction': 'above'|'below'}}, got {spec!r}"
        )
    direction = spec.get("direction", "above")
    if direction not in DIRECTIONS:
        raise ValueError(f"threshold for {metric!r}: direction must be 'above' or 'below', got {direction!r}")
    return float(spec["value"]), direction


def threshold_for(metric: str, thresholds: Mapping | None) -> tuple[float, str] | None:
    """``(value, direction)`` of the threshold that applies to ``metric``, or None.

    An entry for the exact metric name wins; otherwise an entry for its base name (before the
    first dot) applies to every suffixed variant (``"qk_ov_overlap_max"`` covers
    ``"qk_ov_overlap_max.k1"``). An entry is ``{"value": v, "direction": "above"|"below"}``
    (direction defaults to ``"above"``) or a plain number (meaning ``"above"``).
    """
    if not thresholds:
        return None
    if metric in thresholds:
        return _normalise_threshold(metric, thresholds[metric])
    base = base_metric(metric)
    if base in thresholds:
        return _normalise_threshold(base, thresholds[base])
    return None


def _finite_sorted(steps, values) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values as arrays, sorted by step, non-finite values dropped."""
    s = np.asarray(steps)
    v = np.asarray(values, dtype=float)
    if s.shape != v.shape or s.ndim != 1:
        raise ValueError(f"steps and values must be 1-D of the same length, got {s.shape} and {v.shape}")
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    keep = np.isfinite(v)
    return s[keep], v[keep]


# --------------------------------------------------------------------------------------------
# convergence
# --------------------------------------------------------------------------------------------


def convergence_step(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    threshold: float | None = None,
    direction: str = "above",
    tolerance: float = 0.05,
) -> int | None:
    """The step from which the trajectory stays settled (see the module docstring).

    With ``threshold``: the first step from which every later finite value is ``>= threshold``
    (``direction="above"``) or ``<= threshold`` (``"below"``); None if the final finite value
    violates it. Without: the first step from which every later finite value is within
    ``tolerance * (max - min)`` of the final finite value; None if only the final value is (the
    trajectory was still moving at the second-to-last finite checkpoint). A constant trajectory
    settles at its first step. Non-finite values are ignored; fewer than 2 finite values: None.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")
    s, v = _finite_sorted(steps, values)
    if v.size < 2:
        return None
    if threshold is not None:
        ok = v >= threshold if direction == "above" else v <= threshold
        min_settled = 1
    else:
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        band = tolerance * float(np.max(v) - np.min(v))
        ok = np.abs(v - v[-1]) <= band
        min_settled = 2
    # Index of the first point of the trailing all-ok stretch.
    bad = np.flatnonzero(~ok)
    first = int(bad[-1]) + 1 if bad.size else 0
    if v.size - first < min_settled:
        return None
    return int(s[first])


def _settled_fraction(steps, values, step: int) -> float:
    s, _ = _finite_sorted(steps, values)
    return float(np.sum(s >= step)) / float(s.size)


# --------------------------------------------------------------------------------------------
# change points
# --------------------------------------------------------------------------------------------


def series_scale(values) -> float:
    """The scale a trajectory's jumps are judged against: its typical magnitude (median of
    ``|x|`` over the finite values) or its range, whichever is larger. A move of 1e-4 on an
    effective rank of 100 is nothing, whatever its noise; a metric that swings around zero is
    judged against its range."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return 0.0
    return max(float(np.median(np.abs(x))), float(np.ptp(x)))


def change_points(
    steps: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    max_points: int = 2,
    min_size: int = 2,
    min_snr: float = 4.0,
    max_fit_ratio: float = 0.5,
    min_gap_fraction: float = 0.5,
    noise_floor: float = 0.01,
    min_points: int = 10,
    min_relative_jump: float = 0.02,
    scale: float | None = None,
) -> list[dict]:
    """Abrupt changes of level of a trajectory, sorted by step (criterion: module docstring).

    Detection is in checkpoint-index space (abrupt in log-step on log-spaced checkpoints);
    non-finite values are dropped first, steps are sorted.

    Parameters:
        max_points: at most this many change points (0: none).
        min_size: fewest finite checkpoints in every segment (on either side of a change).
        min_snr: both the jump of the segment means and the gap between the two side lines must
            exceed ``min_snr`` times the robust noise level (default 4).
        max_fit_ratio: the broken (discontinuous) two-line fit must leave at most this fraction
            of the squared residual of the continuous two-line fit bending at the same place
            (default 0.5); the same ratio separates two jumps from one ramp.
        min_gap_fraction: the gap must be at least this fraction of the jump of the segment
            means (default 0.5: at least half of the change happens at the change point).
        noise_floor: the noise level is at least this fraction of the trajectory's range
            (default 0.01, so on noise-free data a change must exceed 4 % of the range).
        min_points: fewer finite values than this give no change point (default 10).
        min_relative_jump: the jump must be at least this fraction of ``scale`` (default 0.02).
        scale: the metric's own scale (default :func:`series_scale` of the trajectory).

    Returns one dict per change point, with:
        ``step``: step of the first checkpoint of the new segment; ``index``: its position among
        the finite checkpoints; ``start_step`` / ``end_step``: the last checkpoint on the old
        level and the first on the new level (the transition lies between them);
        ``before`` / ``after``: means of the segments before and after the change (bounded by
        the neighbouring changes); ``jump``: ``after - before``; ``gap``: the discontinuity
        between the two side lines; ``score``: ``|jump| / sigma`` (signal-to-noise ratio,
        ``> min_snr``); ``fit_ratio``: ``SSE_broken / SSE_continuous`` (``<= max_fit_ratio``);
        ``sigma``: the noise level used.
    """
    if min_size < 1:
        raise ValueError(f"min_size must be >= 1, got {min_size}")
    s, x = _finite_sorted(steps, values)
    n = x.size
    if max_points <= 0 or n < max(2 * min_size, 3, min_points):
        return []
    if float(np.ptp(x)) <= CONSTANT_RTOL * float(np.max(np.abs(x))):
        return []
    sigma = noise_sigma(x, noise_floor)
    if scale is None:
        scale = series_scale(x)
    found: list[dict] = []
    # The most changes first: a staircase of two jumps is not one jump (a single split of it
    # leaves a whole step on one side), so each number of changes is tried on its own optimum.
    for k in range(min(max_points, n // min_size - 1), 0, -1):
        changes = optimal_segmentation(x, k, min_size)
        if changes is None:
            continue
        valid = validate_changes(
            x, changes, sigma, min_snr, max_fit_ratio, min_gap_fraction, min_size, min_relative_jump * scale
        )
        if valid is not None:
            found = valid
            break
    return [
        {
            "step": int(s[c["index"]]),
            "index": int(c["index"]),
            "start_step": int(s[c["lo"] - 1]),
            "end_step": int(s[c["hi"]]),
            "before": c["before"],
            "after": c["after"],
            "jump": c["jump"],
            "gap": c["gap"],
            "score": abs(c["jump"]) / sigma,
            "fit_ratio": c["fit_ratio"],
            "sigma": sigma,
        }
        for c in found
    ]


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _clean_table(table: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    check_tidy(table)
    df = table.loc[:, TIDY_COLUMNS].copy()
    df["run"] = df["run"].astype(str)
    df["step"] = df["step"].astype(np.int64)
    df["layer"] = df["layer"].astype(str)
    df["metric"] = df["metric"].astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    keys = ["run", "step", "layer", "metric"]
    n_dup = int(df.duplicated(keys).sum())
    if n_dup:
        notes.append(f"detect_dynamics: {n_dup} duplicate (run, step, layer, metric) row(s) were averaged")
        df = df.groupby(keys, as_index=False, sort=False)["value"].mean()
    return df


def detect_dynamics(
    table: pd.DataFrame,
    *,
    thresholds: Mapping | None = None,
    tolerance: float = 0.05,
    max_change_points: int = 2,
    min_size: int = 2,
    min_points: int = 10,
    **change_point_options,
) -> tuple[pd.DataFrame, list[str]]:
    """Convergence step and change points of every (run, metric, layer) trajectory.

    Output (columns :data:`DYNAMICS_COLUMNS`), per group:

    * ``kind="converged"`` (at most one): ``step`` = :func:`convergence_step` (with the
      threshold from ``thresholds`` for the metric, exact name first, then base name before the
      dot; otherwise the ``tolerance`` rule), ``value`` = the metric's value at that step,
      ``score`` = fraction of the group's finite checkpoints at or after that step (how much of
      the run it stays settled for). No row if it never settles; a note says so.
    * ``kind="change_point"`` (0 .. ``max_change_points``): ``step`` = first checkpoint of the
      new segment, ``value`` = the jump (new segment mean - old segment mean), ``score`` =
      ``|jump| / noise sigma`` (see :func:`change_points`; extra keyword arguments such as
      ``min_snr`` are passed on to it).

    Non-finite values are ignored (a note gives their count); groups with fewer than 2 finite
    values get no convergence row and groups with fewer than ``max(2 * min_size, 3)`` none for
    change points (notes). Rows are sorted by run, metric, layer (depth order), kind
    (converged first), step. Duplicate (run, step, layer, metric) rows are averaged (noted).
    """
    notes: list[str] = []
    # Validate all thresholds up front: a typo must fail before hours of groups are processed.
    for name, spec in (thresholds or {}).items():
        _normalise_threshold(name, spec)
    df = _clean_table(table, notes)
    rows: list[dict] = []
    for (run, metric, layer), group in df.groupby(["run", "metric", "layer"], sort=True):
        prefix = f"run {run!r}, metric {metric!r}, layer {layer!r}"
        group = group.sort_values("step", kind="stable")
        steps = group["step"].to_numpy()
        values = group["value"].to_numpy(dtype=float)
        finite = np.isfinite(values)
        n_finite = int(finite.sum())
        if n_finite < values.size:
            notes.append(f"{prefix}: {values.size - n_finite} non-finite value(s) (NaN/Inf) of {values.size} ignored")
        if n_finite < 2:
            notes.append(f"{prefix}: skipped: {n_finite} finite value(s), need at least 2")
            continue
        thr = threshold_for(metric, thresholds)
        if thr is None:
            conv = convergence_step(steps, values, tolerance=tolerance)
            rule = f"within {tolerance:g} of its range of the final value"
        else:
            conv = convergence_step(steps, values, threshold=thr[0], direction=thr[1])
            rule = f"{thr[1]} {thr[0]:g}"
        if conv is None:
            notes.append(f"{prefix}: never settles ({rule}); no 'converged' row")
        else:
            at = values[(steps == conv) & finite]
            rows.append(
                {
                    "run": run,
                    "metric": metric,
                    "layer": layer,
                    "kind": "converged",
                    "step": int(conv),
                    "value": float(at[0]),
                    "score": _settled_fraction(steps, values, conv),
                }
            )
        if max_change_points > 0:
            if n_finite < max(2 * min_size, 3, min_points):
                notes.append(
                    f"{prefix}: no change-point detection: {n_finite} finite value(s), need at "
                    f"least {max(2 * min_size, 3, min_points)} to tell a jump from noise "
                    f"(min_points={min_points}, min_size={min_size} on either side)"
                )
                continue
            for cp in change_points(
                steps,
                values,
                max_points=max_change_points,
                min_size=min_size,
                min_points=min_points,
                **change_point_options,
            ):
                rows.append(
                    {
                        "run": run,
                        "metric": metric,
                        "layer": layer,
                        "kind": "change_point",
                        "step": cp["step"],
                        "value": cp["jump"],
                        "score": cp["score"],
                    }
                )
    return _sorted_frame(rows), notes


def _sorted_frame(rows: list[dict]) -> pd.DataFrame:
    out = pd.DataFrame(rows, columns=DYNAMICS_COLUMNS)
    out = out.astype(
        {
            "run": str,
            "metric": str,
            "layer": str,
            "kind": str,
            "step": np.int64,
            "value": float,
            "score": float,
        }
    )
    if out.empty:
        return out.reset_index(drop=True)
    order = sorted(
        range(len(out)),
        key=lambda i: (
            out["run"].iat[i],
            out["metric"].iat[i],
            layer_key(out["layer"].iat[i]),
            KINDS.index(out["kind"].iat[i]),
            out["step"].iat[i],
        ),
    )
    return out.iloc[order].reset_index(drop=True)


def log_columns(log: pd.DataFrame) -> list[str]:
    """The columns of a training log :func:`training_log_dynamics` examines: those of
    :data:`LOG_COLUMNS` it has and its evaluation metrics (``eval_*``, a Hugging Face Trainer's;
    not their runtimes); all of :data:`LOG_COLUMNS` where it has none of them (each absent one noted)."""
    evals = [c for c in log.columns if str(c).startswith("eval_") and not str(c).endswith(("_runtime", "_per_second"))]
    return [c for c in LOG_COLUMNS if c in log.columns] + evals or list(LOG_COLUMNS)


def training_log_dynamics(
    log: pd.DataFrame,
    run: str,
    columns: Iterable[str] = LOG_COLUMNS,
    *,
    layer: str = MODEL_LAYER,
    thresholds: Mapping | None = None,
    tolerance: float = 0.05,
    max_change_points: int = 2,
    min_size: int = 2,
    **change_point_options,
) -> tuple[pd.DataFrame, list[str]]:
    """:func:`detect_dynamics` on a training log (columns ``step`` plus e.g. ``loss``,
    ``id_error``, ``ood_error``, ``seconds``; one row per logged step).

    Each of ``columns`` becomes a metric of that name on layer ``layer`` (default ``"model"``)
    of run ``run``; the other log columns (``seconds``) are ignored. Columns absent from the log
    are skipped with a note. Output and notes as for :func:`detect_dynamics`.
    """
    if "step" not in log.columns:
        raise ValueError(f"training log lacks the 'step' column; has {list(log.columns)}")
    notes: list[str] = []
    present = []
    for col in columns:
        if col in log.columns:
            present.append(col)
        else:
            notes.append(f"run {run!r}: training log has no column {col!r}; skipped")
    if not present:
        return _sorted_frame([]), notes
    tidy = log.melt(id_vars=["step"], value_vars=present, var_name="metric", value_name="value")
    tidy["run"] = run
    tidy["layer"] = layer
    events, more = detect_dynamics(
        tidy,
        thresholds=thresholds,
        tolerance=tolerance,
        max_change_points=max_change_points,
        min_size=min_size,
        **change_point_options,
    )
    return events, notes + more
