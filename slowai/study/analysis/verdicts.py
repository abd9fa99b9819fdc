"""From paired runs to verdicts a reviewer can trust: better, worse, equivalent or inconclusive, with error control.

The primary family is every candidate vs the reference on final test accuracy. At each look n (n seeds per
candidate, n = first..last) a comparison still open is tested on its first n paired seeds:
- difference: paired t-test of Δ = 0 → better/worse;
- equivalence: two one-sided tests of |Δ| ≥ margin → equivalent.
Each look's p-value becomes a sequential p-value through group-sequential boundaries calibrated to spend exactly α
over the looks (`sequential`), and Holm runs across the comparisons on those (Maurer & Bretz 2013):
decided comparisons stop and count as rejected at later looks. So a false better/worse anywhere in the study has
probability ≤ α, and so has a false equivalent. Adjusted p-values are on the α scale: a verdict is taken exactly
when its adjusted p ≤ α.

The interval printed with a verdict is the one that decided it: the paired-t interval at the look's nominal level
a_n for Holm's last step (α/(m − r)), so it excludes 0 exactly when the verdict is better/worse; an equivalent
verdict also carries its 1 − 2a_n interval, which lies inside ±margin exactly when it is equivalent.

The secondary families (learning-curve and factorial effects) live in `effects`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from slowai.study.analysis import sequential
from slowai.study.analysis.effects import Effect, curve_effects, factorial_effects, holm_level
from slowai.study.analysis.stats import ALPHA, DiffCI, at_level, compare, holm, mde, paired_diff, tost_p
from slowai.study.analysis.testset import image_variance, with_images

__all__ = [
    "Design",
    "Effect",
    "Verdict",
    "adjusted_estimate",
    "curve_effects",
    "decide",
    "factorial_effects",
    "seeds_needed",
]

METHOD = (
    "paired t-tests over seeds; Holm across comparisons; equivalence by two one-sided tests (TOST) within ±margin; "
    "group-sequential boundaries calibrated to spend exactly α over the looks (half of it at the last look)"
)
DECIDED = ("better", "worse", "equivalent")
MIN_PAIRS_TO_SAY = 3  # an sd from 2 pairs (1 df) is anywhere from 0.45× to 32× the truth (95%)


@dataclass(frozen=True)
class Design:
    """The stopping rule, fixed before the first look: confirm seeds in look order, the first and last look
    (seeds per candidate), the equivalence margin, α and the boundary ("calibrated", or the old "union" bound)."""

    seeds: Sequence[int]
    first: int
    last: int
    margin: float
    alpha: float = ALPHA
    method: str = METHOD
    boundary: str = "calibrated"

    @property
    def sequential(self) -> bool:
        return self.last > self.first

    def describe(self) -> dict:
        return {
            "seeds": list(self.seeds),
            "first": self.first,
            "last": self.last,
            "margin": self.margin,
            "alpha": self.alpha,
            "method": self.method,
            "boundary": self.boundary,
        }

    def nominal(self, level: float, n: int, sides: int = 2) -> float:
        """Look n's nominal level for an overall `level` (see `sequential.nominal`)."""
        return sequential.nominal(level, n, self.first, self.last, sides, self.boundary)

    def sequential_p(self, p: float, n: int, sides: int = 2) -> float:
        return sequential.sequential_p(p, n, self.first, self.last, sides, self.boundary)


@dataclass(frozen=True)
class Verdict:
    """One comparison's answer, from the look that decided it (or the last look reached, when inconclusive):
    `diff` is that look's interval at the two-sided level `alpha_look`, `equiv` its 1 − 2·a equivalence interval,
    `level`/`level_equiv` the overall α' of Holm's step there (what `sequential.adjusted_delta` replays)."""

    name: str
    verdict: str  # better | worse | equivalent | inconclusive
    diff: DiffCI
    n: int
    alpha_look: float
    p_adj: float
    p_equiv_adj: float
    margin: float
    equiv: DiffCI | None = None
    level: float = math.nan
    level_equiv: float = math.nan

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED

    @property
    def decided_at_seeds(self) -> int | None:
        """Seeds per candidate at the deciding look; None while undecided."""
        return self.n if self.decided else None

    @property
    def too_few(self) -> bool:
        """Fewer than 3 pairs: no sd worth quoting, so no MDE and no pairing note."""
        return self.n < MIN_PAIRS_TO_SAY

    @property
    def mde(self) -> float:
        """The true Δ the look would have found with 80% probability: the noncentral-t MDE at its n, its nominal
        level and the sd its se implies (se·√n: the paired sd, plus the test images' share when known; NaN below
        3 pairs)."""
        if self.too_few or not self.alpha_look > 0:
            return math.nan
        return mde(self.diff.se * math.sqrt(self.n), self.n, self.alpha_look)


def _pairs_at(a: Mapping[int, float], b: Mapping[int, float], seeds: Sequence[int], n: int):
    """The first n seeds' accuracies of both, once both candidates ran every one of them (else None).

    Never on fewer: a look taken before its round is complete would spend that look's α on less data than planned."""
    first = seeds[:n]
    if n < 2 or any(s not in a or s not in b for s in first):
        return None
    return [a[s] for s in first], [b[s] for s in first]


Images = Mapping[str, Mapping[int, np.ndarray]]  # candidate -> seed -> per-test-image correctness


def decide(
    runs: Mapping[str, Mapping[int, float]], reference: str, design: Design, images: Images | None = None
) -> dict[str, Verdict]:
    """Verdict of every candidate vs `reference` from {candidate: {seed: accuracy}}, looks at n = first..last;
    with `images` (every run's per-test-image correctness) the test set's sampling error joins each Δ's test."""
    others = [c for c in runs if c != reference]
    done: dict[str, Verdict] = {}
    seen: dict[str, Verdict] = {}
    for n in range(design.first, design.last + 1):
        pairs = {c: p for c in others if c not in done and (p := _pairs_at(runs[c], runs[reference], design.seeds, n))}
        if not pairs:
            continue
        tests = {c: _paired(*p, images, c, reference, design.seeds[:n]) for c, p in pairs.items()}
        q_diff = [_q(done, tests, c, n, design, equivalence=False) for c in others]
        q_equiv = [_q(done, tests, c, n, design, equivalence=True) for c in others]
        adj_d, adj_e = holm(q_diff), holm(q_equiv)
        levels = holm_level(adj_d, design.alpha), holm_level(adj_e, design.alpha)
        for i, c in enumerate(others):
            if c in pairs:
                seen[c] = _look(c, tests[c], n, (adj_d[i], adj_e[i]), levels, design)
                if seen[c].decided:
                    done[c] = seen[c]
    return {c: done.get(c) or seen.get(c) or _no_look(c, runs[c], runs[reference], design) for c in others}


def _paired(a: list[float], b: list[float], images: Images | None, c: str, ref: str, seeds: Sequence[int]):
    """The paired t on the look's seeds, widened by the test images' variance when every run's images are known."""
    d = paired_diff(a, b)
    if not images or any(s not in images.get(c, {}) or s not in images.get(ref, {}) for s in seeds):
        return d
    ia, ib = np.stack([images[c][s] for s in seeds]), np.stack([images[ref][s] for s in seeds])
    return with_images(d, image_variance(ia, ib), ia.shape[1]) if ia.shape == ib.shape else d


def _q(done: dict[str, Verdict], tests: dict[str, DiffCI], c: str, n: int, design: Design, equivalence: bool):
    """The sequential p-value of c at look n in one family; a decided comparison counts as rejected in its own."""
    if c in done:
        return 0.0 if (done[c].verdict == "equivalent") == equivalence else 1.0
    if c not in tests:
        return 1.0
    d = tests[c]
    p = tost_p(d, design.margin) if equivalence else d.p
    return design.sequential_p(p, n, sides=1 if equivalence else 2)


def _look(c: str, test: DiffCI, n: int, adjusted: tuple, levels: tuple, design: Design) -> Verdict:
    """The verdict at look n with the intervals that decided it (see the module docstring)."""
    p_d, p_e = adjusted
    verdict = ("better" if test.delta > 0 else "worse") if p_d <= design.alpha else ""
    verdict = verdict or ("equivalent" if p_e <= design.alpha else "inconclusive")
    a_d, a_e = design.nominal(levels[0], n), design.nominal(levels[1], n, sides=1)
    shown, equiv = at_level(test, 1 - a_d), at_level(test, 1 - 2 * a_e)
    return Verdict(c, verdict, shown, n, a_d, p_d, p_e, design.margin, equiv, levels[0], levels[1])


def _no_look(name: str, a: Mapping[int, float], b: Mapping[int, float], design: Design) -> Verdict:
    """No look reached yet: the estimate only, no interval (nothing was tested, so nothing may be shown as tested)."""
    d = compare(a, b)
    bare = replace(d, lo=math.nan, hi=math.nan, p=math.nan)
    return Verdict(name, "inconclusive", bare, d.n, math.nan, math.nan, math.nan, design.margin)


def seeds_needed(runs: Mapping[str, Mapping[int, float]], reference: str, design: Design) -> dict[str, int]:
    """How many of the design's seeds each candidate should have run: `first`, then one more per look while its
    comparison is undecided, never past `last`; the reference runs as many as its longest open comparison."""
    first, last = design.first, design.last
    verdicts = decide(runs, reference, design)
    need = {}
    for c, v in verdicts.items():
        reached = v.n if not math.isnan(v.alpha_look) else 0
        need[c] = reached if v.decided else first if reached < first else min(reached + 1, last)
    need[reference] = max(need.values(), default=first)
    return need


def adjusted_estimate(v: Verdict, design: Design) -> float:
    """Δ corrected for stopping early (`sequential.adjusted_delta`), replaying this comparison's own boundaries at
    its Holm levels; the naive Δ for a fixed design or a comparison no look reached."""
    if not design.sequential or not math.isfinite(v.level):
        return v.diff.delta
    nominals = {
        n: (design.nominal(v.level, n), design.nominal(v.level_equiv, n, sides=1))
        for n in range(design.first, design.last + 1)
    }
    return sequential.adjusted_delta(v.diff.delta, v.diff.sd, v.margin, nominals)
