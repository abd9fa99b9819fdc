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
from typing import Any, NamedTuple

import torch

from slowai.fuse import FusionError, fuse_models, measure_fusion
from slowai.study.spec import Budget, Candidate, StudySpec

AUTO_MAX_K = 8  # auto fuses at most this many seeds: beyond it a CPU step gains little and memory grows K-fold
MIN_SPEEDUP = 1.2  # below this, probe noise and the speed-ups a fused model goes without can eat the gain
MIN_CONFIRM_S = 20.0  # a candidate's confirm runs taking less than this in all are not worth the measurement
EXPLICIT_MIN_S = 120.0  # an explicit --fuse K is measured for the estimate alone: its 2-5 s stay under ~3% of this
PROBE = {"steps": 3, "rounds": 2}  # about 2 s a candidate on the 2-core CPU (K = 8 residual nets at 8×8)


class Shape(NamedTuple):
    """What a candidate's confirm runs build and feed: the fusion measurement's model and batches."""

    input: tuple[int, ...]
    classes: int
    bs: int
    model_kw: dict[str, Any] = {}  # the costliest the space draws; never mutated


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
    shapes: dict[str, Shape],
    device: torch.device,
    stored: dict[str, dict[str, Any]],
    accel: dict[str, list[str]],
    measured: dict[tuple, Any] | None = None,
) -> dict[str, Fusion]:
    """Each candidate's fusion under the study's fuse setting; `confirm_s`: its estimated confirm seconds; `shapes`:
    what its confirm runs build and feed (`Shape`, or its first three fields as a tuple); `accel`: its speed-ups
    (fused runs keep channels-last); `measured`: what was measured before (kept there too), so a planner weighing
    several presets measures once."""
    before = next((a["fuse"] for a in stored.values() if isinstance(a.get("fuse"), dict)), {})
    memo = {} if measured is None else measured

    def one(c: Candidate) -> Fusion:
        how = (Shape(*shapes[c.name]), device, accel.get(c.name, []), memo)
        return _one(spec, c, budget, confirm_s.get(c.name, 0.0), before, *how)

    return {c.name: one(c) for c in spec.candidates}


def _one(
    spec: StudySpec,
    cand: Candidate,
    budget: Budget,
    confirm_s: float,
    before: dict[str, int],
    shape: Shape,
    device: torch.device,
    accel: list[str],
    memo: dict[tuple, Any],
) -> Fusion:
    if spec.fuse == "off":
        return Fusion(1, "off (--fuse off)")
    if spec.callbacks:
        return Fusion(1, "off: the study's own callbacks expect one model per run")
    if (why := _cannot_fuse(cand, shape, memo)) is not None:
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
    shape: Shape,
    device: torch.device,
    accel: list[str],
    memo: dict[tuple, Any],
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
    shape: Shape,
    device: torch.device,
    accel: list[str],
    memo: dict[tuple, Any],
) -> float:
    """Seeds per second of K fused runs over K runs, on the candidate's confirm shapes and model."""
    make, cl = _factory(cand, shape), "channels_last" in accel
    key = (cand.name, k, repr(shape), str(device), cl)
    if key not in memo:
        kw = {**PROBE, "n_classes": shape.classes, "device": device, "channels_last": cl}
        memo[key] = measure_fusion(make, k, shape.input, shape.bs, **kw).speedup
    return memo[key]


def _factory(cand: Candidate, shape: Shape) -> Callable[[], torch.nn.Module]:
    return lambda: cand.build(shape.input[0], shape.classes, **shape.model_kw)


def _cannot_fuse(cand: Candidate, shape: Shape, memo: dict[tuple, Any]) -> str | None:
    """Why the candidate's architecture cannot fuse (a layer `fuse_models` refuses), or None (kept in `memo`)."""
    key = ("cannot", cand.name, repr(shape))
    if key not in memo:
        make = _factory(cand, shape)
        try:
            fuse_models([make(), make()], torch.zeros(2, *shape.input))
            memo[key] = None
        except FusionError as e:
            memo[key] = str(e)
    return memo[key]
