"""Choosing the budget: the biggest preset whose estimate fits the time, keeping this machine's previous answer near
a boundary.

Why: "finishes within the hour" must hold on a 2-core laptop and a GPU alike, so the default budget is chosen from a
ladder of presets by an estimate from real measurements on this machine (`probe`, `estimate`), and the plan is
printed before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from slowai.study.spec import Budget

# Biggest first, judged with the speed-ups and fused seeds each gets. CPU presets keep a 60-minute default possible
# on two cores (the second is the 2-core CPU's default study); GPU presets are tried first on CUDA.
CPU_PRESETS = (
    Budget(trials=10, tune_epochs=3, tune_subset=20_000, seeds=3, confirm_epochs=5, confirm_subset=None),
    Budget(trials=8, tune_epochs=2, tune_subset=10_000, seeds=3, confirm_epochs=3, confirm_subset=None),
    Budget(trials=6, tune_epochs=2, tune_subset=10_000, seeds=3, confirm_epochs=3, confirm_subset=None),
    Budget(trials=6, tune_epochs=2, tune_subset=5_000, seeds=3, confirm_epochs=2, confirm_subset=20_000),
    Budget(trials=5, tune_epochs=2, tune_subset=5_000, seeds=3, confirm_epochs=2, confirm_subset=10_000),
    Budget(trials=4, tune_epochs=2, tune_subset=2_500, seeds=3, confirm_epochs=2, confirm_subset=5_000),
)
GPU_PRESETS = (
    Budget(trials=24, tune_epochs=5, tune_subset=None, seeds=5, confirm_epochs=10, confirm_subset=None),
    Budget(trials=16, tune_epochs=3, tune_subset=None, seeds=5, confirm_epochs=5, confirm_subset=None),
    Budget(trials=12, tune_epochs=3, tune_subset=20_000, seeds=3, confirm_epochs=5, confirm_subset=None),
)
QUICK = Budget(trials=2, tune_epochs=1, tune_subset=512, seeds=2, confirm_epochs=1, confirm_subset=512, bs=64)
MAX_SEEDS = 10  # default last look of a sequential study (--max-seeds)
RESERVE_ROUNDS = 2  # a sequential study's preset leaves time for this many rounds beyond its first look
# A preset chosen before on this machine is kept while its estimate is within 10% over the target, and left only for
# a bigger one 10% under it: a plan that flips between reruns on probe noise is not reproducible.
HYSTERESIS = 0.10


def choose_budget(
    presets: tuple[Budget, ...],
    seconds: Callable[[Budget], tuple[float, float]],
    target_s: float,
    max_seeds: int | None = None,
    previous: Budget | None = None,
) -> tuple[Budget, bool]:
    """The first preset whose estimated seconds fit `target_s` (else the smallest one), then its sequential seeds.

    `seconds(preset)` is (its first look, one more round), so n seeds take first + (n − seeds) · round. With
    `max_seeds` above a preset's seeds the study is sequential: the preset must leave room for `RESERVE_ROUNDS`
    extra rounds, and its last look is the most seeds (≤ max_seeds) whose full run still fits.
    `previous` (this question's last answer on this machine) is kept within the `HYSTERESIS` band."""
    cap, timed = max_seeds or 0, [seconds(b) for b in presets]

    def with_seeds(i: int, n: int) -> float:
        first, round_s = timed[i]
        return first + max(n - presets[i].seeds, 0) * round_s

    def with_rounds(i: int) -> float:
        return with_seeds(i, max(presets[i].seeds, min(presets[i].seeds + RESERVE_ROUNDS, cap)))

    def first_fit(limit: float) -> int | None:
        return next((i for i in range(len(presets)) if with_rounds(i) <= limit), None)

    def last_look(i: int, limit: float) -> int:
        n = presets[i].seeds
        while n < cap and with_seeds(i, n + 1) <= limit:
            n += 1
        return n

    fit = first_fit(target_s)
    i, fits = (fit, True) if fit is not None else (len(presets) - 1, False)
    before = _index_of(presets, previous)
    if before is not None and with_rounds(before) <= target_s * (1 + HYSTERESIS):
        bigger = first_fit(target_s * (1 - HYSTERESIS))
        i, fits = (bigger if bigger is not None and bigger < before else before), True
    chosen = presets[i]
    last = last_look(i, target_s)
    if previous is not None and i == before:  # the same preset as before: its last look is kept within the band too
        lo, hi = last_look(i, target_s * (1 - HYSTERESIS)), last_look(i, target_s * (1 + HYSTERESIS))
        last = previous.last_seeds if lo <= previous.last_seeds <= hi else last
    return (chosen.with_(max_seeds=last) if last > chosen.seeds else chosen), fits


def _index_of(presets: tuple[Budget, ...], previous: Budget | None) -> int | None:
    """Which preset `previous` was chosen from (its last look aside), if any."""
    if previous is None:
        return None
    return next((k for k, b in enumerate(presets) if replace(b, max_seeds=previous.max_seeds) == previous), None)
