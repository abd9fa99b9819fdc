"""The statistics of seed-repeated runs, in one place: intervals, tests, multiplicity, power and tuning curves.

Every function is a formula from its docstring (checked against scipy on fixed inputs in tests/test_study_stats.py);
the decision rules that combine them into verdicts live in `verdicts`. Accuracies are fractions.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


class _Lazy:
    """A module imported on its first use: scipy.stats takes ~1 s, which every worker's start would otherwise pay."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


stats, optimize = _Lazy("scipy.stats"), _Lazy("scipy.optimize")

ALPHA = 0.05  # family-wise error rate of every family of claims
POWER = 0.8  # power at which the minimum detectable effect is quoted


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
    """mean(a) - mean(b), its confidence interval, the two-sided p-value of "no difference", its df and se;
    `method` is "paired" (n = pairs) or "Welch" (n = the smaller group), `sd` the sd the interval was built from
    (of the paired differences, or Welch's pooled sd √((s_a² + s_b²)/2))."""

    delta: float
    lo: float
    hi: float
    p: float
    df: float
    se: float = math.nan
    n: int = 0
    method: str = "Welch"
    sd: float = math.nan
    test_var: float = 0.0  # τ²: the test images' share of se² (slowai.study.analysis.testset), 0 when not estimated

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


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
    half = _t(conf, n - 1) * std / math.sqrt(n)
    return MeanCI(mean, std, mean - half, mean + half, n)


def _t(conf: float, df: float) -> float:
    return float(stats.t.ppf((1 + conf) / 2, df))


def t_interval(delta: float, se: float, df: float, conf: float, n: int, method: str, sd: float) -> DiffCI:
    """Δ ± t_{(1+conf)/2, df}·se and p = 2·P(T_df > |Δ|/se); se = 0 means an exact difference."""
    if se == 0:
        return DiffCI(delta, delta, delta, 1.0 if delta == 0 else 0.0, math.inf, 0.0, n, method, 0.0)
    half = _t(conf, df) * se
    p = float(2 * stats.t.sf(abs(delta) / se, df))
    return DiffCI(delta, delta - half, delta + half, p, float(df), se, n, method, sd)


def welch_diff(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> DiffCI:
    """Welch: Δ = ā - b̄, se² = s_a²/n_a + s_b²/n_b, df = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))."""
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        d = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else math.nan
        return DiffCI(d, math.nan, math.nan, math.nan, math.nan, n=min(len(xa), len(xb)))
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    delta, se = float(xa.mean() - xb.mean()), math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1)) if se > 0 else math.inf
    sd = math.sqrt((xa.var(ddof=1) + xb.var(ddof=1)) / 2)
    return t_interval(delta, se, df, conf, min(len(xa), len(xb)), "Welch", sd)


def paired_diff(a: Sequence[float], b: Sequence[float], conf: float = 0.95) -> DiffCI:
    """Paired t on d_i = a_i - b_i: Δ = d̄, se = s_d/√n, df = n - 1 (a_i and b_i share seed i's data stream)."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n = len(d)
    if n < 2:
        return DiffCI(float(d.mean()) if n else math.nan, math.nan, math.nan, math.nan, math.nan, n=n, method="paired")
    sd = float(d.std(ddof=1))
    return t_interval(float(d.mean()), sd / math.sqrt(n), n - 1, conf, n, "paired", sd)


def at_level(d: DiffCI, conf: float) -> DiffCI:
    """The same estimate and test at another confidence level: Δ ± t_{(1+conf)/2, df}·se."""
    if not math.isfinite(d.df) or d.se == 0:
        return d
    return replace(t_interval(d.delta, d.se, d.df, conf, d.n, d.method, d.sd), test_var=d.test_var)


def compare(a: Mapping[int, float], b: Mapping[int, float], conf: float = 0.95) -> DiffCI:
    """a vs b keyed by seed: paired on the seeds both ran (≥ 2 pairs), else Welch on every run of each."""
    common = [s for s in a if s in b]
    if len(common) >= 2:
        return paired_diff([a[s] for s in common], [b[s] for s in common], conf)
    return welch_diff(list(a.values()), list(b.values()), conf)


def tost_p(diff: DiffCI, margin: float) -> float:
    """Two one-sided tests of |Δ| ≥ margin: p = max(P(T_df > (Δ + m)/se), P(T_df < (Δ - m)/se)).

    p ≤ α is the same as the (1 - 2α) interval lying inside (-margin, +margin): equivalence within the margin."""
    if math.isnan(diff.df) or margin <= 0:
        return math.nan if math.isnan(diff.df) else 1.0
    if diff.se == 0:
        return 0.0 if abs(diff.delta) < margin else 1.0
    lower = stats.t.sf((diff.delta + margin) / diff.se, diff.df)
    upper = stats.t.cdf((diff.delta - margin) / diff.se, diff.df)
    return float(max(lower, upper))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values: with p_(1) ≤ … ≤ p_(m), p̃_(i) = max_{j≤i} min(1, (m - j + 1)·p_(j)).

    Rejecting every p̃ ≤ α keeps the family-wise error ≤ α under any dependence; NaN (untested) counts as 1."""
    p = np.nan_to_num(np.asarray(pvalues, dtype=float), nan=1.0)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return out.tolist()


def mde(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference a two-sided paired t-test at level `alpha` on n pairs of sd `sd` detects with
    probability `power`: the Δ solving P(|T| > t_{1-α/2, n-1}) = power for T ~ noncentral t(n-1, Δ·√n/sd), found
    exactly by root finding (the textbook (t_{1-α/2} + t_power)·sd/√n overstates power at small n)."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))

    def short(nc: float) -> float:  # power - target; the far tail (a wrong-sign rejection) is ~0 and can be NaN
        return float(stats.nct.sf(crit, df, nc)) + float(np.nan_to_num(stats.nct.sf(crit, df, -nc))) - power

    approx = crit + float(stats.t.ppf(power, df))  # the textbook noncentrality, a close upper-side start
    hi = approx + 1.0
    while (gap := short(hi)) < 0:
        hi *= 2
    try:
        if math.isnan(gap):
            raise ValueError("nct is NaN at the bracket")
        return optimize.brentq(short, 0.0, hi, xtol=1e-10) * sd / math.sqrt(n)
    except ValueError:  # nct loses precision at df = 1 and large nc: the approximation is all there is
        return approx * sd / math.sqrt(n)


def wilson_interval(acc: float, n_test: int, conf: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of one run's test accuracy p̂ on n images, z = z_{(1+conf)/2}:
    (p̂ + z²/2n ± z·√(p̂(1-p̂)/n + z²/4n²)) / (1 + z²/n).

    It is the noise of scoring a finite test set, separate from seed-to-seed noise: 102 test images put ±10 points
    on an accuracy of 0.5 however many seeds run; unlike the Wald interval it is not ±0 at 100% (96.4-100 there)."""
    if n_test < 1 or not math.isfinite(acc):
        return math.nan, math.nan
    z = float(stats.norm.ppf((1 + conf) / 2))
    centre = (acc + z * z / (2 * n_test)) / (1 + z * z / n_test)
    half = z * math.sqrt(acc * (1 - acc) / n_test + z * z / (4 * n_test**2)) / (1 + z * z / n_test)
    return centre - half, centre + half


def prob_improvement(
    a: Sequence[float], b: Sequence[float], conf: float = 0.95, reps: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """P(A > B) as rliable defines it (Agarwal et al. 2021): (1/n²)·Σ_i Σ_j [1(a_i > b_j) + ½·1(a_i = b_j)], with
    a percentile bootstrap interval that resamples seeds with their pairs kept (a_i and b_i move together).

    Why beside Δ: it needs no normality and reads as "how often a run of A beats a run of B"; 0.5 is no difference."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(x)
    if n == 0 or len(y) != n:
        return math.nan, math.nan, math.nan
    idx = np.random.default_rng(seed).integers(0, n, (reps, n))
    boot = _beats(x[idx], y[idx])
    lo, hi = np.quantile(boot, [(1 - conf) / 2, (1 + conf) / 2])
    return float(_beats(x[None, :], y[None, :])[0]), float(lo), float(hi)


def _beats(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise mean over all (i, j) of 1(x_i > y_j) + ½·1(x_i = y_j)."""
    gt = (x[:, :, None] > y[:, None, :]).mean(axis=(1, 2))
    return gt + 0.5 * (x[:, :, None] == y[:, None, :]).mean(axis=(1, 2))


def expected_max(values: Sequence[float]) -> list[float]:
    """Expected best of k trials drawn with replacement from N observed values, k = 1..N (Dodge et al. 2019):
    with v_(1) ≤ … ≤ v_(N), E[max_k] = Σ_i v_(i)·((i/N)^k - ((i-1)/N)^k)."""
    v = np.sort(np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float))
    n = len(v)
    if n == 0:
        return []
    i = np.arange(1, n + 1)
    return [float(np.sum(v * ((i / n) ** k - ((i - 1) / n) ** k))) for k in range(1, n + 1)]


def look_alphas(first: int, last: int, alpha: float = ALPHA) -> dict[int, float]:
    """α spent at each look n = first..last by the union bound (Bonferroni over looks): α·w_n with w_n the
    boundary's shape, half at the last look and the rest evenly before (Σ = α). Kept as the "before" of the
    calibrated boundaries in `sequential`, which spend all of α with the same shape."""
    from slowai.study.analysis.sequential import shape

    return {n: alpha * w for n, w in shape(first, last).items()}
