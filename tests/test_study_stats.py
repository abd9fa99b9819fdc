"""Statistics against values worked out by hand (t quantiles from tables)."""

import math

import pytest

from slowai.study import mean_ci, welch_diff


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
