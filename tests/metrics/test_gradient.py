"""Gradient metrics (ckptlens.metrics.gradient): norm, cosine and signal-to-noise ratio against plain
formulas."""

import math

import numpy as np
import pytest

from ckptlens import metrics as M


def test_gradient_norm_and_cosine_plain():
    g = np.random.default_rng(0).standard_normal((4, 3, 5))
    rows = M.compute_family("gradient", {"gradient_norm": {}, "gradient_cosine": {}}, {"l": g})
    got = {r["metric"]: r["value"] for r in rows}
    flat = g.reshape(4, -1)
    assert got["gradient_norm"] == pytest.approx(np.mean([np.linalg.norm(f) for f in flat]))
    cos = [a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(flat[:-1], flat[1:])]
    assert got["gradient_cosine"] == pytest.approx(np.mean(cos))


# ---------------------------------------------------------------- gradient signal-to-noise ratio


def snr_plain(g, form):
    """The definitions written out over the K per-batch gradients g_k (flattened)."""
    g = g.reshape(len(g), -1)
    k = len(g)
    mean = sum(g) / k
    if form == "norm":  # ‖ḡ‖² / ((1/(K−1)) Σ_k ‖g_k − ḡ‖²)
        return float(mean @ mean / (sum((row - mean) @ (row - mean) for row in g) / (k - 1)))
    var = sum((row - mean) ** 2 for row in g) / (k - 1)  # Liu et al.'s GSNR per parameter, averaged
    return float(np.mean(mean**2 / var))


@pytest.mark.parametrize("form", ["norm", "parameter"])
def test_gradient_snr_matches_plain_formulas(form):
    rng = np.random.default_rng(1)
    signal = rng.standard_normal((3, 5))
    g = signal + 0.7 * rng.standard_normal((6, 3, 5))  # 6 probe batches sharing a signal
    rows = M.compute_family(
        "gradient",
        {"gradient_snr": {"form": form}},
        {"l": g, "noise": rng.standard_normal((6, 3, 5))},
    )
    got = {r["layer"]: r["value"] for r in rows}
    assert got["l"] == pytest.approx(snr_plain(g, form), rel=1e-12)
    assert got["l"] > 1.0 > got["noise"]
    debiased = M.compute_family("gradient", {"gradient_snr": {"form": form, "debiased": True}}, {"l": g})
    assert debiased[0]["value"] == pytest.approx(snr_plain(g, form) - 1 / 6, rel=1e-12)


def test_gradient_snr_of_pure_noise_is_about_one_over_k():
    """E‖ḡ‖² = tr Σ / K without signal: SNR ≈ 1/K, the debiased one ≈ 0."""
    g = np.random.default_rng(2).standard_normal((4, 20000))
    rows = M.compute_family("gradient", {"gradient_snr": {"debiased": True}}, {"l": g, "m": g[:2]})
    got = {r["layer"]: r["value"] for r in rows}
    assert abs(got["l"]) < 0.02 and abs(got["m"]) < 0.03


def test_gradient_snr_degenerate_inputs():
    g = np.random.default_rng(3).standard_normal((1, 4, 3))
    same = np.repeat(np.random.default_rng(4).standard_normal((1, 6)), 3, axis=0)
    with pytest.warns(RuntimeWarning) as rec:
        rows = M.compute_family(
            "gradient",
            {"gradient_snr": {}},
            {"one_batch": g, "zero": np.zeros((3, 6)), "identical": same},
        )
    assert all(math.isnan(r["value"]) for r in rows)
    text = " ".join(str(w.message) for w in rec)
    assert "1 probe batch" in text and "all-zero gradients" in text and "no noise" in text
    with pytest.raises(M.MetricConfigError, match=r"metrics\.gradient_snr\.form"):
        M.resolve_params("gradient_snr", {"form": "sample"})


# ---------------------------------------------------------------- from gradient statistics


def stats_of(g) -> dict:
    """A gradient_stats extraction of one layer "l", written out over the K gradients (float64)."""
    g = np.asarray(g, dtype=np.float64).reshape(len(g), -1)
    mean = g.mean(axis=0)
    var = g.var(axis=0, ddof=1) if len(g) > 1 else np.zeros_like(mean)  # (no variance of one batch)
    pos = var > 0
    return {
        "l#norm": np.linalg.norm(g, axis=1),
        "l#dot": np.einsum("ij,ij->i", g[:-1], g[1:]),
        "l#mean_sq": np.array([mean @ mean]),
        "l#deviation_sq": np.array([((g - mean) ** 2).sum()]),
        "l#gsnr": np.array([np.sum(mean[pos] ** 2 / var[pos]), pos.sum(), np.sum(~pos & (mean != 0))]),
    }


METRICS = {"gradient_norm": {}, "gradient_cosine": {}, "gradient_snr": {}}


@pytest.mark.parametrize("form", ["norm", "parameter"])
def test_statistics_give_the_values_of_the_gradients(form):
    rng = np.random.default_rng(5)
    g = rng.standard_normal((3, 5)) + 0.6 * rng.standard_normal((5, 3, 5))
    metrics = {**METRICS, "gradient_snr": {"form": form}}
    raw = {(r["layer"], r["metric"]): r["value"] for r in M.compute_family("gradient", metrics, {"l": g})}
    stats = {(r["layer"], r["metric"]): r["value"] for r in M.compute_family("gradient", metrics, stats_of(g))}
    assert raw.keys() == stats.keys() == {("l", m) for m in METRICS}
    for key, value in raw.items():
        assert stats[key] == pytest.approx(value, rel=1e-12), key
    assert stats[("l", "gradient_snr")] == pytest.approx(snr_plain(g, form), rel=1e-12)


def test_statistics_degenerate_and_non_finite():
    same = np.repeat(np.random.default_rng(4).standard_normal((1, 6)), 3, axis=0)
    store = {f"same{k[1:]}": v for k, v in stats_of(same).items()}
    store.update({f"one{k[1:]}": v for k, v in stats_of(same[:1]).items()})
    store.update({f"bad{k[1:]}": v for k, v in stats_of(same).items()})
    store["bad#norm"] = np.array([np.nan, 1.0, 1.0])
    with pytest.warns(RuntimeWarning) as rec:
        rows = M.compute_family("gradient", {"gradient_snr": {}, "gradient_norm": {}}, store)
    got = {(r["layer"], r["metric"]): r["value"] for r in rows}
    assert math.isnan(got[("same", "gradient_snr")]) and math.isnan(got[("one", "gradient_snr")])
    assert math.isnan(got[("bad", "gradient_norm")]) and got[("one", "gradient_norm")] > 0
    text = " ".join(str(w.message) for w in rec)
    assert "no noise" in text and "1 probe batch" in text and "NaN/Inf" in text
    with pytest.warns(RuntimeWarning, match="SNR is infinite"):
        rows = M.compute_family(
            "gradient",
            {"gradient_snr": {"form": "parameter"}},
            {"l#norm": [1.0, 1.0], **{"l#gsnr": np.array([2.0, 3.0, 1.0])}},
        )
    assert math.isnan(rows[0]["value"])


def test_the_family_declares_the_statistics_its_metrics_read():
    from ckptlens.metrics.gradient import statistics

    fam = M.FAMILIES["gradient"]
    assert fam.needs == "gradient_stats" and fam.statistics is statistics
    assert statistics({"gradient_norm": {}}) == ["norm"]
    assert statistics({"gradient_cosine": {}}) == ["norm", "dot"]
    assert statistics({"gradient_snr": M.resolve_params("gradient_snr", {})}) == ["norm", "mean"]
    snr = M.resolve_params("gradient_snr", {"form": "parameter"})
    assert statistics({"gradient_cosine": {}, "gradient_snr": snr}) == ["norm", "dot", "variance"]
