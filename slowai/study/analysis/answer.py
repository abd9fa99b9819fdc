"""Adding the answer to a study's results: verdicts, pairing gain, learning-curve effects, tuning curves, factorial
effects. Pure functions of the runs read from the storage (see `verdicts` for the decision rules)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from slowai.study.analysis.results import CandidateResult, StudyResult
from slowai.study.analysis.stats import expected_max, paired_diff, prob_improvement, welch_diff, wilson_interval
from slowai.study.analysis.verdicts import Design, Verdict, adjusted_estimate, curve_effects, decide, factorial_effects
from slowai.study.seeds import confirm_seeds
from slowai.study.spec import Budget, Candidate, StudySpec


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
        verdicts = decide(runs, res.reference, design, {name: c.images for name, c in done.items()})
        for name, v in verdicts.items():
            _fill(done[name], ref, v, design)
        res.epoch_effects = {
            f"{name} − {res.reference}": rows
            for name, rows in curve_effects(_curves(done), res.reference, design.alpha).items()
        }
    res.expected_max = {c.name: expected_max(c.tune_values) for c in res.candidates if c.tune_values}
    res.effects = _factorial(done, candidates, design.alpha)
    return res


def _fill(c: CandidateResult, ref: CandidateResult, v: Verdict, design: Design) -> None:
    """The verdict, its interval, and what is said beside it on the same seeds: the unpaired interval at the same
    level (for the pairing note), P(c > ref), and the estimate adjusted for stopping early."""
    c.verdict, c.diff = v, v.diff
    c.adjusted = adjusted_estimate(v, design)
    seeds = [s for s in design.seeds[: v.n] if s in c.by_seed and s in ref.by_seed]
    if v.too_few or len(seeds) < v.n:
        return
    a, b = [c.by_seed[s] for s in seeds], [ref.by_seed[s] for s in seeds]
    c.welch, c.paired = welch_diff(a, b, 1 - v.alpha_look), paired_diff(a, b, 1 - v.alpha_look)
    c.p_improve = prob_improvement(a, b)


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
    """Half the width of the 95% Wilson interval of one run's test accuracy (its test-set sampling error)."""
    if c.acc is None or not c.test_size:
        return math.nan
    lo, hi = wilson_interval(c.acc.mean, int(c.test_size))
    return (hi - lo) / 2


def pairing_gain(c: CandidateResult) -> float:
    """1 - paired half-width / unpaired (Welch) half-width on the look's runs at the verdict's level, seeds'
    variance only on both sides: how much pairing narrowed the CI (NaN below 3 pairs, where no sd means much)."""
    if c.paired is None or c.welch is None or c.verdict is None or c.verdict.too_few:
        return math.nan
    w, p = c.welch.half_width, c.paired.half_width
    return 1 - p / w if w and math.isfinite(w) and math.isfinite(p) else math.nan
