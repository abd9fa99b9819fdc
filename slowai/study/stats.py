"""Small-sample statistics for seed-repeated runs: t-based CIs and Welch's test, so "better" comes with error bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class MeanCI:
    """Mean of n runs, sample std (ddof=1) and the t-distribution confidence interval of the mean."""

    mean: float
    std: float
    lo: float
    hi: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


@dataclass(frozen=True)
class DiffCI:
    """mean(a) - mean(b) with its Welch confidence interval, Welch's t-test p-value and the Welch df."""

    delta: float
    lo: float
    hi: float
    p: float
    df: float


def mean_ci(xs: Sequence[float], conf: float = 0.95) -> MeanCI:
    """t-interval of the mean: mean ± t_{(1+conf)/2, n-1} · s/√n (NaN bounds below two runs)."""
    x = np.asarray(xs, dtype=float)
    n = len(x)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    mean = float(x.mean())
    if n < 2:
        return MeanCI(mean, math.nan, math.nan, math.nan, n)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + conf) / 2, n - 1)) * std / math.sqrt(n)
    return MeanCI(mean, std, mean - half, mean + half, n)


def welch_diff(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> DiffCI:
    """Welch's unequal-variance comparison of a vs b: Δ = mean(a) - mean(b), its CI and the two-sided p-value."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        d = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else math.nan
        return DiffCI(d, math.nan, math.nan, math.nan, math.nan)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    delta, se = float(xa.mean() - xb.mean()), math.sqrt(va + vb)
    if se == 0:  # identical runs on both sides: the difference is exact
        return DiffCI(delta, delta, delta, 1.0 if delta == 0 else 0.0, math.inf)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = float(stats.t.ppf((1 + conf) / 2, df)) * se
    p = float(2 * stats.t.sf(abs(delta) / se, df))  # Welch's t-test, from the same se and df as the interval
    return DiffCI(delta, delta - half, delta + half, p, float(df))
