"""Fits to the empirical spectral density (ESD) of a weight matrix: the power-law exponent α and the
Marchenko–Pastur bulk, as WeightWatcher 0.7.7 computes them, and the Hill estimator of
AlphaPruning / TempBalance. numpy only at import (scipy inside :func:`mp_fit`).

Notation: W is N×M with N ≥ M after orientation (the fits do not depend on it), λ_1 ≤ … ≤ λ_M
the eigenvalues of the M×M Gram matrix WᵀW (λ = σ², not divided by N), ascending here.

Power law (``estimator="ww"``, WeightWatcher's ``WWFit``, its default ``pl_package="ww"``):
    x = the eigenvalues > 1e-5 (an absolute threshold, WW's EVALS_THRESH), ascending, n_tot of them.
    n_tot ≥ 20: for every candidate i = 0 … n_tot − 2 (every eigenvalue but the largest),
        n_i = n_tot − i,  α_i = 1 + n_i / Σ_{j≥i} ln(x_j / x_i)        (Clauset's MLE, tail ∋ x_i)
        D_i = max_{j≥i} |1 − (x_j / x_i)^{1−α_i} − (j − i)/n_i|   if α_i > 1, else 1
      (a one-sided Kolmogorov–Smirnov distance: the empirical CDF is the lower step (j − i)/n_i);
      i* = argmin D_i (the first on ties): α = α_{i*}, xmin = x_{i*}, D = D_{i*}.
    n_tot < 20 ("small N"): candidates with n_i ≥ 8 and s_i = Σ ln(x_j/x_i) > 1e-12, the
      bias-corrected α_i = 1 + (n_i − 1)/s_i, the same D_i (1 for the others), i* = argmin D_i
      (WW's small-N code ranks by J_i = D_i − 0.868/√n_i, but ``WWFit.__init__`` then re-selects
      argmin D, and that is what ``analyze()`` reports); without such a candidate, i = 0 on all
      n_tot points (WW's fallback: kept, with a warning).
Hill (``estimator="hill"``, AlphaPruning ``xmin_mid`` / TempBalance ``pl_fitting="median"``):
    all M eigenvalues (zeros kept), i = ⌊M/2⌋, xmin = λ_i, n = M − i, α and D as above with that i
    alone: O(M) instead of O(M²). It is (k+1)/k times the textbook Hill estimate 1 + 1/γ̂ with the
    k = n − 1 order statistics above xmin (the threshold point is counted in n).

Marchenko–Pastur fit (WW ``analyze(mp_fit=True)``: ``mp_fit`` → ``fit_density_with_range``):
    Q = N/M; ev' = ev·M/Σev (mean eigenvalue 1, zeros kept); s0 = √(λ'_max)/(1 + 1/√Q);
    x = ev' (Q ≠ 1) or √ev' (Q = 1, the quarter-circle law of the singular values);
    ρ̂ = linear-kernel density estimate of x, bandwidth 0.1, on 1000 points of [0, max x + 0.5];
    σ = argmin over σ of Σ (ρ_MP(σ) − ρ̂)² on the points where ρ̂ > 0.01 (1000 per point when the
    MP edges λ± = σ²(1 ± 1/√Q)² miss the KDE peak), by a grid 0.05·s0 … 2·s0 step 0.01·s0
    polished by Nelder–Mead (``scipy.optimize.brute`` with its default ``fmin`` finish);
    λ₊ = σ²(1 + 1/√Q)²; mp_softrank = λ₊/λ'_max; num_spikes = #{ev' > λ₊ + √TW},
    TW = Q^{−1/2} λ₊^{2/3} M^{−2/3} (WW's Tracy–Widom margin).
    WeightWatcher refits the KDE inside every one of the ~250 objective evaluations although it does
    not depend on σ; here it is computed once, and the grid is evaluated at once: the same numbers
    (to rounding) in milliseconds instead of ~1 s per matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .registry import Degenerate, metric_warning

EVALS_THRESH = 1e-5  # WW: eigenvalues at or below are left out of the power-law fit
SMALL_N_CUTOFF = 20  # WW: fewer eigenvalues above EVALS_THRESH use the small-N fit
SMALL_N_K_MIN = 8  # WW: smallest tail of a small-N candidate
MIN_EVALS = 8  # WW analyze(min_evals=8): smaller spectra are not fitted
FLAT = 1e-9  # a tail with λ_max ≤ xmin·(1 + FLAT) is flat to rounding: α would be ~1/rounding
KDE_BANDWIDTH = 0.1
KDE_POINTS = 1000
KDE_THRESH = 0.01


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float
    xmin: float
    D: float
    n_tail: int  # eigenvalues in the fitted tail (≥ xmin)


@dataclass(frozen=True)
class MPFit:
    sigma: float  # σ of the MP law, in units where the mean eigenvalue is 1
    bulk_max: float  # λ₊ in those units
    lambda_max: float  # λ'_max in those units
    num_spikes: int

    @property
    def softrank(self) -> float:
        return self.bulk_max / self.lambda_max


def _check_size(evals: np.ndarray) -> None:
    if evals.size < MIN_EVALS:
        raise Degenerate(
            f"{evals.size} eigenvalues: ESD fits need at least {MIN_EVALS} (WeightWatcher skips such layers)"
        )


def _ks_distances(x: np.ndarray, alphas: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """D_i = max_{j≥i} |1 − (x_j/x_i)^{1−α_i} − (j−i)/n_i| for each candidate i (x ascending),
    in blocks of ≤ 64 candidates (each against its tail only); D_i = 1 where α_i ≤ 1 (WW's
    convention). (x_j/x_i)^{1−α} is taken as exp((1−α)·(ln x_j − ln x_i)): the same to ~1e-15."""
    n_tot = x.size
    out = np.ones(candidates.size)
    ok = np.flatnonzero(alphas[candidates] > 1)
    if ok.size == 0:
        return out
    lx = np.log(x)
    rows = max(1, min(64, (1 << 20) // n_tot))
    for start in range(0, ok.size, rows):
        sel = ok[start : start + rows]
        idx = candidates[sel]
        i0 = int(idx.min())
        j = np.arange(i0, n_tot)  # columns: the tail of the first candidate of the block
        n_i = (n_tot - idx).astype(np.float64)[:, None]
        power = np.exp((1 - alphas[idx])[:, None] * (lx[None, i0:] - lx[idx][:, None]))
        f = np.abs(1 - power - (j[None, :] - idx[:, None]) / n_i)
        f[j[None, :] < idx[:, None]] = 0.0  # j < i is not in the tail
        out[sel] = f.max(axis=1)
    return out


def ww_power_law(evals_ascending: np.ndarray) -> PowerLawFit:
    """WeightWatcher's power-law fit of the eigenvalues (see the module docstring)."""
    evals = np.asarray(evals_ascending, dtype=np.float64)
    _check_size(evals)
    x = np.sort(evals[evals > EVALS_THRESH])
    n_tot = x.size
    if n_tot < 2:
        raise Degenerate(f"{n_tot} eigenvalue(s) above {EVALS_THRESH:g}: no power law to fit")
    lx = np.log(x)
    cand = np.arange(n_tot - 1)
    n = (n_tot - cand).astype(np.float64)
    tail_log = np.cumsum(lx[::-1])[::-1][:-1]  # Σ_{j≥i} ln x_j
    s = tail_log - n * lx[:-1]  # Σ_{j≥i} ln(x_j/x_i)
    if n_tot >= SMALL_N_CUTOFF:
        with np.errstate(divide="ignore"):
            alphas = 1 + n / s
        ds = _ks_distances(x, alphas, cand)
        best = int(np.argmin(ds))
        fit = PowerLawFit(float(alphas[best]), float(x[best]), float(ds[best]), int(n[best]))
    else:
        valid = (n >= SMALL_N_K_MIN) & (s > 1e-12)
        alphas = np.where(valid, 1 + (n - 1) / np.where(valid, s, 1.0), 0.0)
        valid &= alphas > 1
        if valid.any():
            # WWFit.fit_powerlaw_smallN picks the candidate minimising J = D − 0.868/√n, but
            # WWFit.__init__ then re-selects argmin D over all candidates (D = 1 where invalid):
            # what analyze() reports is the latter, so that is what is reproduced here.
            ds = _ks_distances(x, np.where(valid, alphas, 0.0), cand)
            best = int(np.argmin(ds))
            fit = PowerLawFit(float(alphas[best]), float(x[best]), float(ds[best]), int(n[best]))
        else:
            s0 = float(np.sum(lx) - n_tot * lx[0])
            if s0 <= 1e-12:
                raise Degenerate(f"the {n_tot} eigenvalues above {EVALS_THRESH:g} are all equal: no power law")
            a = 1.0 + (n_tot - 1.0) / s0
            d = float(np.max(np.abs(np.arange(n_tot) / n_tot - (1.0 - (x / x[0]) ** (1.0 - a)))))
            metric_warning(
                f"power law fitted on all {n_tot} eigenvalues above {EVALS_THRESH:g} "
                f"(fewer than {SMALL_N_K_MIN} in any tail: WeightWatcher's small-sample fallback)"
            )
            fit = PowerLawFit(a, float(x[0]), d, n_tot)
    if not math.isfinite(fit.alpha) or x[-1] <= fit.xmin * (1 + FLAT):
        raise Degenerate(
            f"power-law fit did not converge (alpha = {fit.alpha:.3g}: the tail eigenvalues are all equal)"
        )
    return fit


def hill_power_law(evals_ascending: np.ndarray) -> PowerLawFit:
    """The Hill/median estimator of AlphaPruning and TempBalance (see the module docstring)."""
    e = np.sort(np.asarray(evals_ascending, dtype=np.float64))
    _check_size(e)
    i = int(e.size / 2)
    xmin = float(e[i])
    if xmin <= 0:
        raise Degenerate(f"the median eigenvalue is {xmin:g}: more than half the spectrum is null")
    if e[-1] <= xmin * (1 + FLAT):
        raise Degenerate("the upper half of the spectrum is flat (all eigenvalues equal): no power law")
    n = e.size - i
    le = np.log(e[i:])
    s = float(le.sum() - n * le[0])
    a = 1.0 + n / s
    d = float(np.max(np.abs(1 - (e[i:] / xmin) ** (1 - a) - np.arange(n) / n)))
    return PowerLawFit(a, xmin, d, n)


def linear_kde(x: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """(1/(n h)) Σ_i max(0, 1 − |g − x_i|/h): what ``KernelDensity(kernel="linear")`` gives (exp of
    its ``score_samples``), as a direct sum over the points within h of each grid point."""
    xs = np.sort(np.asarray(x, dtype=np.float64))
    lo = np.searchsorted(xs, grid - bandwidth, side="right")
    hi = np.searchsorted(xs, grid + bandwidth, side="left")
    out = np.zeros(grid.size)
    width = int((hi - lo).max()) if grid.size else 0
    if width == 0:
        return out
    chunk = max(1, (1 << 20) // width)
    for start in range(0, grid.size, chunk):
        g = grid[start : start + chunk]
        lo_c = lo[start : start + chunk]
        k = np.arange(width)
        idx = lo_c[:, None] + k[None, :]
        inside = idx < hi[start : start + chunk][:, None]
        pts = xs[np.minimum(idx, xs.size - 1)]
        w = np.where(inside, np.maximum(0.0, 1 - np.abs(g[:, None] - pts) / bandwidth), 0.0)
        out[start : start + chunk] = w.sum(axis=1)
    return out / (xs.size * bandwidth)


class _MPObjective:
    """WW's ``resid_mp(σ, x, Q, bw=0.1, allresid=False)`` with the KDE computed once."""

    def __init__(self, x: np.ndarray, Q: float):
        self.Q = Q
        xde = np.linspace(0, np.max(x) + 0.5, KDE_POINTS)
        yde = linear_kde(x, xde, KDE_BANDWIDTH)
        good = yde > KDE_THRESH
        self.xde, self.yde = xde[good], yde[good]
        self.x_peak = self.xde[np.argmax(self.yde)] if self.yde.size else np.nan
        self.x_top = np.max(self.xde) if self.xde.size else np.nan

    def residuals(self, sigma: np.ndarray) -> np.ndarray:
        """Σ resid² for each σ in a 1-D array (WW's arithmetic, one row per σ). A σ whose MP edges
        miss the KDE peak scores 1000² per point, as in WW, without evaluating the density; the
        zeros WW appends for the points where the KDE is < 0.01 add nothing to the sum."""
        sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
        out = np.empty(sigma.size)
        x, y = self.xde[None, :], self.yde[None, :]
        with np.errstate(all="ignore"):
            if self.Q == 1:
                s = sigma[:, None]
                val = np.nan_to_num((1 / (np.pi * s * s)) * np.sqrt(4 - x**2))
                return np.sum((val - y) ** 2, axis=1)
            b = np.power(sigma * (1 + np.sqrt(1 / self.Q)), 2)
            a = np.power(sigma * (1 - np.sqrt(1 / self.Q)), 2)
            penal = (b < self.x_peak) | (b > self.x_top) | (a > self.x_peak)
            out[penal] = self.yde.size * 1000.0**2
            live = ~penal
            if live.any():
                s, bl, al = sigma[live][:, None], b[live][:, None], a[live][:, None]
                val = np.nan_to_num((1 / (2 * np.pi * s * s * x * (1 / self.Q))) * np.sqrt((bl - x) * (x - al)))
                out[live] = np.sum((val - y) ** 2, axis=1)
        return out

    def __call__(self, p) -> float:
        return float(self.residuals(np.atleast_1d(p)[:1])[0])


def mp_fit(evals: np.ndarray, shape: tuple[int, int]) -> MPFit:
    """WeightWatcher's Marchenko–Pastur fit of the eigenvalues of an N×M matrix (module docstring)."""
    from scipy import optimize

    ev = np.asarray(evals, dtype=np.float64)
    _check_size(ev)
    N, M = max(shape), min(shape)
    Q = N / M
    total = float(np.sum(ev))
    if total <= 0:
        raise Degenerate("all eigenvalues are zero: no Marchenko-Pastur bulk")
    scale2 = ev.size / total  # WW: Wscale² = num_evals / Σλ
    ev = scale2 * ev
    lam_max = float(np.max(ev))
    s0 = math.sqrt(lam_max / (1 + 1 / math.sqrt(Q)) ** 2)  # WW calc_sigma
    objective = _MPObjective(np.sqrt(ev) if Q == 1 else ev, Q)
    if objective.xde.size == 0:
        raise Degenerate("the eigenvalue density is below 0.01 everywhere: no Marchenko-Pastur bulk")
    grid = np.mgrid[slice(0.05 * s0, 2.0 * s0, 0.01 * s0)]
    j = objective.residuals(grid)
    start = grid[int(np.argmin(j))]
    res = optimize.fmin(objective, start, full_output=True, disp=False)
    sigma = float(np.atleast_1d(res[0])[0])
    bulk_max = (sigma * (1 + 1 / math.sqrt(Q))) ** 2
    tw = 1 / math.sqrt(Q) * abs(bulk_max) ** (2 / 3) * M ** (-2 / 3)
    if not (math.isfinite(sigma) and sigma > 0):
        raise Degenerate(f"Marchenko-Pastur fit did not converge (sigma = {sigma})")
    spikes = int(np.sum(ev > bulk_max + math.sqrt(tw)))
    return MPFit(sigma, bulk_max, lam_max, spikes)
