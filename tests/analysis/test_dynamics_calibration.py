"""Calibration of :func:`ckptlens.analysis.dynamics.change_points` on a corpus of trajectories
whose answer is known: how often it reports a change where there is none (false positives, per
kind of series) and how often it finds a true transition. The README's change-point calibration
table is :func:`calibration_table` printed by ``python -m tests.analysis.test_dynamics_calibration``.

Kinds of series (steps evenly spaced unless said; lengths 7 .. 120 checkpoints):

* noise-only: Gaussian noise around a constant;
* smooth monotone: straight lines and exponential decays with a little noise (0.1 % of range);
* saturating: ``1 - exp(-t / tau)``, tau from 1/10 to 2/5 of the run, the notebook's shape;
* warm-up: a linear ramp over the first tenth of the run, then a ``1/sqrt`` decay (an update
  norm or gradient norm under a learning-rate warm-up);
* fine-tuning (MiniLM-like): what the issue saw on all-MiniLM-L6-v2 fine-tuned with the Trainer,
  an effective rank of 20 or 350 drifting smoothly by 1e-4 with 1e-6 noise, over 8 (the real
  run's) or more checkpoints;
* real Pythia trajectories (``../shared/data/pythia-learning-dynamics``, 27 log-spaced
  checkpoints; no ground truth): where the reported changes lie;
* induction-like drop: a loss plateau near ln(vocab) that drops to its final level within a
  few checkpoints, with noise (the demo's shape; the demo itself is
  tests/workflow/test_dynamics_induction.py); a noisy step.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ckptlens.analysis.dynamics import change_points

PYTHIA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "pythia-learning-dynamics" / "metrics.csv"

NO_CHANGE = (
    "noise-only",
    "smooth monotone",
    "saturating",
    "warm-up",
    "fine-tuning (MiniLM-like)",
)
WITH_CHANGE = ("induction-like drop", "noisy step (jump 10 sigma)", "noisy step (jump 6 sigma)")


def corpus(seeds: int = 10):
    """``(kind, steps, values, true change indices)`` of every trajectory of the corpus."""
    out = []
    for n in (10, 12, 15, 20, 27, 40, 120):
        for seed in range(5 * seeds):
            out.append(("noise-only", np.arange(n), np.random.default_rng(seed).normal(5.0, 1.0, n), []))
    for n in (7, 8, 10, 12, 15, 20, 27, 40):
        t = np.linspace(0, 1, n)
        i = np.arange(n, dtype=float)
        for seed in range(seeds):
            rng = np.random.default_rng(100 + seed)
            for k in (1, 3, 5):
                out.append(("smooth monotone", i, 0.5 + 3 * np.exp(-k * t) + rng.normal(0, 0.003, n), []))
            out.append(("smooth monotone", i, 2 - 1.5 * t + rng.normal(0, 0.003, n), []))
            for tau in (0.1, 0.2, 0.4):
                out.append(("saturating", i, 1 - np.exp(-t / tau) + rng.normal(0, 0.002, n), []))
            w = max(1, n // 10)
            warm = np.where(i < w, (i + 1) / w, np.sqrt(w / (i + 1)))
            out.append(("warm-up", i, warm + rng.normal(0, 0.005, n), []))
            for level in (20.0, 350.0):
                drift = level + 1e-4 * (1 - np.exp(-3 * t)) + rng.normal(0, 1e-6, n)
                out.append(("fine-tuning (MiniLM-like)", i, drift, []))
    for seed in range(2 * seeds):
        rng = np.random.default_rng(500 + seed)
        n, c = 70, 20 + seed % 30
        i = np.arange(n)
        loss = 1.0 + 3.2 / (1 + np.exp((i - c) / 1.0)) + rng.normal(0, 0.08, n)
        out.append(("induction-like drop", i * 10, loss, [c]))
        n, c = 27 + seed, 8 + seed % 10
        for snr in (6, 10):
            step = 10.0 - 3.0 * (np.arange(n) >= c) + rng.normal(0, 3.0 / snr, n)
            out.append((f"noisy step (jump {snr} sigma)", np.arange(n), step, [c]))
    return out


def calibration_table(seeds: int = 10) -> pd.DataFrame:
    """Per kind of series: how many, how many with a false change (any change where there is
    none, or one more than 2 checkpoints from the truth), how many true transitions found."""
    rows = collections.defaultdict(lambda: {"series": 0, "with a false change": 0, "transition found": 0})
    for kind, steps, x, truth in corpus(seeds):
        found = [c["index"] for c in change_points(steps, x)]
        row = rows[kind]
        row["series"] += 1
        row["with a false change"] += any(min((abs(f - t) for t in truth), default=99) > 2 for f in found)
        row["transition found"] += bool(truth) and any(abs(f - t) <= 2 for f in found for t in truth)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["false-positive rate"] = table["with a false change"] / table["series"]
    table["detection rate"] = np.where(
        table.index.isin(WITH_CHANGE), table["transition found"] / table["series"], np.nan
    )
    return table


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return calibration_table()


def test_no_false_change_on_smooth_saturating_warm_up_or_fine_tuning_series(table):
    for kind in NO_CHANGE[1:]:
        assert table.loc[kind, "with a false change"] == 0, kind


def test_false_positive_rate_on_pure_noise_is_small(table):
    # 350 noise-only series of 10 .. 120 points: at most 2 % flagged
    assert table.loc["noise-only", "false-positive rate"] <= 0.02


def test_true_transitions_are_found(table):
    for kind in WITH_CHANGE:
        assert table.loc[kind, "with a false change"] == 0, kind
    for kind in WITH_CHANGE[:2]:
        assert table.loc[kind, "detection rate"] == 1.0, kind
    # a jump of 6 noise sigma is near the limit (min_snr=4 and the fit-ratio test): most found
    assert table.loc["noisy step (jump 6 sigma)", "detection rate"] >= 0.6


def test_short_or_tiny_changes_give_none():
    # the cases: a smooth saturating 7-point curve; a 1e-4 step on a level of 100 with
    # a noise of 1e-7 (1000 sigma, but 1e-6 of the metric's scale)
    t = np.arange(7)
    assert change_points(t, 1 - np.exp(-t / 1.5)) == []
    i = np.arange(30)
    x = 100 + 1e-4 * (i >= 15) + np.random.default_rng(0).normal(0, 1e-7, 30)
    assert change_points(i, x) == []
    assert change_points(i, x, min_relative_jump=0.0) != []  # the noise test alone passes it
    # the same step at the metric's scale is found
    assert [
        c["index"] for c in change_points(i, 100 + 10 * (i >= 15) + np.random.default_rng(0).normal(0, 0.1, 30))
    ] == [15]


@pytest.mark.skipif(not PYTHIA.is_file(), reason="the real Pythia table is not here")
def test_real_pythia_changes_cluster_at_the_known_early_phase():
    """No ground truth, so no rate: the changes found on real 27-checkpoint trajectories lie at
    a few steps shared by many layers (the end of warm-up for gradient norms, the 1000 .. 13000
    reorganisation for CKA and weight norms), not spread over the run as noise would be."""
    df = pd.read_csv(PYTHIA)
    steps = collections.Counter()
    for _, h in df[df.metric.isin(["cka_scores", "weight_magnitudes"])].groupby(["model", "metric", "layer"]):
        h = h.sort_values("step")
        steps.update(c["step"] for c in change_points(h.step.to_numpy(), h.value.to_numpy()))
    total = sum(steps.values())
    assert total > 0
    assert sum(v for s, v in steps.items() if 1000 <= s <= 23000) / total >= 0.7


if __name__ == "__main__":
    print(calibration_table().to_markdown())


def test_detect_dynamics_says_when_a_trajectory_is_too_short():
    """8 checkpoints (the MiniLM fine-tuning run): convergence, but no change-point detection, and a
    note that says why."""
    from ckptlens.analysis.dynamics import detect_dynamics

    steps = np.arange(0, 400, 50)
    table = pd.DataFrame(
        {"run": "r", "step": steps, "layer": "encoder.layer.0", "metric": "rank", "value": 1 - np.exp(-steps / 80)}
    )
    events, notes = detect_dynamics(table)
    assert list(events["kind"]) == ["converged"]
    assert any("8 finite value(s), need at least 10 to tell a jump from noise" in n for n in notes)
    # even the saturating curve with fewer points required: its first two points are no level
    assert "change_point" not in set(detect_dynamics(table, min_points=4)[0]["kind"])
    # a clean step of 8 points is found when fewer points are allowed (min_points, on request)
    step = table.assign(value=(steps >= 200).astype(float))
    assert "change_point" not in set(detect_dynamics(step)[0]["kind"])
    cps = detect_dynamics(step, min_points=4)[0].query("kind == 'change_point'")
    assert list(cps["step"]) == [200]
