"""What the report says beside a verdict: honest at small n, worded as what the numbers mean, never contradicting
the verdict it sits beside."""

from __future__ import annotations

import math

import pytest

from slowai.study.analysis import answer as analysis
from slowai.study.analysis.answer import pairing_gain
from slowai.study.analysis.results import CandidateResult
from slowai.study.analysis.stats import paired_diff, wilson_interval
from slowai.study.analysis.verdicts import Design, decide
from slowai.study.report.tables import verdict_text

SEEDS = list(range(6))
REF = {s: 0.90 + 0.002 * (s % 3) for s in SEEDS}


def result(name: str, offsets: list[float], last: int) -> CandidateResult:
    """A candidate whose seed s scores REF[s] + offsets[s], decided with looks at 2..last seeds."""
    runs = {"ref": REF, name: {s: REF[s] + d for s, d in zip(SEEDS, offsets)}}
    c = CandidateResult(name, [], None, {})
    c.verdict = decide(runs, "ref", Design(SEEDS, 2, last, 0.003))[name]
    c.diff = c.verdict.diff
    return c


def test_two_pairs_are_too_few_to_say_anything_about_effect_sizes():
    """At 2 pairs an sd has one degree of freedom: no MDE, no pairing note, and no seed count for an undecided
    comparison."""
    c = result("a", [0.004, -0.003], last=2)
    assert c.verdict.verdict == "inconclusive" and c.verdict.n == 2
    assert verdict_text(c) == "inconclusive: too few seeds to say (n=2)"
    assert math.isnan(c.verdict.mde) and math.isnan(pairing_gain(c)) and c.verdict.decided_at_seeds is None


def test_the_mde_is_worded_as_the_effect_found_four_times_in_five():
    c = result("a", [0.012, -0.009, 0.006, -0.012, 0.003, 0.0], last=6)
    assert c.verdict.verdict == "inconclusive" and c.verdict.decided_at_seeds is None
    assert verdict_text(c) == (
        f"inconclusive: an effect of {100 * c.verdict.mde:.2f} would be found with 80% probability at n=6"
    )


def test_an_equivalent_verdict_shows_the_interval_inside_its_margin():
    c = result("a", [0.0002, -0.0001, 0.0001, -0.0002, 0.0, 0.0001], last=6)
    v = c.verdict
    assert v.verdict == "equivalent" and v.decided_at_seeds == v.n
    assert -v.margin < v.equiv.lo < v.equiv.hi < v.margin
    assert verdict_text(c).startswith("equivalent (±0.30): [") and verdict_text(c).endswith("] inside")
    assert v.diff.lo < 0 < v.diff.hi  # not better/worse, and its interval says so


def test_test_set_error_is_wilson_and_never_zero():
    """At 100% on 102 images the test-set error is half the Wilson interval (±1.8 points), not the Wald ±0."""
    c = CandidateResult("a", [], None, {})
    c.acc = type("Acc", (), {"mean": 1.0})()
    c.runs = [type("T", (), {"user_attrs": {"test_size": 102}})()]
    lo, hi = wilson_interval(1.0, 102)
    assert analysis.test_error(c) == pytest.approx((hi - lo) / 2) and analysis.test_error(c) > 0.01


def test_pairing_gain_compares_like_with_like():
    """The pairing note compares the paired and the unpaired interval of the same runs at the same level."""
    c = result("a", [0.004, -0.003, 0.002, -0.004, 0.001, 0.0], last=6)
    a, b = [REF[s] + d for s, d in zip(SEEDS, [0.004, -0.003, 0.002, -0.004, 0.001, 0.0])], list(REF.values())
    c.paired = paired_diff(a, b, 1 - c.verdict.alpha_look)
    c.welch = c.paired  # the same width unpaired: pairing gained nothing
    assert pairing_gain(c) == pytest.approx(0.0)
