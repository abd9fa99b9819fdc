"""The secondary families, each Holm-corrected at α on its own: per-epoch validation effects with the curve's area,
and the main effects and interactions of a 2-level factorial design.

Every interval is printed at the level Holm's last step tested (α/(m − r), r = rows rejected), so a row's
interval excludes 0 exactly when it is marked: Holm rejects row j when p_(j) ≤ α/(m − j + 1) ≤ α/(m − r), and every
row it keeps has p > α/(m − r).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from slowai.study.analysis.stats import ALPHA, DiffCI, compare, holm, paired_diff


def holm_level(adjusted: Sequence[float], alpha: float) -> float:
    """α/(m − r): the level of Holm's last step, where r of the m adjusted p-values are ≤ α (α itself if all are)."""
    rejected = sum(p <= alpha for p in adjusted)
    return alpha / max(len(adjusted) - rejected, 1)


def curve_effects(
    curves: Mapping[str, Mapping[int, Sequence[float]]], reference: str, alpha: float = ALPHA
) -> dict[str, list[dict[str, float]]]:
    """Per comparison, the paired Δ validation accuracy at each epoch and of the curve's area (the mean over epochs,
    so in accuracy units; left out for a 1-epoch curve, where it is the epoch itself), with Holm across every
    comparison × (epochs + area) at `alpha` and intervals at Holm's level.

    Rows: {"epoch": 1-based, or 0 for the area, "delta", "lo", "hi", "p", "n", "p_adj", "verdict", "conf"}."""
    pairs: list[tuple[str, int, dict[int, float], dict[int, float]]] = []
    ref = curves.get(reference, {})
    for c, runs in curves.items():
        if c == reference:
            continue
        epochs = max((len(h) for h in runs.values()), default=0)
        pairs += [(c, e + 1, _epoch(runs, e), _epoch(ref, e)) for e in range(epochs)]
        if epochs > 1:
            pairs.append((c, 0, _area(runs, epochs), _area(ref, epochs)))
    tests = [compare(a, b) for *_, a, b in pairs]
    adjusted = holm([d.p for d in tests])
    conf = 1 - holm_level(adjusted, alpha)
    out: dict[str, list[dict[str, float]]] = {}
    for (c, epoch, a, b), d, p in zip(pairs, tests, adjusted):
        shown = compare(a, b, conf)
        verdict = ("better" if d.delta > 0 else "worse") if p <= alpha else "inconclusive"
        row = {"epoch": epoch, "delta": d.delta, "lo": shown.lo, "hi": shown.hi, "p": d.p, "n": d.n}
        out.setdefault(c, []).append({**row, "p_adj": p, "verdict": verdict, "conf": conf})
    return out


def _epoch(runs: Mapping[int, Sequence[float]], e: int) -> dict[int, float]:
    return {s: float(h[e]) for s, h in runs.items() if len(h) > e and h[e] is not None and math.isfinite(h[e])}


def _area(runs: Mapping[int, Sequence[float]], epochs: int) -> dict[int, float]:
    return {s: float(np.mean(h)) for s, h in runs.items() if len(h) == epochs and None not in h}


@dataclass(frozen=True)
class Effect:
    """A factorial effect: `factors` ("act" main effect, or "act×init" interaction) with its paired t-interval over
    seeds (at Holm's level, see the module docstring) and Holm-adjusted p. `levels` says which way: (from, to)."""

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
            lv = tuple((factors[names[i]][0], factors[names[i]][1]) for i in subset)
            effects.append((tuple(names[i] for i in subset), lv, per_seed))
    tests = [paired_diff(y, [0.0] * len(y)) for *_, y in effects]
    adjusted = holm([d.p for d in tests])
    conf = 1 - holm_level(adjusted, alpha)
    return [
        Effect(f, lv, paired_diff(y, [0.0] * len(y), conf), p, _sign(d, p, alpha))
        for (f, lv, y), d, p in zip(effects, tests, adjusted)
    ]


def _sign(d: DiffCI, p: float, alpha: float) -> str:
    return ("positive" if d.delta > 0 else "negative") if p <= alpha else "inconclusive"


def _weight(cell: tuple[str, ...], subset: tuple[int, ...], factors: Mapping, names: list[str]) -> float:
    sign = math.prod(1 if cell[i] == factors[names[i]][1] else -1 for i in subset)
    return sign / 2 ** (len(names) - len(subset))
