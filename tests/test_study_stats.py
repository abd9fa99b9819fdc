"""Every formula of analysis.stats against values worked out by hand (t quantiles from tables) or against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from slowai.study.analysis.stats import (
    at_level,
    compare,
    expected_max,
    holm,
    look_alphas,
    mde,
    mean_ci,
    paired_diff,
    prob_improvement,
    tost_p,
    welch_diff,
    wilson_interval,
)


def test_mean_ci_three_runs():
    # mean 2, s = 1, t(0.975, df=2) = 4.3027 -> half-width 4.3027 / sqrt(3) = 2.4841
    ci = mean_ci([1.0, 2.0, 3.0])
    assert (ci.mean, ci.std, ci.n) == (2.0, 1.0, 3)
    assert ci.lo == pytest.approx(2 - 2.48414, abs=1e-4)
    assert ci.hi == pytest.approx(2 + 2.48414, abs=1e-4)


def test_mean_ci_one_run_has_no_interval():
    ci = mean_ci([0.9])
    assert ci.mean == 0.9 and math.isnan(ci.lo) and math.isnan(ci.std)


def test_welch_difference():
    # a: mean 2, var 1; b: mean 6, var 4; se^2 = 1/3 + 4/3 = 5/3; df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17
    # t = -4 / sqrt(5/3) = -3.0984; t(0.975, 2.94) = 3.2164 -> CI -4 ± 4.1524; two-sided p = 0.0548
    d = welch_diff([1.0, 2.0, 3.0], [4.0, 6.0, 8.0])
    assert d.delta == -4.0
    assert d.df == pytest.approx(50 / 17)
    assert (d.lo, d.hi) == (pytest.approx(-8.1554, abs=1e-3), pytest.approx(0.1554, abs=1e-3))
    assert d.p == pytest.approx(0.0548, abs=1e-3)


def test_welch_is_antisymmetric_and_exact_without_spread():
    a, b = [0.91, 0.92, 0.90], [0.88, 0.87, 0.89]
    ab, ba = welch_diff(a, b), welch_diff(b, a)
    assert ab.delta == pytest.approx(-ba.delta) and ab.p == pytest.approx(ba.p)
    assert ab.lo == pytest.approx(-ba.hi)
    same = welch_diff([0.5, 0.5], [0.4, 0.4])
    assert (same.lo, same.hi, same.p) == (pytest.approx(0.1), pytest.approx(0.1), 0.0)


# --------------------------------------------------------------------------------- every formula against scipy
A4, B4 = [0.91, 0.92, 0.90, 0.93], [0.89, 0.91, 0.90, 0.90]


def test_mean_ci_matches_scipy_t_interval():
    """mean_ci is scipy's t-interval of the mean (mean ± t·s/√n) at any confidence level."""
    x = [0.91, 0.92, 0.90, 0.93, 0.88]
    for conf in (0.9, 0.95, 0.99):
        ci = mean_ci(x, conf)
        lo, hi = stats.t.interval(conf, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
        assert (ci.lo, ci.hi) == (pytest.approx(lo), pytest.approx(hi))


def test_paired_diff_matches_scipy_ttest_rel():
    """paired_diff is the paired t-test: scipy's ttest_rel p-value and the t-interval of the differences."""
    d = paired_diff(A4, B4)
    diffs = np.subtract(A4, B4)
    ref = stats.ttest_rel(A4, B4)
    lo, hi = stats.t.interval(0.95, len(diffs) - 1, loc=diffs.mean(), scale=stats.sem(diffs))
    assert d.delta == pytest.approx(diffs.mean()) and d.p == pytest.approx(ref.pvalue)
    assert (d.lo, d.hi) == (pytest.approx(lo), pytest.approx(hi))
    assert (d.df, d.n, d.method) == (3, 4, "paired")
    assert d.se == pytest.approx(stats.sem(diffs)) and d.sd == pytest.approx(diffs.std(ddof=1))
    assert d.delta / d.se == pytest.approx(ref.statistic)


def test_paired_diff_below_two_pairs_has_no_interval():
    """One pair gives a difference but no interval or p-value (NaN), never a fake certainty."""
    d = paired_diff([0.91], [0.90])
    assert d.delta == pytest.approx(0.01) and d.n == 1 and math.isnan(d.p) and math.isnan(d.lo)


def test_welch_diff_matches_scipy_ttest_ind():
    """welch_diff is scipy's Welch test (ttest_ind, equal_var=False): same t, df, p and confidence interval."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.9, 0.01, 5), rng.normal(0.89, 0.02, 7)
    d = welch_diff(a, b)
    ref = stats.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    assert d.delta / d.se == pytest.approx(ref.statistic) and d.df == pytest.approx(ref.df)
    assert d.p == pytest.approx(ref.pvalue)
    assert (d.lo, d.hi) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert (d.n, d.method) == (5, "Welch")


def test_compare_pairs_on_common_seeds():
    """compare pairs the seeds both candidates ran (≥ 2 of them) and ignores the rest: method "paired", n = the
    number of common seeds."""
    a = {0: 0.91, 1: 0.92, 2: 0.90, 3: 0.93, 7: 0.5}
    b = {1: 0.91, 2: 0.90, 3: 0.90, 0: 0.89, 9: 0.99}
    d = compare(a, b)
    assert (d.method, d.n) == ("paired", 4)
    ref = paired_diff(A4, B4)
    assert (d.delta, d.lo, d.hi, d.p) == pytest.approx((ref.delta, ref.lo, ref.hi, ref.p))


def test_compare_falls_back_to_welch_without_two_common_seeds():
    """With fewer than two common seeds there is nothing to pair: Welch on every run of each."""
    a, b = {0: 0.91, 1: 0.92, 2: 0.90}, {2: 0.88, 3: 0.87, 4: 0.89, 5: 0.88}
    d = compare(a, b)
    ref = welch_diff(list(a.values()), list(b.values()))
    assert (d.method, d.n) == ("Welch", 3)
    assert (d.delta, d.lo, d.hi, d.p) == pytest.approx((ref.delta, ref.lo, ref.hi, ref.p))
    assert compare({0: 0.9, 1: 0.91}, {2: 0.9, 3: 0.92}).method == "Welch"


@pytest.mark.parametrize("margin", [0.005, 0.01, 0.03])
def test_tost_p_is_two_one_sided_t_tests(margin):
    """tost_p is the larger p of the two one-sided t-tests on the paired differences: H0 Δ ≤ -margin (alternative
    greater) and H0 Δ ≥ +margin (alternative less)."""
    diffs = np.subtract(A4, B4)
    above = stats.ttest_1samp(diffs, -margin, alternative="greater").pvalue
    below = stats.ttest_1samp(diffs, margin, alternative="less").pvalue
    assert tost_p(paired_diff(A4, B4), margin) == pytest.approx(max(above, below))


def test_tost_p_agrees_with_the_interval_inside_the_margin():
    """p ≤ α exactly when the (1 - 2α) interval lies inside ±margin, on inputs that land both ways and at several α."""
    rng = np.random.default_rng(1)
    margin, outcomes = 0.003, set()
    for loc in (0.0, 0.001, 0.002, 0.004):
        a = rng.normal(0.9, 0.002, 8)
        b = a - loc + rng.normal(0, 0.002, 8)
        for alpha in (0.01, 0.05, 0.1):
            ci = paired_diff(a, b, conf=1 - 2 * alpha)
            inside = -margin < ci.lo and ci.hi < margin
            assert (tost_p(paired_diff(a, b), margin) <= alpha) == inside
            outcomes.add(inside)
    assert outcomes == {True, False}


def test_tost_p_edge_cases():
    """No interval → NaN; a zero or negative margin → 1 (nothing is equivalent); an exact difference (se = 0) is
    equivalent exactly when it lies inside the margin."""
    assert math.isnan(tost_p(paired_diff([0.9], [0.9]), 0.003))
    assert tost_p(paired_diff(A4, B4), 0.0) == 1.0
    assert tost_p(paired_diff([0.9, 0.9], [0.899, 0.899]), 0.003) == 0.0
    assert tost_p(paired_diff([0.9, 0.9], [0.89, 0.89]), 0.003) == 1.0


def test_holm_hand_worked():
    """Holm by hand: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 → running max 0.02,
    0.03, 0.06, 0.06, back in the input order."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_nan_counts_as_one_and_caps_at_one():
    """An untested (NaN) comparison counts as p = 1 and still counts in m; no adjusted p exceeds 1."""
    assert holm([0.01, math.nan]) == pytest.approx([0.02, 1.0])
    assert holm([0.5, 0.6, 0.7]) == [1.0, 1.0, 1.0]
    assert holm([0.02]) == [0.02] and holm([]) == []


def test_holm_is_monotone_and_never_below_the_raw_p():
    """Adjusted p-values keep the order of the raw ones, are ≥ them and ≤ min(1, m·p) (Bonferroni)."""
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.uniform(0, 0.2, 6) ** 2
        adj = np.asarray(holm(p))
        order = np.argsort(p)
        assert np.all(np.diff(adj[order]) >= 0)
        assert np.all(adj >= p) and np.all(adj <= np.minimum(1, 6 * p) + 1e-15)


def test_holm_matches_statsmodels():
    """Where statsmodels is installed, holm equals its multipletests(method="holm")."""
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(3).uniform(0, 0.1, 8)
    assert holm(p) == pytest.approx(multitest.multipletests(p, method="holm")[1])


def _paired_power(effect: float, sd: float, n: int, alpha: float) -> float:
    """Exact power of the two-sided paired t-test: noncentral t with nc = effect·√n/sd, df = n - 1."""
    df, nc = n - 1, effect * math.sqrt(n) / sd
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc))  # upper tail + lower tail


@pytest.mark.parametrize("n", [3, 4, 10, 30])
@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.05 / 28])
def test_mde_has_exactly_the_promised_power(n, alpha):
    """At the minimum detectable effect the paired t-test's exact power (noncentral t) is 0.8, also at few pairs and
    at the small per-look levels a sequential study uses (the textbook approximation would claim ≈ 0.73 there)."""
    assert _paired_power(mde(0.003, n, alpha), 0.003, n, alpha) == pytest.approx(0.8, abs=1e-6)


def test_no_mde_below_two_pairs_or_without_a_spread():
    """One pair has no spread to test; a zero sd detects any effect."""
    assert math.isnan(mde(0.003, 1)) and math.isnan(mde(math.nan, 5))
    assert mde(0.0, 5) == 0.0
    assert mde(0.003, 2) > mde(0.003, 3)  # two pairs (df 1): finite, from the textbook formula


def test_mde_scales_with_sd_and_sqrt_n():
    """mde is linear in sd, and for large n halves when n quadruples (∝ 1/√n up to the t quantiles)."""
    assert mde(0.006, 10) == pytest.approx(2 * mde(0.003, 10))
    assert mde(0.003, 400) / mde(0.003, 100) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(("correct", "n"), [(51, 102), (102, 102), (0, 40), (3988, 4000)])
def test_wilson_interval_matches_scipy(correct, n):
    """The test-set interval is scipy's Wilson score interval; at 100% on 102 images it is 96.4-100, not ±0."""
    ci = stats.binomtest(correct, n).proportion_ci(method="wilson")
    assert wilson_interval(correct / n, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_interval_is_honest_at_the_edges():
    lo, hi = wilson_interval(1.0, 102)
    assert hi == pytest.approx(1.0) and lo == pytest.approx(0.9637, abs=1e-4)
    assert all(math.isnan(x) for x in (*wilson_interval(0.5, 0), *wilson_interval(math.nan, 100)))


def test_prob_improvement_is_mann_whitney_u_over_n_squared():
    """P(A > B) = U/n² (ties count ½), as scipy's Mann-Whitney U gives it; 0.5 when a and b are the same runs."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(0.905, 0.003, 7).round(3), rng.normal(0.9, 0.003, 7).round(3)  # rounding makes ties
    p, lo, hi = prob_improvement(a, b)
    assert p == pytest.approx(stats.mannwhitneyu(a, b).statistic / 49)
    assert lo <= p <= hi and 0 <= lo and hi <= 1
    assert prob_improvement(a, a)[0] == 0.5


def test_prob_improvement_interval_resamples_seeds_in_pairs():
    """The bootstrap keeps pairs: a candidate ahead on every seed by a margin larger than any seed's spread has
    P = 1 in every resample, so its interval is the single point 1; the interval is reproducible (seeded)."""
    base = np.linspace(0.88, 0.92, 6)
    assert prob_improvement(base + 0.05, base) == (1.0, 1.0, 1.0)
    a = base + np.random.default_rng(6).normal(0, 0.01, 6)
    assert prob_improvement(a, base) == prob_improvement(a, base)


def test_at_level_is_the_same_test_at_another_confidence():
    """at_level keeps Δ, se, df and p and recomputes the bounds: it equals paired_diff run at that level."""
    a, b = [0.91, 0.92, 0.905, 0.915], [0.9, 0.91, 0.9, 0.905]
    assert at_level(paired_diff(a, b), 0.99) == paired_diff(a, b, 0.99)


def test_expected_max_ends():
    """k = 1 gives the mean; the curve never falls, and k = N stays at or below the best observed value."""
    v = [0.2, 0.5, 0.55, 0.9, 0.7]
    curve = expected_max(v)
    assert len(curve) == 5 and curve[0] == pytest.approx(np.mean(v))
    assert all(b >= a for a, b in zip(curve, curve[1:]))
    assert curve[-2] <= curve[-1] <= max(v)
    assert expected_max([0.7]) == [0.7] and expected_max([]) == []


def test_expected_max_matches_monte_carlo():
    """E[best of k draws with replacement] from the closed form matches a brute-force estimate (400,000 draws per k,
    standard error < 0.0006) within 0.002; None and NaN values are dropped first."""
    v = [0.2, 0.5, 0.55, 0.9, 0.7]
    rng = np.random.default_rng(4)
    closed = expected_max([*v, None, math.nan])
    for k, e in enumerate(closed, start=1):
        draws = np.asarray(v)[rng.integers(0, len(v), (400_000, k))].max(axis=1)
        assert e == pytest.approx(draws.mean(), abs=0.002)


@pytest.mark.parametrize(("first", "last"), [(3, 10), (2, 3), (5, 6), (1, 20)])
def test_look_alphas_spend_alpha_exactly(first, last):
    """The α spent over looks first..last sums to α, half of it at the last look and the rest split evenly."""
    a = look_alphas(first, last)
    assert list(a) == list(range(first, last + 1))
    assert sum(a.values()) == pytest.approx(0.05)
    assert a[last] == pytest.approx(0.025)
    assert len({round(x, 15) for n, x in a.items() if n != last}) == 1


def test_look_alphas_single_look_gets_all_alpha():
    """A fixed design (one look) spends all of α there, at any α."""
    assert look_alphas(3, 3) == {3: 0.05}
    assert look_alphas(5, 5, alpha=0.1) == {5: 0.1}
