"""Which speed-ups (torch.compile, channels-last, bf16) each candidate trains with, decided once per study.

Precedence: an explicit setting (`StudySpec.compile=True/False`, `--compile/--no-compile`, ...) > the decision
stored with a resumed study (so every worker and every resume trains the same way) > a rule on this machine's
measurements (`slowai.accel.compile_pays`, `slowai.accel.channels_last_pays`). bf16 autocast is GPU-only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from slowai import accel
from slowai.data import cache_dir
from slowai.study.planning.estimate import DataSizes
from slowai.study.planning.probe import Throughput
from slowai.study.spec import Budget, StudySpec

NAMES = ("amp", "channels_last", "compile")


def decide(
    spec: StudySpec,
    budget: Budget,
    sizes: DataSizes,
    throughput: dict[str, Throughput],
    device: torch.device,
    stored: dict[str, dict[str, Any]],
    log: Callable[[str], None] = print,
) -> dict[str, list[str]]:
    """Candidate name -> the speed-ups it trains with (subset of NAMES, in that order)."""
    before = next((a["accel"] for a in stored.values() if isinstance(a.get("accel"), dict)), {})
    can_compile, why_not = accel.compiler_available() if device.type == "cpu" else (True, "")
    out = {}
    for c in spec.candidates:
        eager_s = study_train_seconds(budget, sizes, throughput[c.name]) if c.name in throughput else 0.0
        flags = {
            "amp": spec.amp and device.type == "cuda",
            "channels_last": _flag(spec.channels_last, "channels_last", before.get(c.name))
            or (spec.channels_last is None and c.name not in before and accel.channels_last_pays(c.model, device)),
            "compile": _flag(spec.compile, "compile", before.get(c.name))
            or (spec.compile is None and c.name not in before and accel.compile_pays(eager_s, device, model=c.model)),
        }
        out[c.name] = [n for n in NAMES if flags[n]]
    if not can_compile and any("compile" in v for v in out.values()):
        log(f"note: {why_not}; training eagerly")
        out = {k: [n for n in v if n != "compile"] for k, v in out.items()}
    if spec.amp and device.type != "cuda":
        log(f"note: --amp (bf16 autocast) is a GPU speed-up; ignored on {device.type}")
    return out


def study_train_seconds(budget: Budget, sizes: DataSizes, tp: Throughput) -> float:
    """Eager training seconds of all of a candidate's runs: what one compile serves, since a worker compiles an
    architecture once and reuses the compiled module for every later trial (see `TrialRunner._reuse_compiled`)."""
    tune = budget.trials * budget.tune_epochs * sizes.tune_train
    confirm = budget.seeds * budget.confirm_epochs * sizes.confirm_train
    return (tune + confirm) / tp.train_ips


def _flag(explicit: bool | None, name: str, stored: list[str] | None) -> bool:
    """The explicit setting, else what the stored study used; False when neither says (then the rule decides)."""
    if explicit is not None:
        return explicit
    return stored is not None and name in stored


def speedups(spec: StudySpec, chosen: dict[str, list[str]], device: torch.device) -> dict[str, tuple[float, float]]:
    """(throughput factor, seconds paid once) each candidate's speed-ups are expected to give, for the estimate."""
    return {name: _expected(spec.candidate(name).model, names, device) for name, names in chosen.items()}


def _expected(model: str, names: list[str], device: torch.device) -> tuple[float, float]:
    """Channels-last's measured gain on CPU times compile's on top of it, and the one-off cold compile (a worker
    reuses the compiled graphs). Without channels-last's gain the default study ran 27% under its estimate."""
    factor = 1.0
    if "channels_last" in names and device.type == "cpu":
        factor = accel.CHANNELS_LAST_SPEEDUP.get(model, min(accel.CHANNELS_LAST_SPEEDUP.values()))
    if "compile" not in names:
        return factor, 0.0
    speedup = accel.COMPILE_SPEEDUP.get(model, min(accel.COMPILE_SPEEDUP.values()))
    return factor * speedup, accel.COMPILE_COST_S["cold"]


def prepare_compile(chosen: dict[str, list[str]], log: Callable[[str], None]) -> None:
    """Keep compiled kernels on disk (per user), so later trials and other workers do not compile again."""
    if any("compile" in v for v in chosen.values()):
        accel.enable_compile_cache(cache_dir() / "inductor")
