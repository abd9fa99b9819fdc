"""How many confirm seeds of each candidate train together as one fused model (`slowai.fuse`), decided once per study.

Precedence, as for the other speed-ups: `--fuse off` or `--fuse K` > the decision stored with a resumed study > a
measurement on this machine (`--fuse auto`). Why measured: on the 2-core CPU, 8 small nets fused at 8×8 train about
3× the seeds per second of 8 runs, while at 28×28 oneDNN's grouped convolutions lose to dense ones (0.7×); only a
measurement on the study's own shapes says which. Fusion changes no number (member k is the run of seed k), so, like
the other speed-ups, it is stored with the plan but not fingerprinted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from slowai.fuse import FusionError, fuse_models, measure_fusion
from slowai.study.spec import Budget, Candidate, StudySpec

AUTO_MAX_K = 8  # auto fuses at most this many seeds: beyond it a CPU step gains little and memory grows K-fold
MIN_SPEEDUP = 1.2  # below this, probe noise and the speed-ups a fused model goes without can eat the gain
MIN_CONFIRM_S = 20.0  # a candidate's confirm runs taking less than this in all are not worth the measurement
EXPLICIT_MIN_S = 120.0  # an explicit --fuse K is measured for the estimate alone: its 2-5 s stay under ~3% of this
PROBE = {"steps": 3, "rounds": 2}  # about 2 s a candidate on the 2-core CPU (K = 8 residual nets at 8×8)


@dataclass(frozen=True)
class Fusion:
    """One candidate's decision: `k` seeds of a confirm round train as one model (1: unfused), and why."""

    k: int
    why: str
    speedup: float = 1.0  # measured seeds per second fused over sequential runs (1.0: not measured)


def decide(
    spec: StudySpec,
    budget: Budget,
    confirm_s: dict[str, float],
    shapes: dict[str, tuple[tuple[int, ...], int, int]],
    device: torch.device,
    stored: dict[str, dict[str, Any]],
    accel: dict[str, list[str]],
    measured: dict[tuple, float] | None = None,
) -> dict[str, Fusion]:
    """Each candidate's fusion under the study's fuse setting; `confirm_s`: its estimated confirm seconds; `shapes`:
    (input shape, classes, batch size) of its confirm runs; `accel`: its speed-ups (fused runs keep channels-last);
    `measured`: speed-ups measured before (kept there too), so a planner weighing several presets measures once."""
    before = next((a["fuse"] for a in stored.values() if isinstance(a.get("fuse"), dict)), {})
    memo = {} if measured is None else measured

    def one(c: Candidate) -> Fusion:
        how = (shapes[c.name], device, accel.get(c.name, []), memo)
        return _one(spec, c, budget, confirm_s.get(c.name, 0.0), before, *how)

    return {c.name: one(c) for c in spec.candidates}


def _one(
    spec: StudySpec,
    cand: Candidate,
    budget: Budget,
    confirm_s: float,
    before: dict[str, int],
    shape: tuple[tuple[int, ...], int, int],
    device: torch.device,
    accel: list[str],
    memo: dict[tuple, float],
) -> Fusion:
    if spec.fuse == "off":
        return Fusion(1, "off (--fuse off)")
    if spec.callbacks:
        return Fusion(1, "off: the study's own callbacks expect one model per run")
    if (why := _cannot_fuse(cand, shape)) is not None:
        return Fusion(1, f"off: {why}")
    if spec.fuse != "auto":
        return _explicit(cand, int(spec.fuse), budget, confirm_s, shape, device, accel, memo)
    if cand.name in before:
        k = int(before[cand.name])
        return Fusion(k, (f"{k} at once" if k > 1 else "off") + " (as the study first planned)")
    k = min(budget.seeds, AUTO_MAX_K)
    if k < 2:
        return Fusion(1, "off: one seed a round")
    if confirm_s < MIN_CONFIRM_S:
        return Fusion(1, f"off: too little confirm work to be worth measuring ({confirm_s:.0f} s)")
    speedup = _measure(cand, k, shape, device, accel, memo)
    if speedup < MIN_SPEEDUP:
        return Fusion(1, f"off: {k} fused measured {speedup:.1f}× the seeds per second of {k} runs here")
    return Fusion(k, f"{k} at once ({speedup:.1f}× the seeds per second, measured)", speedup)


def _explicit(
    cand: Candidate,
    k: int,
    budget: Budget,
    confirm_s: float,
    shape: tuple[tuple[int, ...], int, int],
    device: torch.device,
    accel: list[str],
    memo: dict[tuple, float],
) -> Fusion:
    """`--fuse K` as asked; measured too where the confirm work is worth it, so the estimate counts its gain (or
    its loss: K is fused even where it is slower)."""
    n = min(k, budget.seeds)
    if n < 2 or confirm_s < EXPLICIT_MIN_S:
        return Fusion(k, f"{k} at once (--fuse {k})")
    speedup = _measure(cand, n, shape, device, accel, memo)
    return Fusion(k, f"{k} at once (--fuse {k}; {n} fused measured {speedup:.1f}× the seeds per second)", speedup)


def _measure(
    cand: Candidate,
    k: int,
    shape: tuple[tuple[int, ...], int, int],
    device: torch.device,
    accel: list[str],
    memo: dict[tuple, float],
) -> float:
    """Seeds per second of K fused runs over K runs, on the candidate's confirm shapes (its default model)."""
    make, cl = _factory(cand, shape), "channels_last" in accel
    key = (cand.name, k, shape, str(device), cl)
    if key not in memo:
        kw = {**PROBE, "n_classes": shape[1], "device": device, "channels_last": cl}
        memo[key] = measure_fusion(make, k, shape[0], shape[2], **kw).speedup
    return memo[key]


def _factory(cand: Candidate, shape: tuple[tuple[int, ...], int, int]) -> Callable[[], torch.nn.Module]:
    return lambda: cand.build(shape[0][0], shape[1])


def _cannot_fuse(cand: Candidate, shape: tuple[tuple[int, ...], int, int]) -> str | None:
    """Why the candidate's architecture cannot fuse (a layer `fuse_models` refuses), or None."""
    make = _factory(cand, shape)
    try:
        fuse_models([make(), make()], torch.zeros(2, *shape[0]))
    except FusionError as e:
        return str(e)
    return None
