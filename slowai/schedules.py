"""Learning-rate schedules as callbacks, by name from a registry users extend, so a space can say `sched: cosine`.

Every schedule is a `ScheduleCB`: `make(opt, total_steps)` returns a torch LR scheduler over the whole fit, stepped
once per training batch. Fractions (`warmup`, `milestones`, `pct_start`) are of the fit, so a schedule means the
same thing at any number of epochs. `check_schedule` builds one against a throwaway optimizer, so a study can
reject a bad name, keyword or value before any training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, MultiStepLR, OneCycleLR

from slowai.core import Callback
from slowai.registry import Registry
from slowai.utils import first_line

__all__ = [
    "ConstantCB",
    "CosineCB",
    "MultiStepCB",
    "OneCycleCB",
    "ScheduleCB",
    "check_schedule",
    "create_schedule",
    "list_schedules",
    "register_schedule",
    "schedule_options",
]


class ScheduleCB(Callback):
    """Base of the lr schedules: build a torch scheduler in `before_fit`, step it after each optimizer step."""

    order = 10

    def make(self, opt: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        """The torch scheduler for a fit of `total_steps` training batches; the optimizer's lr is the peak lr."""
        raise NotImplementedError

    def before_fit(self) -> None:
        self.total_steps = self.learn.n_epochs * len(self.learn.dls.train)
        self.sched = self.make(self.learn.opt, self.total_steps)

    def after_step(self) -> None:
        if self.sched.last_epoch < self.total_steps:  # never past the end (OneCycleLR would raise)
            self.sched.step()


def _require(ok: bool, message: str) -> None:
    """Raise a one-line ValueError at construction, so a bad value fails before the fit (and in `check_schedule`)."""
    if not ok:
        raise ValueError(message)


def _peak_lr(opt: torch.optim.Optimizer) -> float:
    """The lr the optimizer was built with: the Learner's lr, the peak of every schedule here."""
    return opt.defaults["lr"]


class OneCycleCB(ScheduleCB):
    """torch's OneCycleLR over the whole fit (momentum cycles too); `max_lr=None` peaks at the Learner's lr."""

    def __init__(
        self,
        max_lr: float | None = None,
        pct_start: float = 0.3,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        anneal_strategy: str = "cos",
        three_phase: bool = False,
        cycle_momentum: bool = True,
        base_momentum: float = 0.85,
        max_momentum: float = 0.95,
    ) -> None:
        _require(max_lr is None or max_lr > 0, f"max_lr must be > 0, got {max_lr}")
        _require(div_factor > 0 and final_div_factor > 0, "div_factor and final_div_factor must be > 0")
        self.max_lr = max_lr
        self.kw = {
            "pct_start": pct_start,
            "div_factor": div_factor,
            "final_div_factor": final_div_factor,
            "anneal_strategy": anneal_strategy,
            "three_phase": three_phase,
            "cycle_momentum": cycle_momentum,
            "base_momentum": base_momentum,
            "max_momentum": max_momentum,
        }

    def make(self, opt: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        max_lr = self.max_lr if self.max_lr is not None else _peak_lr(opt)
        return OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, **self.kw)


class MultiStepCB(ScheduleCB):
    """Multiply the lr by `gamma` at fractions `milestones` of the fit (the tutorial's ×0.1 at 60% and 85%)."""

    def __init__(self, milestones: tuple[float, ...] = (0.6, 0.85), gamma: float = 0.1) -> None:
        in_range = all(0 < m < 1 for m in milestones)
        _require(in_range, f"milestones are fractions of training in (0, 1), got {milestones}")
        _require(gamma > 0, f"gamma must be > 0, got {gamma}")
        self.milestones, self.gamma = tuple(milestones), gamma

    def make(self, opt: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        steps = sorted({round(m * total_steps) for m in self.milestones})
        return MultiStepLR(opt, milestones=steps, gamma=self.gamma)


def _warmup_steps(warmup: float, total_steps: int) -> int:
    """Batches of linear warm-up; the peak is reached at this batch index (and never after the last batch)."""
    return min(round(warmup * total_steps), total_steps - 1)


def _check_warmup(warmup: float) -> None:
    _require(0 <= warmup < 1, f"warmup is a fraction of training in [0, 1), got {warmup}")


class CosineCB(ScheduleCB):
    """Linear warm-up over the first `warmup` of the fit, then cosine decay from the lr to lr/`final_div`.

    The lr rises as (i+1)/(w+1) of the peak for batches i < w, so no batch trains at lr 0, peaks at batch w and
    reaches lr/`final_div` at the last batch.
    """

    def __init__(self, warmup: float = 0.0, final_div: float = 1e4) -> None:
        _check_warmup(warmup)
        _require(final_div >= 1, f"final_div must be >= 1 (the lr decays to lr/final_div), got {final_div}")
        self.warmup, self.final_div = warmup, final_div

    def make(self, opt: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        warm, last, floor = _warmup_steps(self.warmup, total_steps), total_steps - 1, 1 / self.final_div

        def factor(i: int) -> float:
            if i < warm:
                return (i + 1) / (warm + 1)
            progress = min((i - warm) / max(last - warm, 1), 1.0)
            return floor + (1 - floor) * (1 + math.cos(math.pi * progress)) / 2

        return LambdaLR(opt, factor)


class ConstantCB(ScheduleCB):
    """A constant lr after an optional linear warm-up over the first `warmup` of the fit (as CosineCB's)."""

    def __init__(self, warmup: float = 0.0) -> None:
        _check_warmup(warmup)
        self.warmup = warmup

    def make(self, opt: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        warm = _warmup_steps(self.warmup, total_steps)
        return LambdaLR(opt, lambda i: min(1.0, (i + 1) / (warm + 1)))


_SCHEDULES = Registry("schedule", bases=(ScheduleCB,))


def register_schedule(name: str, description: str = "") -> Callable[[Callable], Callable]:
    """Decorator: make `fn(**kw) -> ScheduleCB` (or a ScheduleCB subclass) creatable as `create_schedule(name)`."""
    return _SCHEDULES.register(name, description)


def list_schedules() -> dict[str, str]:
    """Registered schedule names with a one-line description, for help texts and error messages."""
    return _SCHEDULES.names()


def schedule_options(name: str) -> list[str]:
    """Keywords schedule `name` accepts, so a study can reject an unknown `sched.<kw>` up front."""
    return _SCHEDULES.options(name)


def create_schedule(name: str, **kw: Any) -> ScheduleCB:
    """A fresh schedule callback by name; bad names and keywords fail with one line."""
    return _SCHEDULES.check(name, kw)(**kw)


def check_schedule(name: str, kw: dict[str, Any], lr: float = 1e-3) -> None:
    """Build schedule `name` and step its torch scheduler through a 10-step fit; any problem is one ValueError line."""
    factory = _SCHEDULES.check(name, kw)
    try:
        cb = factory(**kw)
        _require(isinstance(cb, ScheduleCB), f"the factory returned {type(cb).__name__}, not a ScheduleCB")
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)
        sched = cb.make(opt, 10)
        for _ in range(10):
            opt.step()
            sched.step()
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"schedule {name!r} with {kw}: {first_line(e)}") from None


register_schedule("onecycle")(OneCycleCB)
register_schedule("multistep")(MultiStepCB)
register_schedule("cosine")(CosineCB)
register_schedule("constant")(ConstantCB)
