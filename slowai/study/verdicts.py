"""From paired runs to verdicts a reviewer can trust: better, worse, equivalent or inconclusive, with error control.

The primary family is every candidate vs the reference on final test accuracy. At each look n (n seeds per
candidate, n = first..last) a comparison still open is tested on its first n paired seeds:
- difference: paired t-test of Δ = 0, Holm-adjusted across the comparisons, at the look's α_n → better/worse;
- equivalence: two one-sided tests of |Δ| ≥ margin, Holm-adjusted the same way → equivalent.
Decided comparisons stop (they count as rejected at later looks). α is spent over looks by a union bound
(`stats.look_alphas`, Σ α_n = α), so each family keeps its family-wise error ≤ α however often it is looked at: a
false better/worse anywhere in the study has probability ≤ α, and so has a false equivalent. Adjusted p-values are
reported on the α scale (p̃ · α/α_n): a verdict is taken exactly when its adjusted p ≤ α.

Secondary families (reported separately, each Holm-corrected at α): the per-epoch validation curves with their
area, and the main effects and interactions of a factorial design.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from slowai.study.stats import ALPHA, DiffCI, compare, holm, look_alphas, mde, paired_diff, tost_p

METHOD = (
    "paired t-tests over seeds; Holm across comparisons; equivalence by two one-sided tests (TOST) within ±margin; "
    "α spent over sequential looks by a union bound (half at the last look)"
)
DECIDED = ("better", "worse", "equivalent")


@dataclass(frozen=True)
class Design:
    """The stopping rule, fixed before the first look: confirm seeds in look order, the first and last look
    (seeds per candidate), the equivalence margin and α."""

    seeds: Sequence[int]
    first: int
    last: int
    margin: float
    alpha: float = ALPHA
    method: str = METHOD

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
        }


@dataclass(frozen=True)
class Verdict:
    """One comparison's answer. `diff` uses every pair available; `n`, `alpha_look`, `p_adj`, `p_equiv_adj` and
    `mde` are those of the look that decided it (or of the last look reached, when inconclusive)."""

    name: str
    verdict: str  # better | worse | equivalent | inconclusive
    diff: DiffCI
    n: int
    alpha_look: float
    p_adj: float
    p_equiv_adj: float
    margin: float
    look_sd: float = math.nan  # sd of the paired differences at that look
    comparisons: int = 1

    @property
    def decided(self) -> bool:
        return self.verdict in DECIDED

    @property
    def mde(self) -> float:
        """Minimum detectable effect (80% power) at the look's n and sd, level α_look/m (Holm's first step)."""
        return mde(self.look_sd, self.n, self.alpha_look / self.comparisons) if self.alpha_look > 0 else math.nan


def _at_look(a: Mapping[int, float], b: Mapping[int, float], seeds: Sequence[int], n: int) -> DiffCI | None:
    """The comparison at look n: paired on the first n seeds, once both candidates ran every one of them.

    Never on fewer: a look taken before its round is complete would spend that look's α on less data than planned
    (and an early look at the last look's α would break the error control)."""
    first = seeds[:n]
    if n < 2 or any(s not in a or s not in b for s in first):
        return None
    return paired_diff([a[s] for s in first], [b[s] for s in first])


def decide(runs: Mapping[str, Mapping[int, float]], reference: str, design: Design) -> dict[str, Verdict]:
    """Verdict of every candidate vs `reference` from {candidate: {seed: accuracy}}, looks at n = first..last."""
    seeds, first, last, margin, alpha = design.seeds, design.first, design.last, design.margin, design.alpha
    others = [c for c in runs if c != reference]
    alphas = look_alphas(first, last, alpha)
    done: dict[str, Verdict] = {}
    seen: dict[str, Verdict] = {}
    for n in range(first, last + 1):
        a_n, p_diff, p_eq, diffs = alphas[n], [], [], {}
        for c in others:
            if c in done:
                p_diff.append(0.0 if done[c].verdict != "equivalent" else 1.0)
                p_eq.append(0.0 if done[c].verdict == "equivalent" else 1.0)
                continue
            d = _at_look(runs[c], runs[reference], seeds, n)
            if d is not None:
                diffs[c] = d
            p_diff.append(d.p if d is not None else 1.0)
            p_eq.append(tost_p(d, margin) if d is not None else 1.0)
        if not diffs:
            continue
        adj_d, adj_e = holm(p_diff), holm(p_eq)
        for i, c in enumerate(others):
            if c not in diffs:
                continue
            d = diffs[c]
            pd, pe = min(1.0, adj_d[i] * alpha / a_n), min(1.0, adj_e[i] * alpha / a_n)
            verdict = ("better" if d.delta > 0 else "worse") if pd <= alpha else "equivalent" if pe <= alpha else ""
            v = Verdict(c, verdict or "inconclusive", d, d.n, a_n, pd, pe, margin)
            seen[c] = v
            if verdict:
                done[c] = v
    m = max(len(others), 1)
    return {c: _final(c, done.get(c) or seen.get(c), runs[c], runs[reference], margin, m) for c in others}


def _final(name: str, v: Verdict | None, a: Mapping[int, float], b: Mapping[int, float], margin: float, m: int):
    """The verdict with its interval widened to every pair run (the reference may have run more seeds)."""
    diff = compare(a, b)
    if v is None:  # no look reached yet: too few seeds to say anything
        return Verdict(name, "inconclusive", diff, diff.n, math.nan, math.nan, math.nan, margin)
    return Verdict(name, v.verdict, diff, v.n, v.alpha_look, v.p_adj, v.p_equiv_adj, margin, v.diff.sd, m)


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


# ------------------------------------------------------------------------------------------ secondary families
def curve_effects(
    curves: Mapping[str, Mapping[int, Sequence[float]]], reference: str, alpha: float = ALPHA
) -> dict[str, list[dict[str, float]]]:
    """Per comparison, the paired Δ validation accuracy at each epoch and of the curve's area (the mean over epochs,
    so in accuracy units), 95% CIs, with Holm across every comparison × (epochs + area) at `alpha`.

    Rows: {"epoch": 1-based, or 0 for the area, "delta", "lo", "hi", "p", "n", "p_adj", "verdict"}."""
    rows: list[tuple[str, dict]] = []
    ref = curves.get(reference, {})
    for c, runs in curves.items():
        if c == reference:
            continue
        epochs = max((len(h) for h in runs.values()), default=0)
        for e in range(epochs):
            rows.append((c, {"epoch": e + 1, **_effect(compare(_epoch(runs, e), _epoch(ref, e)))}))
        area = {s: float(np.mean(h)) for s, h in runs.items() if len(h) == epochs and None not in h}
        ref_area = {s: float(np.mean(h)) for s, h in ref.items() if len(h) == epochs and None not in h}
        rows.append((c, {"epoch": 0, **_effect(compare(area, ref_area))}))
    for (_, r), p in zip(rows, holm([r["p"] for _, r in rows])):
        r["p_adj"] = p
        r["verdict"] = ("better" if r["delta"] > 0 else "worse") if p <= alpha else "inconclusive"
    out: dict[str, list[dict[str, float]]] = {}
    for c, r in rows:
        out.setdefault(c, []).append(r)
    return out


def _epoch(runs: Mapping[int, Sequence[float]], e: int) -> dict[int, float]:
    return {s: float(h[e]) for s, h in runs.items() if len(h) > e and h[e] is not None and math.isfinite(h[e])}


def _effect(d: DiffCI) -> dict[str, float]:
    return {"delta": d.delta, "lo": d.lo, "hi": d.hi, "p": d.p, "n": d.n}


@dataclass(frozen=True)
class Effect:
    """A factorial effect: `factors` ("act" main effect, or "act×init" interaction) with its paired t-interval over
    seeds and Holm-adjusted p. `levels` says which way: (from, to) of each factor."""

    factors: tuple[str, ...]
    levels: tuple[tuple[str, str], ...]
    diff: DiffCI
    p_adj: float
    verdict: str

    @property
    def name(self) -> str:
        return "×".join(self.factors)


def factorial_effects(
    cells: Mapping[tuple[str, ...], Mapping[int, float]],
    factors: Mapping[str, Sequence[str]],
    alpha: float = ALPHA,
) -> list[Effect]:
    """Main effects and interactions of a 2-level full factorial, per seed then over seeds (paired by seed).

    With s_f = ±1 for factor f at its second/first level and k factors, effect(S) = Σ_cells w·y with
    w = Π_{f∈S} s_f / 2^{k-|S|}: a main effect is mean(y | f second) - mean(y | f first); a two-factor interaction
    is the difference of differences (how much one factor's effect changes when the other switches). Only seeds
    every cell ran count. Holm across all effects at `alpha`."""
    names = list(factors)
    if any(len(v) != 2 for v in factors.values()):
        raise ValueError("factorial effects need exactly two levels per factor")
    seeds = sorted(set.intersection(*(set(r) for r in cells.values()))) if cells else []
    k, effects = len(names), []
    for size in range(1, k + 1):
        for subset in combinations(range(k), size):
            per_seed = [sum(_weight(cell, subset, factors, names) * cells[cell][s] for cell in cells) for s in seeds]
            d = paired_diff(per_seed, [0.0] * len(per_seed))
            lv = tuple((factors[names[i]][0], factors[names[i]][1]) for i in subset)
            effects.append((tuple(names[i] for i in subset), lv, d))
    adj = holm([d.p for *_, d in effects])
    return [
        Effect(f, lv, d, p, ("positive" if d.delta > 0 else "negative") if p <= alpha else "inconclusive")
        for (f, lv, d), p in zip(effects, adj)
    ]


def _weight(cell: tuple[str, ...], subset: tuple[int, ...], factors: Mapping, names: list[str]) -> float:
    sign = math.prod(1 if cell[i] == factors[names[i]][1] else -1 for i in subset)
    return sign / 2 ** (len(names) - len(subset))
