"""Group-sequential boundaries for seed-by-seed looks: how much α each look may spend, calibrated to spend it all.

A sequential study looks at n = first..last seeds per candidate and stops a comparison once it is decided. A look
rejects when its paired-t p-value p_n is below a nominal level a_n = κ·w_n, where w_n is the boundary's shape
(`stats.look_alphas` with α = 1: half of the weight at the last look, the rest evenly before it) and κ is chosen so
the chance of rejecting at any look under the null is exactly the level asked for:

    P_null(min_n p_n / w_n < κ(α')) = α'.

Under Gaussian differences the sequence of paired t statistics is pivotal (its law does not depend on the mean's
scale or the sd), so κ is a quantile of S = min_n p_n/w_n over simulated null sequences: Monte Carlo with a fixed
seed, cached per (first, last), exact up to its 1/√N sampling error. The union bound (κ = α', Bonferroni over
looks) is the special case that ignores the looks' correlation and so spends less than α (3.6% at 3..10 seeds).

Two-sided tests (better/worse) use S of two-sided p-values; the equivalence test uses S of one-sided ones: at the
edge of its null (Δ = ±margin) the near one-sided t statistic is a central t, so its false-equivalence rate is
exactly α' too. With several comparisons Holm is applied to the sequential p-values F_S(p_n/w_n) (the smallest α'
at which look n rejects): Maurer & Bretz (2013) show that step-down Holm with group-sequential tests, each rejected
hypothesis passing its α to the rest at every later look, keeps the family-wise error ≤ α.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import special

SIMULATIONS = 200_000  # κ's Monte Carlo error: ±0.0005 on a 5% level (one binomial standard error)
CALIBRATION_SEED = 2013
BOUNDARIES = ("calibrated", "union")


def shape(first: int, last: int) -> dict[int, float]:
    """w_n: the share of α each look gets before calibration (half at the last look, the rest evenly; Σ w = 1)."""
    if last <= first:
        return {first: 1.0}
    early = 0.5 / (last - first)
    return {n: (0.5 if n == last else early) for n in range(first, last + 1)}


@functools.lru_cache(maxsize=32)
def null_minima(first: int, last: int, sides: int) -> np.ndarray:
    """Sorted S = min_n p_n / w_n over SIMULATIONS null sequences of paired differences (p two- or one-sided)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    d = rng.standard_normal((SIMULATIONS, last))
    w = shape(first, last)
    s = np.full(SIMULATIONS, np.inf)
    total, squares = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
    for n in range(first, last + 1):
        mean = total[:, n - 1] / n
        sd = np.sqrt(np.maximum(squares[:, n - 1] - n * mean * mean, 0.0) / (n - 1))
        t = mean / (sd / math.sqrt(n))
        p = special.stdtr(n - 1, -t) if sides == 1 else 2 * special.stdtr(n - 1, -np.abs(t))
        s = np.minimum(s, p / w[n])
    return np.sort(s)


def sequential_p(p: float, n: int, first: int, last: int, sides: int = 2, boundary: str = "calibrated") -> float:
    """The smallest overall level α' at which look n's p-value rejects: F_S(p/w_n) = P_null(S ≤ p/w_n), so
    "sequential p ≤ α'" ⇔ "p < κ(α')·w_n". A single look gives p itself; the union bound gives min(1, p/w_n)."""
    if not math.isfinite(p):
        return 1.0
    x = p / shape(first, last)[n]
    if last <= first or boundary == "union":
        return min(1.0, x)
    s = null_minima(first, last, sides)
    return max(int(np.searchsorted(s, x, side="right")), 1) / len(s)


def nominal(level: float, n: int, first: int, last: int, sides: int = 2, boundary: str = "calibrated") -> float:
    """a_n = κ(level)·w_n: look n's nominal level (two-sided, or each one-sided test's) for an overall `level`.

    κ(level) is the ⌊level·N⌋-th smallest simulated S, so p < a_n exactly when `sequential_p` ≤ level."""
    w = shape(first, last)[n]
    if last <= first or boundary == "union":
        return level * w
    s = null_minima(first, last, sides)
    k = math.floor(level * len(s) + 1e-9)
    return float(s[min(k, len(s) - 1)]) * w if k >= 1 else 0.0


ESTIMATE_SIMULATIONS = 4_000  # common random numbers: E_θ[Δ̂_stop] is smooth in θ, so root finding is stable


@functools.lru_cache(maxsize=8)
def _noise(last: int) -> np.ndarray:
    return np.random.default_rng(CALIBRATION_SEED + 1).standard_normal((ESTIMATE_SIMULATIONS, last))


def mean_at_stop(theta: float, sd: float, margin: float, nominals: dict[int, tuple[float, float]]) -> float:
    """E_θ[Δ̂ where the comparison stops]: paired differences N(θ, sd²), stopping at the first look n whose
    two-sided p < a_n (better/worse) or TOST p < e_n (equivalent), else at the last; `nominals` = {n: (a_n, e_n)}."""
    looks = sorted(nominals)
    d = theta + sd * _noise(looks[-1])
    estimate = np.full(len(d), np.nan)
    for n in looks:
        mean = d[:, :n].mean(axis=1)
        se = d[:, :n].std(axis=1, ddof=1) / math.sqrt(n)
        a, e = nominals[n]
        tost = np.maximum(special.stdtr(n - 1, -(mean + margin) / se), special.stdtr(n - 1, (mean - margin) / se))
        stop = (2 * special.stdtr(n - 1, -np.abs(mean) / se) < a) | (tost < e) | (n == looks[-1])
        estimate = np.where(np.isnan(estimate) & stop, mean, estimate)
    return float(estimate.mean())


def adjusted_delta(delta: float, sd: float, margin: float, nominals: dict[int, tuple[float, float]]) -> float:
    """Whitehead's bias-adjusted estimate after a sequential stop: the θ with E_θ[Δ̂_stop] = Δ̂ (observed).

    Why: stopping when an effect looks large keeps the lucky overestimates, so the naive Δ̂ of an early "better"
    is biased away from 0; the adjusted one removes that mean bias, using the observed sd as if it were the true
    one. A fixed design (one look) has no such bias and gets Δ̂ back."""
    if len(nominals) < 2 or not (sd > 0 and math.isfinite(delta)):
        return delta

    def gap(theta: float) -> float:
        return mean_at_stop(theta, sd, margin, nominals) - delta

    lo, hi = delta - 3 * sd, delta + 3 * sd
    if gap(lo) > 0 or gap(hi) < 0:  # the bias cannot explain Δ̂ within ±3 sd: keep the naive estimate
        return delta
    from scipy import optimize

    return float(optimize.brentq(gap, lo, hi, xtol=sd * 1e-3))
