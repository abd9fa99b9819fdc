"""The verdict procedure's error control, proved by simulating studies (no training).

Noise model of every simulated study: seed s gives every candidate a shared seed effect u_s ~ N(0, sd²·ρ) (the data
order and initialisation all candidates share) plus its own noise e_{c,s} ~ N(0, sd²·(1-ρ)), and

    accuracy_{c,s} = 0.9 + Δ_c + u_s + e_{c,s}.

ρ is the pairing correlation: the paired difference of two candidates has sd·√(2(1-ρ)), so ρ = 0 means pairing
brings nothing and ρ = 0.5 means the paired difference is as noisy as one run. Accuracies are fractions
(0.003 = 0.3 points); the reference is "ref" with Δ = 0 and the equivalence margin is 0.003 unless said otherwise.

A look only uses complete rounds, so running the sequential procedure round by round (`seeds_needed`) gives exactly
the verdicts of `decide` on the full data (proved below on 100 studies); the big simulations therefore call
`decide` once per study on all ten seeds.

Speed: scipy's `stats.t.ppf/sf/cdf` spend ~100 µs each on argument checking, which would make thousands of studies
take minutes. The simulations swap the module's `stats` for `FAST_STATS`, whose t functions call the very same
`scipy.special.stdtr/stdtrit` that `scipy.stats.t` calls underneath; `test_fast_t_gives_identical_verdicts` proves
the swap changes no digit of any verdict.
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping

import numpy as np
import pytest
from scipy import special
from scipy import stats as scipy_stats

import slowai.study.analysis.stats as study_stats
from slowai.study.analysis.stats import ALPHA, holm
from slowai.study.analysis.verdicts import Design, Verdict, curve_effects, decide, factorial_effects, seeds_needed

REF = "ref"
SEEDS = tuple(range(10))
MARGIN = 0.003
NULL = {REF: 0.0, "a": 0.0, "b": 0.0, "c": 0.0}  # 4 candidates: 3 comparisons against the reference


class _FastT:
    """scipy.stats.t's ppf/sf/cdf without the argument checking: the same special functions it calls itself."""

    @staticmethod
    def ppf(q, df):
        return special.stdtrit(df, q)

    @staticmethod
    def sf(x, df):
        return special.stdtr(df, -x)

    @staticmethod
    def cdf(x, df):
        return special.stdtr(df, x)


FAST_STATS = types.SimpleNamespace(t=_FastT, norm=scipy_stats.norm, nct=scipy_stats.nct)


# ------------------------------------------------------------------------------------------------------- helpers
def simulate(rng: np.random.Generator, deltas: Mapping[str, float], sd: float, rho: float) -> dict[str, dict]:
    """One study's final test accuracies {candidate: {seed: accuracy}} on every seed, under the noise model above."""
    u = rng.normal(0.0, sd * math.sqrt(rho), len(SEEDS))
    e = rng.normal(0.0, sd * math.sqrt(1 - rho), (len(deltas), len(SEEDS)))
    acc = 0.9 + np.asarray(list(deltas.values()))[:, None] + u[None, :] + e
    return {c: dict(zip(SEEDS, row)) for c, row in zip(deltas, acc.tolist())}


def run_studies(
    n_studies: int,
    deltas: Mapping[str, float],
    sd: float,
    rho: float,
    first: int = 3,
    last: int = 10,
    margin: float = MARGIN,
    seed: int = 0,
) -> list[dict[str, Verdict]]:
    """The verdicts of `n_studies` simulated studies (one `decide` each, on the full data; see the module docstring)."""
    rng = np.random.default_rng(seed)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study_stats, "stats", FAST_STATS)
        return [
            decide(simulate(rng, deltas, sd, rho), REF, Design(SEEDS, first, last, margin)) for _ in range(n_studies)
        ]


def any_difference(studies: list[dict[str, Verdict]]) -> float:
    """Fraction of studies with at least one better/worse verdict (the family-wise error when every Δ is 0)."""
    return float(np.mean([any(v.verdict in ("better", "worse") for v in s.values()) for s in studies]))


def rate(studies: list[dict[str, Verdict]], name: str, verdict: str) -> float:
    """Fraction of studies in which candidate `name` got `verdict`."""
    return float(np.mean([s[name].verdict == verdict for s in studies]))


def run_sequentially(full: Mapping[str, Mapping[int, float]], first: int, last: int) -> tuple[dict, list[dict]]:
    """Round by round as a study runs: start with no runs, give each candidate the seeds `seeds_needed` asks for
    (taken from `full`), until nothing changes. Returns the final runs and the `need` of every round."""
    runs: dict[str, dict[int, float]] = {c: {} for c in full}
    needs = []
    while True:
        need = seeds_needed(runs, REF, Design(SEEDS, first, last, MARGIN))
        needs.append(need)
        new = {c: {s: full[c][s] for s in SEEDS[: need[c]]} for c in full}
        if new == runs:
            return runs, needs
        runs = new


def _decision(v: Verdict) -> tuple:
    """What a look decided, with the interval it decided on."""
    return v.verdict, v.n, v.alpha_look, v.p_adj, v.p_equiv_adj, v.mde, v.diff


@pytest.fixture(scope="module")
def mixed_studies() -> list[dict[str, Verdict]]:
    """300 studies whose candidates span every verdict: clearly better, null, at the margin's edge, slightly worse."""
    deltas = {REF: 0.0, "a": 0.005, "b": 0.0, "c": -MARGIN, "d": -0.002}
    return run_studies(300, deltas, sd=0.003, rho=0.5, seed=4)


# ------------------------------------------------------------------------------------------------ the machinery
def test_fast_t_gives_identical_verdicts():
    """The speed-up the simulations use is exact: every verdict (p-values, intervals, mde) is the same to the last
    digit with scipy.stats itself."""
    rng = np.random.default_rng(1)
    deltas = {REF: 0.0, "a": 0.004, "b": 0.0, "c": -0.002}
    for _ in range(20):
        full = simulate(rng, deltas, 0.003, 0.5)
        slow = decide(full, REF, Design(SEEDS, 3, 10, MARGIN))
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(study_stats, "stats", FAST_STATS)
            fast = decide(full, REF, Design(SEEDS, 3, 10, MARGIN))
        assert repr(fast) == repr(slow)


def test_round_by_round_equals_decide_on_full_data():
    """Running the study sequentially (each round giving every candidate the seeds `seeds_needed` asks for) ends
    with exactly the verdicts `decide` gives on all ten seeds, over 100 studies: a look only uses complete rounds,
    so the later seeds a stopped candidate never ran cannot matter. Candidates never lose seeds between rounds."""
    rng = np.random.default_rng(2)
    deltas = {REF: 0.0, "a": 0.005, "b": 0.0, "c": -0.002}
    looks = set()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(study_stats, "stats", FAST_STATS)
        for _ in range(100):
            full = simulate(rng, deltas, 0.003, 0.5)
            runs, needs = run_sequentially(full, 3, 10)
            for before, after in zip(needs, needs[1:]):
                assert all(after[c] >= before[c] for c in full)
            seq, whole = (
                decide(runs, REF, Design(SEEDS, 3, 10, MARGIN)),
                decide(full, REF, Design(SEEDS, 3, 10, MARGIN)),
            )
            for c, v in seq.items():
                assert _decision(v) == _decision(whole[c])
                assert len(runs[c]) == v.n  # a candidate ran exactly the seeds of the look that decided it
                looks.add((v.verdict, v.n))
    # not vacuous: verdicts of every kind, taken at the first, a middle and the last look
    assert {v for v, _ in looks} == {"better", "worse", "equivalent", "inconclusive"}
    assert {3, 10} <= {n for _, n in looks} and any(3 < n < 10 for _, n in looks)


# ------------------------------------------------------------------------------------------- false positives
def test_no_difference_false_positive_rate_sequential():
    """Headline: when no candidate differs from the reference, a sequential study (looks at 3..10 seeds, 3
    comparisons) declares any better/worse in at most 5% of 2,000 studies (sd 0.3 points, ρ = 0.5)."""
    fp = any_difference(run_studies(2000, NULL, sd=0.003, rho=0.5, seed=10))
    assert fp <= ALPHA, fp


@pytest.mark.parametrize("sd", [0.002, 0.006])
@pytest.mark.parametrize("rho", [0.0, 0.5])
def test_no_difference_false_positive_rate_any_noise(sd, rho):
    """The family-wise error stays ≤ 5% (up to 3 standard errors of sampling noise in 500 studies) whatever the
    noise level and the pairing correlation: the t-tests are scale free, and stopping some candidates early as
    equivalent (which does depend on the noise against the margin) does not break the control."""
    fp = any_difference(run_studies(500, NULL, sd=sd, rho=rho, seed=int(1000 * sd + 10 * rho)))
    assert fp <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 500), fp


@pytest.mark.parametrize("n", [3, 5])
def test_no_difference_false_positive_rate_fixed_design(n):
    """A fixed design (one look at n seeds, all of α there) also keeps the family-wise error ≤ 5% (within 3
    standard errors of 1,000 studies: Holm at a single look spends nearly all of α, so the rate sits close to it)."""
    fp = any_difference(run_studies(1000, NULL, sd=0.003, rho=0.5, first=n, last=n, seed=20 + n))
    assert fp <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / 1000), fp


# ------------------------------------------------------------------------------------------------------ power
def test_power_for_half_a_point():
    """Headline: a candidate truly 0.5 points better (paired sd 0.3 points: sd 0.003, ρ = 0.5), with two null
    candidates beside it, is found "better" by the sequential study (3..10 seeds) in ≥ 80% of 2,000 studies, and
    never "worse"."""
    studies = run_studies(2000, {REF: 0.0, "a": 0.005, "b": 0.0, "c": 0.0}, sd=0.003, rho=0.5, seed=30)
    power = rate(studies, "a", "better")
    assert power >= 0.8, power
    assert rate(studies, "a", "worse") == 0.0


# -------------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("delta", [MARGIN, -MARGIN])
def test_false_equivalence_at_the_margin(delta):
    """At the edge of the equivalence null (|Δ| = margin exactly), a candidate is declared "equivalent" in ≤ 5% of
    600 studies: TOST, Holm and the α spending keep a false equivalence as rare as a false difference."""
    studies = run_studies(600, {REF: 0.0, "a": delta, "b": 0.0, "c": 0.0}, sd=0.003, rho=0.5, seed=40 + (delta > 0))
    assert rate(studies, "a", "equivalent") <= ALPHA


def test_true_equivalence_is_found():
    """The equivalence test has power too: with no difference and little noise (paired sd 0.1 points, margin 0.3),
    all three null candidates come out "equivalent" in most studies."""
    studies = run_studies(300, NULL, sd=0.001, rho=0.5, seed=50)
    assert min(rate(studies, c, "equivalent") for c in "abc") >= 0.9


# ------------------------------------------------------------------------------------------ adjusted p-values
def test_adjusted_p_decides_exactly(mixed_studies):
    """Each verdict's adjusted p-values are on the α scale: p_adj ≤ α exactly when it says better/worse (the sign
    of Δ giving which), p_equiv_adj ≤ α for every "equivalent", and an inconclusive one has both > α. The printed
    interval is the look's, at the nominal level its boundary gives Holm's last step (rule changed with the
    calibrated boundaries: it used to be α_n of the union bound at every step)."""
    design = Design(SEEDS, 3, 10, MARGIN)
    seen = set()
    for study in mixed_studies:
        for v in study.values():
            seen.add(v.verdict)
            assert (v.p_adj <= ALPHA) == (v.verdict in ("better", "worse"))
            if v.verdict in ("better", "worse"):
                assert (v.verdict == "better") == (v.diff.delta > 0)
            elif v.verdict == "equivalent":
                assert v.p_equiv_adj <= ALPHA
            else:
                assert v.p_equiv_adj > ALPHA and v.n == 10
            assert 3 <= v.n <= 10 and v.alpha_look == design.nominal(v.level, v.n) and v.diff.n == v.n
            assert v.decided == (v.verdict != "inconclusive")
    assert seen == {"better", "worse", "equivalent", "inconclusive"}


def test_adjusted_p_is_holm_at_the_look():
    """At a single look, p_adj is Holm's adjusted p of the three paired t-tests (one look spends all of α, so no
    rescaling), and the printed interval is that look's: its 5 pairs at Holm's last level α/(m − r)."""
    rng = np.random.default_rng(60)
    full = simulate(rng, {REF: 0.0, "a": 0.004, "b": 0.001, "c": -0.002}, 0.003, 0.5)
    verdicts = decide(full, REF, Design(SEEDS, 5, 5, MARGIN))
    raw = [study_stats.paired_diff([full[c][s] for s in SEEDS[:5]], [full[REF][s] for s in SEEDS[:5]]) for c in "abc"]
    for c, d, p in zip("abc", raw, holm([d.p for d in raw])):
        rejected = sum(q <= ALPHA for q in holm([d.p for d in raw]))
        assert verdicts[c].p_adj == pytest.approx(p)
        assert verdicts[c].alpha_look == pytest.approx(ALPHA / max(3 - rejected, 1)) and verdicts[c].n == 5
        if p <= ALPHA:
            assert verdicts[c].verdict == ("better" if d.delta > 0 else "worse")
        assert verdicts[c].diff.n == 5 and verdicts[c].diff.delta == d.delta  # the look's pairs, not every seed


# ------------------------------------------------------------------------------------------------- seeds_needed
def test_seeds_needed_climbs_one_round_at_a_time():
    """`seeds_needed` asks everybody for `first` seeds before any run; a clearly decided candidate (Δ = 5 points,
    tiny noise) stops at `first` while an undecided one (paired differences swinging ±1 point) gets one more seed
    per round up to `last`; the reference always runs the most, and nobody is ever asked past `last`."""
    first, last = 3, 8
    rng = np.random.default_rng(70)
    ref = 0.9 + rng.normal(0, 0.003, len(SEEDS))
    full = {
        REF: dict(zip(SEEDS, ref.tolist())),
        "clear": dict(zip(SEEDS, (ref + 0.05 + rng.normal(0, 1e-4, len(SEEDS))).tolist())),
        "open": {s: float(ref[s] + 0.001 + 0.01 * (-1) ** s) for s in SEEDS},
    }
    assert seeds_needed({c: {} for c in full}, REF, Design(SEEDS, first, last, MARGIN)) == {c: first for c in full}
    runs, needs = run_sequentially(full, first, last)
    assert [n["open"] for n in needs] == [3, 4, 5, 6, 7, 8, 8]
    assert all(n["clear"] == first for n in needs)
    assert all(n[REF] == max(n.values()) and max(n.values()) <= last for n in needs)
    final = decide(runs, REF, Design(SEEDS, first, last, MARGIN))
    assert (final["clear"].verdict, final["clear"].n) == ("better", first)
    assert (final["open"].verdict, final["open"].n) == ("inconclusive", last)


# ------------------------------------------------------------------------------------------ secondary families
def test_curve_effects_per_epoch_and_area():
    """Validation curves: a candidate 4 points ahead at epoch 1 (noise sd 0.3 points) and level at epoch 2 gets
    "better" at epoch 1 and "inconclusive" at epoch 2; the area row (epoch 0) is the mean of the epoch Δs; p_adj is
    Holm over every row of every comparison."""
    rng = np.random.default_rng(80)
    n = 5
    ref = 0.8 + rng.normal(0, 0.01, (n, 2))
    noise = rng.normal(0, 0.003, (3, n))
    noise[1] -= noise[1].mean()  # the tie at epoch 2 is exact on average: Δ = 0
    curves = {
        REF: {s: ref[s].tolist() for s in range(n)},
        "a": {s: [ref[s, 0] + 0.04 + noise[0, s], ref[s, 1] + noise[1, s]] for s in range(n)},
        "b": {s: [ref[s, 0] + noise[2, s], ref[s, 1] - 0.002] for s in range(n)},
    }
    out = curve_effects(curves, REF)
    assert set(out) == {"a", "b"}
    a = {r["epoch"]: r for r in out["a"]}
    assert set(a) == {0, 1, 2}
    assert a[1]["verdict"] == "better" and a[1]["delta"] == pytest.approx(0.04, abs=0.005)
    assert a[2]["verdict"] == "inconclusive" and a[2]["delta"] == pytest.approx(0.0, abs=1e-12)
    assert a[0]["delta"] == pytest.approx((a[1]["delta"] + a[2]["delta"]) / 2)
    assert all(r["n"] == n and r["lo"] <= r["delta"] <= r["hi"] for rows in out.values() for r in rows)
    rows = [r for c in ("a", "b") for r in out[c]]
    assert [r["p_adj"] for r in rows] == pytest.approx(holm([r["p"] for r in rows]))
    for r in rows:  # a marker exactly where the interval (at Holm's last level) excludes 0
        assert (r["verdict"] != "inconclusive") == (r["lo"] > 0 or r["hi"] < 0)


def test_a_one_epoch_curve_has_no_area_row():
    """With one epoch the area is the epoch itself: it is left out, so it is neither shown twice nor counted twice
    in Holm's family (which would halve the level each row is tested at)."""
    rng = np.random.default_rng(81)
    curves = {c: {s: [0.8 + d + rng.normal(0, 0.003)] for s in range(5)} for c, d in ((REF, 0.0), ("a", 0.01))}
    rows = curve_effects(curves, REF)["a"]
    assert [r["epoch"] for r in rows] == [1] and rows[0]["p_adj"] == pytest.approx(rows[0]["p"])


def test_factorial_effects_recover_known_effects():
    """A 2×2 design with main effects +1 point (act) and 0 (init) and an interaction of +0.6 points (difference of
    differences), shared seed effects and tiny noise, 6 seeds: the estimates match the truth within 1e-3, act and
    act×init are "positive" and init "inconclusive". Seeds come in antithetic pairs (noise, -noise), so every
    estimate's mean is exactly the truth while its spread stays real."""
    act, init, inter = 0.01, 0.0, 0.006
    factors = {"act": ("relu", "gelu"), "init": ("default", "kaiming")}
    rng = np.random.default_rng(90)
    half = rng.normal(0, 1e-4, (4, 3))
    noise = np.concatenate([half, -half], axis=1)  # 4 cells × 6 seeds
    shared = rng.normal(0, 0.003, 6)
    cells = {}
    for i, (a, b) in enumerate([(a, b) for a in factors["act"] for b in factors["init"]]):
        sa, sb = (1 if a == "gelu" else -1), (1 if b == "kaiming" else -1)
        mean = 0.9 + act / 2 * sa + init / 2 * sb + inter / 4 * sa * sb
        cells[(a, b)] = {s: float(mean + shared[s] + noise[i, s]) for s in range(6)}
    effects = {e.name: e for e in factorial_effects(cells, factors)}
    assert set(effects) == {"act", "init", "act×init"}
    truth = {"act": act, "init": init, "act×init": inter}
    for name, e in effects.items():
        assert e.diff.delta == pytest.approx(truth[name], abs=1e-3)
        assert e.diff.n == 6
    assert effects["act"].levels == (("relu", "gelu"),)
    assert [effects[k].verdict for k in ("act", "init", "act×init")] == ["positive", "inconclusive", "positive"]
    for e in effects.values():  # intervals at Holm's level: clear of 0 exactly where an effect is claimed
        assert (e.verdict != "inconclusive") == (e.diff.lo > 0 or e.diff.hi < 0)
    assert [e.p_adj for e in effects.values()] == pytest.approx(holm([e.diff.p for e in effects.values()]))


def test_factorial_effects_need_two_levels():
    """A factor with three levels is not a 2-level factorial: ValueError."""
    cells = {(a,): {0: 0.9, 1: 0.91} for a in ("x", "y", "z")}
    with pytest.raises(ValueError, match="two levels"):
        factorial_effects(cells, {"act": ("x", "y", "z")})
