"""Values (not just shapes) of ckptlens.analysis.dynamics: convergence against a plainly written loop,
change points on synthetic trajectories with known answers and against ``ruptures`` (an
independent implementation of the optimal least-squares segmentation), and the table functions."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from ckptlens.analysis.dynamics import (
    DYNAMICS_COLUMNS,
    base_metric,
    change_points,
    convergence_step,
    detect_dynamics,
    threshold_for,
    training_log_dynamics,
)

#: Pythia's log-spaced checkpoint steps (27).
LOG_STEPS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000] + list(range(3000, 143001, 10000)))
EVEN_STEPS = np.arange(0, 40 * 50, 50)  # 0, 50, ..., 1950 (40 checkpoints)


# --------------------------------------------------------------------------------------------
# convergence_step
# --------------------------------------------------------------------------------------------


def reference_convergence(steps, values, threshold=None, direction="above", tolerance=0.05):
    """The definition, written as a plain loop over candidate start points."""
    pairs = sorted((int(s), float(v)) for s, v in zip(steps, values) if math.isfinite(float(v)))
    if len(pairs) < 2:
        return None
    vals = [v for _, v in pairs]
    final = vals[-1]
    band = tolerance * (max(vals) - min(vals))
    for i in range(len(pairs)):
        rest = vals[i:]
        if threshold is None:
            ok = all(abs(v - final) <= band for v in rest)
            if ok:
                return pairs[i][0] if len(rest) >= 2 else None
        else:
            if direction == "above":
                ok = all(v >= threshold for v in rest)
            else:
                ok = all(v <= threshold for v in rest)
            if ok:
                return pairs[i][0]
    return None


@pytest.mark.parametrize(
    "values, kwargs, expected",
    [
        # above 0.9: the dip to 0.85 at step 30 is the last violation
        ([0.1, 0.5, 0.95, 0.85, 0.92, 0.97, 0.99], {"threshold": 0.9}, 40),
        # below 2.0, for a loss; 2.2 at step 30 is the last violation
        ([5.0, 3.0, 1.5, 2.2, 1.0, 0.8, 0.9], {"threshold": 2.0, "direction": "below"}, 40),
        # the boundary counts as settled (>=)
        ([0.0, 0.9, 0.9], {"threshold": 0.9}, 10),
        # final value on the wrong side: never settles
        ([0.1, 0.95, 0.97, 0.85], {"threshold": 0.9}, None),
        ([3.0, 1.0, 1.0, 2.5], {"threshold": 2.0, "direction": "below"}, None),
        # settling only at the last checkpoint counts with a threshold
        ([0.1, 0.2, 0.3, 0.95], {"threshold": 0.9}, 30),
        # tolerance: band 0.05 * 10.2 = 0.51 around the final 10.0 -> from step 10
        ([0.0, 10.0, 9.8, 10.2, 10.0], {}, 10),
        # tolerance: only the final value is within its band -> still moving -> None
        ([0.0, 1.0, 2.0, 3.0, 4.0], {}, None),
        # a wider tolerance settles earlier: band 0.3 * 4 = 1.2 -> from 3.0
        ([0.0, 1.0, 2.0, 3.0, 4.0], {"tolerance": 0.3}, 30),
        # constant: settles at its first step (band 0, |v - final| = 0 <= 0)
        ([2.0, 2.0, 2.0, 2.0], {}, 0),
        ([2.0, 2.0, 2.0, 2.0], {"threshold": 2.0}, 0),
        # NaN inside a settled stretch does not break it
        ([0.0, 0.95, np.nan, 0.97, 1.0], {"threshold": 0.9}, 10),
        # non-finite values are ignored, even -Inf that would violate and +Inf that would pass
        ([1.0, -np.inf, 1.0, 1.0], {"threshold": 0.5}, 0),
        ([0.0, np.inf, 1.0, 1.0], {"threshold": 0.5}, 20),
        # a trailing NaN: the final *finite* value is the reference of the tolerance rule
        ([0.0, 5.0, 10.0, 10.0, np.nan], {}, 20),
        # fewer than 2 finite values
        ([np.nan, 1.0, np.nan], {}, None),
        ([np.nan, np.nan], {"threshold": 0.0}, None),
        ([1.0], {}, None),
    ],
)
def test_convergence_step_hand_made(values, kwargs, expected):
    steps = np.arange(len(values)) * 10
    got = convergence_step(steps, values, **kwargs)
    assert got == expected
    assert reference_convergence(steps, values, **kwargs) == expected


def test_convergence_step_log_spaced_and_unsorted():
    values = np.concatenate([np.linspace(0.1, 0.8, 13), [0.93, 0.95, 0.91, 0.97] + [0.98] * 10])
    # threshold 0.9: first index >= 0.9 that is never followed by a drop below -> index 13
    assert convergence_step(LOG_STEPS, values, threshold=0.9) == LOG_STEPS[13] == 13000
    order = np.random.default_rng(0).permutation(LOG_STEPS.size)
    assert convergence_step(LOG_STEPS[order], values[order], threshold=0.9) == 13000


def test_convergence_step_random_trajectories_match_loop():
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(1, 30))
        steps = np.sort(rng.choice(10_000, size=n, replace=False))
        kind = rng.integers(3)
        if kind == 0:  # noisy saturation
            values = 1 - np.exp(-np.arange(n) / rng.uniform(1, 8)) + rng.normal(0, 0.05, n)
        elif kind == 1:  # random walk
            values = np.cumsum(rng.normal(0, 1, n))
        else:  # quantised values, many ties with the threshold and the final value
            values = rng.integers(0, 4, n).astype(float)
        values[rng.random(n) < 0.15] = rng.choice([np.nan, np.inf, -np.inf])
        order = rng.permutation(n)  # unsorted input
        s, v = steps[order], values[order]
        for kwargs in (
            {},
            {"tolerance": float(rng.uniform(0, 0.5))},
            {"threshold": float(rng.uniform(-1, 2)), "direction": "above"},
            {"threshold": float(rng.uniform(-1, 2)), "direction": "below"},
            {"threshold": 2.0, "direction": "above"},
        ):
            assert convergence_step(s, v, **kwargs) == reference_convergence(s, v, **kwargs)
            checked += 1
    assert checked == 1500


def test_convergence_step_rejects_bad_direction():
    with pytest.raises(ValueError, match="direction"):
        convergence_step([0, 1], [0.0, 1.0], threshold=0.5, direction="up")


# --------------------------------------------------------------------------------------------
# change_points: synthetic trajectories with a known answer
# --------------------------------------------------------------------------------------------


def noisy_step(n, at, jump, sigma, seed):
    rng = np.random.default_rng(seed)
    return np.where(np.arange(n) >= at, jump, 0.0) + rng.normal(0, sigma, n)


def sigmoid_drop(n, center, width, high=4.0, low=1.0):
    i = np.arange(n)
    return low + (high - low) / (1 + np.exp((i - center) / width))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("steps, at", [(EVEN_STEPS, 17), (LOG_STEPS, 11), (LOG_STEPS, 20)])
def test_noisy_step_gives_one_change_at_its_first_new_checkpoint(steps, at, seed):
    x = noisy_step(steps.size, at, jump=-8.0, sigma=1.0, seed=seed) + 10.0
    found = change_points(steps, x)
    assert [c["step"] for c in found] == [steps[at]]
    c = found[0]
    assert c["index"] == at
    assert c["before"] == pytest.approx(x[:at].mean())
    assert c["after"] == pytest.approx(x[at:].mean())
    assert c["jump"] == pytest.approx(x[at:].mean() - x[:at].mean())
    assert c["score"] == pytest.approx(abs(c["jump"]) / c["sigma"])
    assert c["score"] > 4


def test_clean_step_brackets_and_location():
    x = np.where(np.arange(EVEN_STEPS.size) >= 10, 1.0, 0.0)
    (c,) = change_points(EVEN_STEPS, x)
    assert (c["start_step"], c["step"], c["end_step"]) == (450, 500, 500)
    assert c["jump"] == pytest.approx(1.0)
    assert c["gap"] == pytest.approx(1.0)
    assert c["fit_ratio"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("noise", [0.0, 0.03])
def test_sigmoid_drop_within_a_few_checkpoints(noise, seed):
    # midpoint halfway between checkpoints 14 and 15: the first point on the new level is 15;
    # 10 %-90 % of the drop happens within ~3 checkpoints
    x = sigmoid_drop(40, center=14.5, width=0.7)
    x = x + np.random.default_rng(seed).normal(0, noise, x.size)
    found = change_points(EVEN_STEPS, x)
    assert [c["step"] for c in found] == [EVEN_STEPS[15]] == [750]
    assert found[0]["jump"] == pytest.approx(-3.0, abs=0.4)
    assert found[0]["start_step"] <= 700 and found[0]["end_step"] >= 750


def test_sigmoid_drop_on_log_spaced_steps():
    # between step 512 and step 1000 in log-step terms
    x = sigmoid_drop(LOG_STEPS.size, center=10.5, width=0.5)
    assert [c["step"] for c in change_points(LOG_STEPS, x)] == [1000]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("steps, at", [(EVEN_STEPS, (10, 25)), (LOG_STEPS, (8, 18))])
def test_two_separated_jumps(steps, at, seed):
    i = np.arange(steps.size)
    rng = np.random.default_rng(seed)
    x = 1.0 * (i >= at[0]) + 2.0 * (i >= at[1]) + rng.normal(0, 0.1, i.size)
    found = change_points(steps, x)
    assert [c["step"] for c in found] == [steps[at[0]], steps[at[1]]]
    assert [round(c["jump"]) for c in found] == [1, 2]
    # with room for one change only, it is the larger one... or none; never a wrong location
    one = change_points(steps, x, max_points=1)
    assert [c["step"] for c in one] in ([], [steps[at[1]]], [steps[at[0]]])
    assert change_points(steps, x, max_points=0) == []


def test_staircase_of_two_equal_jumps():
    # a single split of a symmetric staircase fits hardly better than a line: both must be found
    i = np.arange(40)
    x = (i >= 13).astype(float) + (i >= 27).astype(float)
    assert [c["step"] for c in change_points(EVEN_STEPS, x)] == [650, 1350]


def test_jump_after_a_slow_trend():
    # a loss that creeps down and then collapses: the two side lines see the gap
    i = np.arange(40)
    x = np.where(i < 20, 3.0 - 0.02 * i, 0.5) + np.random.default_rng(3).normal(0, 0.02, 40)
    assert [c["step"] for c in change_points(EVEN_STEPS, x)] == [1000]


def smooth_and_flat_trajectories():
    out = {}
    for name, steps in (("even", EVEN_STEPS), ("log", LOG_STEPS)):
        n = steps.size
        t = np.linspace(0, 1, n)
        out[f"line-{name}"] = 2.0 - 1.5 * t
        out[f"constant-{name}"] = np.full(n, 0.7)
        for k in (1.0, 3.0, 5.0):
            out[f"exp{k:g}-{name}"] = 0.5 + 3 * np.exp(-k * t)
        out[f"exp-noisy-{name}"] = 0.5 + 3 * np.exp(-3 * t) + np.random.default_rng(0).normal(0, 0.02, n)
        # power laws in the step itself (as a loss against steps)
        for a in (0.3, 0.5, 1.0) if name == "even" else (0.3, 0.5):
            scale = 1000.0 if name == "even" else 1.0
            out[f"power{a:g}-{name}"] = 1.0 + 5.0 * (1.0 + steps / scale) ** -a
        out[f"sqrt-{name}"] = np.sqrt(t)
        out[f"log-{name}"] = np.log1p(10 * t)
    # purely geometric steps 1, 2, 4, ..., 2^20, knee anywhere
    for s0 in (1.0, 100.0, 10_000.0):
        for a in (0.3, 0.5):
            out[f"power{a:g}-s0={s0:g}-geometric"] = 1.0 + 5.0 * (1.0 + GEOMETRIC_STEPS / s0) ** -a
    return out


GEOMETRIC_STEPS = 2 ** np.arange(21)


@pytest.mark.parametrize("name", sorted(smooth_and_flat_trajectories()))
def test_no_change_on_smooth_or_flat_trajectories(name):
    x = smooth_and_flat_trajectories()[name]
    steps = {"even": EVEN_STEPS, "log": LOG_STEPS, "geometric": GEOMETRIC_STEPS}[name.rsplit("-", 1)[1]]
    assert change_points(steps, x) == []


def test_power_law_with_exponent_one_is_a_sigmoid_in_log_step():
    # 1 / (1 + s / s0) is exactly a logistic function of log(s): on geometric checkpoints it is
    # a transition of width ~1.4 checkpoints, located at the first checkpoint past s0
    x = 1.0 + 5.0 / (1.0 + GEOMETRIC_STEPS / 1000.0)
    assert [c["step"] for c in change_points(GEOMETRIC_STEPS, x)] == [1024]


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("n", [27, 40, 120])
def test_no_change_on_pure_noise(n, seed):
    x = np.random.default_rng(seed).normal(5.0, 1.0, n)
    assert change_points(np.arange(n), x) == []


def test_non_finite_values_are_dropped_before_detection():
    x = noisy_step(40, 17, jump=8.0, sigma=1.0, seed=0)
    dirty = x.copy()
    dirty[[3, 17, 30]] = [np.nan, np.inf, -np.inf]  # 17 was the first point of the new level
    keep = np.isfinite(dirty)
    clean = change_points(EVEN_STEPS[keep], x[keep])
    found = change_points(EVEN_STEPS, dirty)
    assert found == clean
    # the first finite checkpoint of the new segment is now 18 (its index among finite points: 16)
    assert [(c["step"], c["index"]) for c in found] == [(EVEN_STEPS[18], 16)]


def test_degenerate_inputs():
    assert change_points([0, 1, 2], [0.0, 0.0, 1.0]) == []  # too short for min_size=2
    assert change_points([], []) == []
    assert change_points(np.arange(10), np.full(10, np.nan)) == []
    # round-off-sized variation is no change
    assert change_points(np.arange(20), 0.3 + 1e-16 * (np.arange(20) >= 10)) == []
    with pytest.raises(ValueError, match="min_size"):
        change_points(np.arange(10), np.arange(10.0), min_size=0)


# --------------------------------------------------------------------------------------------
# change_points against ruptures (independent optimal segmentation)
# --------------------------------------------------------------------------------------------


def ruptures_changes(x, n_bkps, min_size=2):
    rpt = pytest.importorskip("ruptures")
    bkps = rpt.Dynp(model="l2", min_size=min_size, jump=1).fit(x.reshape(-1, 1)).predict(n_bkps=n_bkps)
    return bkps[:-1]  # the last breakpoint is the signal's end


@pytest.mark.parametrize("seed", range(8))
def test_same_locations_as_ruptures_one_jump(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 60))
    at = int(rng.integers(2, n - 1))  # anywhere, segments of at least 2
    x = noisy_step(n, at, jump=float(rng.choice([-1, 1]) * rng.uniform(1, 5)), sigma=0.05, seed=seed)
    expected = ruptures_changes(x, 1)
    assert expected == [at]
    assert [c["index"] for c in change_points(np.arange(n), x)] == expected


@pytest.mark.parametrize("seed", range(8))
def test_same_locations_as_ruptures_two_jumps(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(25, 60))
    first = int(rng.integers(3, n - 12))
    second = int(rng.integers(first + 5, n - 3))
    i = np.arange(n)
    x = (
        rng.uniform(1, 3) * rng.choice([-1, 1]) * (i >= first)
        + rng.uniform(1, 3) * rng.choice([-1, 1]) * (i >= second)
        + rng.normal(0, 0.05, n)
    )
    expected = ruptures_changes(x, 2)
    assert expected == [first, second]
    assert [c["index"] for c in change_points(np.arange(n), x)] == expected


# --------------------------------------------------------------------------------------------
# detect_dynamics
# --------------------------------------------------------------------------------------------


def tidy(run, metric, layer, steps, values):
    return pd.DataFrame({"run": run, "step": steps, "layer": layer, "metric": metric, "value": values})


@pytest.fixture
def table():
    steps = EVEN_STEPS[:20]  # 0 .. 950
    i = np.arange(20)
    rising = np.clip(i / 10, 0, 1)  # reaches 1.0 at step 500, 0.9 at step 450
    parts = [
        # threshold by exact name
        tidy("r1", "cka_to_final", "blocks.10", steps, rising),
        tidy("r1", "cka_to_final", "blocks.2", steps, rising),
        # base-name threshold (above 0.5) for .k1, exact one (below 0.25) for .k2
        tidy("r1", "qk_ov_overlap_max.k1", "blocks.2", steps, rising),
        tidy("r1", "qk_ov_overlap_max.k2", "blocks.2", steps, 1 - rising),
        # tolerance rule, with a clean drop at index 8 (step 400) and NaN/Inf sprinkled in
        tidy(
            "r1",
            "loss",
            "model",
            steps,
            np.where(i >= 8, 1.0, 4.0) + np.where(np.isin(i, [2, 15]), np.nan, 0.0),
        ),
        tidy("r1", "loss_inf", "model", steps, np.where(i == 5, np.inf, np.where(i >= 8, 1.0, 4.0))),
        # never settles above 0.9
        tidy("r1", "cka_to_final", "blocks.3", steps, 0.5 * rising),
        # too few finite points
        tidy("r1", "cka_to_final", "blocks.4", steps, np.where(i == 3, 0.5, np.nan)),
        # another run ("r0" sorts first); a straight line: only its final value is within 5 %
        # of its range of the final value -> never settles
        tidy("r0", "loss", "model", steps, np.linspace(3, 1, 20)),
        tidy("r0", "acc", "model", steps, np.where(i >= 10, 0.9, 0.1)),
    ]
    return pd.concat(parts, ignore_index=True)


THRESHOLDS = {
    "cka_to_final": {"value": 0.9, "direction": "above"},
    "qk_ov_overlap_max": {"value": 0.5, "direction": "above"},
    "qk_ov_overlap_max.k2": {"value": 0.25, "direction": "below"},
}


def test_threshold_lookup():
    assert base_metric("qk_ov_overlap_max.k1") == "qk_ov_overlap_max"
    assert base_metric("loss") == "loss"
    assert threshold_for("qk_ov_overlap_max.k1", THRESHOLDS) == (0.5, "above")
    assert threshold_for("qk_ov_overlap_max.k2", THRESHOLDS) == (0.25, "below")
    assert threshold_for("qk_ov_overlap_max", THRESHOLDS) == (0.5, "above")
    assert threshold_for("loss", THRESHOLDS) is None
    assert threshold_for("x", {"x": 3}) == (3.0, "above")
    assert threshold_for("x", {"x": {"value": 1}}) == (1.0, "above")
    assert threshold_for("x", None) is None


def test_detect_dynamics_values(table):
    events, notes = detect_dynamics(table, thresholds=THRESHOLDS)
    assert list(events.columns) == DYNAMICS_COLUMNS
    rows = [tuple(r) for r in events[["run", "metric", "layer", "kind", "step"]].itertuples(index=False)]
    assert rows == [
        ("r0", "acc", "model", "converged", 500),
        ("r0", "acc", "model", "change_point", 500),
        ("r1", "cka_to_final", "blocks.2", "converged", 450),
        ("r1", "cka_to_final", "blocks.10", "converged", 450),  # depth order: 2 before 10
        ("r1", "loss", "model", "converged", 400),
        ("r1", "loss", "model", "change_point", 400),
        ("r1", "loss_inf", "model", "converged", 400),
        ("r1", "loss_inf", "model", "change_point", 400),
        ("r1", "qk_ov_overlap_max.k1", "blocks.2", "converged", 250),  # base name: >= 0.5
        ("r1", "qk_ov_overlap_max.k2", "blocks.2", "converged", 400),  # exact name: <= 0.25
    ]
    conv = events[events.kind == "converged"].set_index(["run", "metric", "layer"])
    # value: the metric at that step; score: fraction of finite checkpoints from it on
    assert conv.loc[("r1", "cka_to_final", "blocks.2"), "value"] == pytest.approx(0.9)
    assert conv.loc[("r1", "cka_to_final", "blocks.2"), "score"] == pytest.approx(11 / 20)
    assert conv.loc[("r1", "qk_ov_overlap_max.k2", "blocks.2"), "value"] == pytest.approx(0.2)
    assert conv.loc[("r1", "loss", "model"), "score"] == pytest.approx(11 / 18)  # 2 NaN dropped
    assert conv.loc[("r0", "acc", "model"), "value"] == pytest.approx(0.9)
    assert conv.loc[("r0", "acc", "model"), "score"] == pytest.approx(0.5)
    cps = events[events.kind == "change_point"]
    assert cps["value"].to_numpy() == pytest.approx([0.8, -3.0, -3.0])  # new mean - old mean
    assert (cps["score"] > 4).all()
    # each converged step is convergence_step with the threshold that applies
    g = table[(table.metric == "qk_ov_overlap_max.k2")]
    assert convergence_step(g.step, g.value, threshold=0.25, direction="below") == 400
    assert convergence_step(g.step, g.value, threshold=0.5, direction="above") is None

    def has(*parts):
        return sum(all(p in n for p in parts) for n in notes)

    assert has("'blocks.3'", "never settles", "above 0.9") == 1
    assert has("run 'r0', metric 'loss'", "never settles", "within 0.05") == 1
    assert has("'blocks.4'", "skipped", "1 finite value") == 1
    assert has("'loss'", "2 non-finite value(s)") == 1
    assert has("'loss_inf'", "1 non-finite value(s)") == 1
    assert has("'blocks.4'", "19 non-finite") == 1
    assert len(notes) == 6


def test_detect_dynamics_without_thresholds_and_options(table):
    events, _ = detect_dynamics(table, max_change_points=0)
    assert (events.kind == "converged").all()
    # without the threshold, cka_to_final uses the tolerance rule: within 0.05 of 1.0 from 0.95
    conv = events.set_index(["run", "metric", "layer"])
    assert conv.loc[("r1", "cka_to_final", "blocks.2"), "step"] == 500
    # extra options reach change_points
    events, _ = detect_dynamics(table, min_snr=1e9)
    assert (events.kind == "converged").all()


def test_detect_dynamics_duplicates_and_errors(table):
    doubled = pd.concat([table, table.iloc[:3]], ignore_index=True)
    events, notes = detect_dynamics(doubled, thresholds=THRESHOLDS)
    assert any("3 duplicate" in n for n in notes)
    pd.testing.assert_frame_equal(events, detect_dynamics(table, thresholds=THRESHOLDS)[0])
    with pytest.raises(ValueError, match="direction"):
        detect_dynamics(table, thresholds={"loss": {"value": 1, "direction": "up"}})
    with pytest.raises(ValueError, match="lacks column"):
        detect_dynamics(table.drop(columns="layer"))
    empty, notes = detect_dynamics(table.iloc[:0])
    assert list(empty.columns) == DYNAMICS_COLUMNS and empty.empty and notes == []


def test_detect_dynamics_is_deterministic_under_row_order(table):
    shuffled = table.sample(frac=1.0, random_state=0)
    a, notes_a = detect_dynamics(table, thresholds=THRESHOLDS)
    b, notes_b = detect_dynamics(shuffled, thresholds=THRESHOLDS)
    pd.testing.assert_frame_equal(a, b)
    assert notes_a == notes_b


# --------------------------------------------------------------------------------------------
# training_log_dynamics
# --------------------------------------------------------------------------------------------


def test_training_log_sigmoid_loss_drop():
    steps = np.arange(0, 2001, 20)  # logged every 20 steps
    rng = np.random.default_rng(7)
    center = 1010.0  # between the logs at 1000 and 1020: the new level starts at 1020
    drop = 1 / (1 + np.exp(-(steps - center) / 15.0))
    log = pd.DataFrame(
        {
            "step": steps,
            "loss": 4.0 - 3.5 * drop + rng.normal(0, 0.03, steps.size),
            "id_error": 0.9 - 0.85 * drop + rng.normal(0, 0.01, steps.size),
            "ood_error": 0.97 + rng.normal(0, 0.01, steps.size),  # never learned: noise only
            "seconds": np.cumsum(rng.uniform(0.1, 0.2, steps.size)),
        }
    )
    events, notes = training_log_dynamics(log, "toy")
    assert list(events.columns) == DYNAMICS_COLUMNS
    assert set(events.run) == {"toy"} and set(events.layer) == {"model"}
    assert "seconds" not in set(events.metric)
    cps = events[events.kind == "change_point"]
    assert list(zip(cps.metric, cps.step)) == [("id_error", 1020), ("loss", 1020)]
    loss_cp = cps[cps.metric == "loss"].iloc[0]
    assert loss_cp.value == pytest.approx(-3.5, abs=0.1)
    conv = events[events.kind == "converged"].set_index("metric")
    assert conv.loc["loss", "step"] == convergence_step(log.step, log.loss)
    assert 1020 <= conv.loc["loss", "step"] <= 1100
    # the same through detect_dynamics on the tidy form
    tidy_log = log.melt(id_vars="step", value_vars=["loss"], var_name="metric")
    tidy_log["run"], tidy_log["layer"] = "toy", "model"
    direct, _ = detect_dynamics(tidy_log)
    pd.testing.assert_frame_equal(direct, events[events.metric == "loss"].reset_index(drop=True))
    # ood_error: no change point; converged or a note, never both
    assert ("ood_error" in conv.index) != any("'ood_error'" in n and "never settles" in n for n in notes)


def test_training_log_missing_column_and_options():
    log = pd.DataFrame({"step": [0, 10, 20, 30], "loss": [4.0, 3.0, 1.0, 1.0]})
    events, notes = training_log_dynamics(log, "r", layer="", max_change_points=0)
    assert notes == [
        "run 'r': training log has no column 'id_error'; skipped",
        "run 'r': training log has no column 'ood_error'; skipped",
    ]
    assert events.to_dict("records") == [
        {
            "run": "r",
            "metric": "loss",
            "layer": "",
            "kind": "converged",
            "step": 20,
            "value": 1.0,
            "score": 0.5,
        }
    ]
    with pytest.raises(ValueError, match="'step'"):
        training_log_dynamics(log.drop(columns="step"), "r")
