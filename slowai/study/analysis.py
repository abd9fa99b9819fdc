"""Adding the answer to a study's results: verdicts, pairing gain, learning-curve effects, tuning curves, factorial
effects. Pure functions of the runs read from the storage (see `slowai.study.verdicts` for the decision rules)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from slowai.study.ledger import confirm_seeds
from slowai.study.results import CandidateResult, StudyResult
from slowai.study.spec import Budget, Candidate, StudySpec
from slowai.study.stats import binomial_half_width, expected_max, welch_diff
from slowai.study.verdicts import Design, curve_effects, decide, factorial_effects


def design_of(spec: StudySpec, budget: Budget) -> Design:
    """The study's stopping rule: its confirm seeds up to the last look, its looks and margin."""
    return Design(confirm_seeds(spec, budget, budget.last_seeds), budget.seeds, budget.last_seeds, spec.margin)


def analyze(res: StudyResult, design: Design, candidates: Sequence[Candidate] = ()) -> StudyResult:
    """Fill `res` in place: each candidate's verdict and unpaired interval, the per-epoch/area effects, the
    expected-max tuning curves and, for a 2-level factorial ablation, its main effects and interactions."""
    res.design = design
    res.levels = {c.name: dict(c.levels) for c in candidates if c.levels}
    done = {c.name: c for c in res.candidates if c.runs}
    ref = done.get(res.reference)
    if ref is not None:
        runs = {name: c.by_seed for name, c in done.items()}
        verdicts = decide(runs, res.reference, design)
        for name, v in verdicts.items():
            c = done[name]
            c.verdict, c.diff = v, v.diff
            common = [s for s in c.by_seed if s in ref.by_seed]
            c.welch = welch_diff([c.by_seed[s] for s in common], [ref.by_seed[s] for s in common])
        res.epoch_effects = {
            f"{name} − {res.reference}": rows
            for name, rows in curve_effects(_curves(done), res.reference, design.alpha).items()
        }
    res.expected_max = {c.name: expected_max(c.tune_values) for c in res.candidates if c.tune_values}
    res.effects = _factorial(done, candidates, design.alpha)
    return res


def _curves(done: dict[str, CandidateResult]) -> dict[str, dict[int, list[float]]]:
    """{candidate: {seed: validation accuracy per epoch}} of the confirm runs."""
    return {
        name: {
            int(t.user_attrs["seed"]): [r.get("valid_accuracy") for r in t.user_attrs.get("history", [])]
            for t in c.runs
        }
        for name, c in done.items()
    }


def factor_levels(candidates: Sequence[Candidate]) -> dict[str, list[str]]:
    """{factor: levels in order of first appearance} over ablation candidates (the base's level first)."""
    out: dict[str, list[str]] = {}
    for c in candidates:
        for f, level in (c.levels or {}).items():
            if level not in out.setdefault(f, []):
                out[f].append(level)
    return out


def is_factorial(candidates: Sequence[Candidate]) -> bool:
    """Do the candidates cover every combination of their factors' levels (a full factorial)?"""
    levels = factor_levels(candidates)
    cells = {tuple(c.levels[f] for f in levels) for c in candidates if c.levels and set(c.levels) == set(levels)}
    return bool(levels) and len(cells) == math.prod(len(v) for v in levels.values())


def _factorial(done: dict[str, CandidateResult], candidates: Sequence[Candidate], alpha: float) -> list:
    """Main effects and interactions when the candidates are a complete 2-level factorial with confirm runs."""
    levels = factor_levels(candidates)
    if not is_factorial(candidates) or any(len(v) != 2 for v in levels.values()):
        return []
    if any(c.name not in done for c in candidates):
        return []
    cells = {tuple(c.levels[f] for f in levels): done[c.name].by_seed for c in candidates}
    return factorial_effects(cells, levels, alpha)


def test_error(c: CandidateResult) -> float:
    """Half-width of the 95% binomial interval of one run's test accuracy (its test-set sampling error)."""
    if c.acc is None or not c.test_size:
        return math.nan
    return binomial_half_width(c.acc.mean, int(c.test_size))


def pairing_gain(c: CandidateResult) -> float:
    """1 - paired half-width / unpaired (Welch) half-width on the same runs: how much pairing narrowed the CI."""
    if c.diff is None or c.welch is None or c.diff.method != "paired":
        return math.nan
    w, p = c.welch.half_width, c.diff.half_width
    return 1 - p / w if w and math.isfinite(w) and math.isfinite(p) else math.nan
