"""Each fused member on its own lr schedule: its own peak lr and schedule values (warm-up, decay, milestones), exact
wherever the members' schedules differ in the lr alone.

How: member k's schedule drives a one-parameter stand-in optimizer of its own (built like the real one, at its peak
lr). Before every step the fused optimizer takes the largest member lr L(t) and the stand-ins' other values
(momentum, betas: equal for all members), and `FusedTrainCB` scales member k's update by lr_k(t)/L(t): for
elementwise optimizers whose state does not depend on the lr (SGD, Adam, AdamW, ...) that is member k's own step.
Schedules that also move the momentum or betas differently per member (one-cycle at different `pct_start`) cannot
share one optimizer: `schedule_trace` tells them apart, so a caller fuses only members with equal traces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from slowai.core import Callback
from slowai.schedules import ScheduleCB

if TYPE_CHECKING:
    from slowai.fuse.train import FusedTrainCB

__all__ = ["MemberSchedulesCB", "schedule_trace"]

LR_KEYS = frozenset({"params", "lr", "initial_lr", "max_lr", "min_lr"})  # what only sets a member's lr

OptFunc = Callable[..., torch.optim.Optimizer]


def _stand_in(opt_func: OptFunc, lr: float) -> torch.optim.Optimizer:
    """A one-parameter optimizer like the real one (same class and settings), for a schedule to drive."""
    return opt_func([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _others(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The group values a schedule may move besides the lr (momentum, betas, ...)."""
    return {k: v for k, v in opt.param_groups[0].items() if k not in LR_KEYS}


def _steps(schedule: ScheduleCB, opt_func: OptFunc, lr: float, total_steps: int) -> list[dict[str, Any]]:
    """The stand-in's non-lr group values before each of `total_steps` batches, and its defaults last."""
    opt = _stand_in(opt_func, lr)
    sched = schedule.make(opt, total_steps)
    values = []
    for _ in range(total_steps):
        values.append(_others(opt))
        opt.step()
        sched.step()
    return [*values, {k: v for k, v in opt.defaults.items() if k not in LR_KEYS}]


def schedule_trace(schedule: ScheduleCB, opt_func: OptFunc, lr: float, total_steps: int) -> tuple[str, ...]:
    """Every non-lr optimizer value the schedule sets, step by step over a fit of `total_steps` batches: members
    whose traces are equal fuse exactly on one optimizer, whatever their lrs."""
    return tuple(repr(sorted(v.items())) for v in _steps(schedule, opt_func, lr, total_steps))


def _moved_keys(steps: list[dict[str, Any]]) -> set[str]:
    """The non-lr values a schedule sets (those that differ from the optimizer's defaults at some step)."""
    *values, defaults = steps
    return {k for v in values for k, x in v.items() if k not in defaults or x != defaults[k]}


def _identity(schedule: ScheduleCB, lr: float) -> str:
    """Equal for two schedules built alike (a confirm round's seeds), so their trace is simulated once."""
    return repr((type(schedule).__qualname__, sorted(vars(schedule).items(), key=lambda kv: kv[0]), lr))


class MemberSchedulesCB(Callback):
    """Member k's lr follows `schedules[k]` from peak `lrs[k]` (replaces the Learner's one `ScheduleCB`); `train`
    is the fused run's `FusedTrainCB`, which scales each member's update."""

    order = 51  # after FusedTrainCB (50), whose `before_fit` resets the multipliers this sets

    def __init__(
        self, schedules: Sequence[ScheduleCB], lrs: Sequence[float], opt_func: OptFunc, train: FusedTrainCB
    ) -> None:
        if len(schedules) != len(lrs):
            raise ValueError(f"one schedule per member: {len(schedules)} schedules for {len(lrs)} lrs")
        self.schedules, self.lrs, self.opt_func = list(schedules), [float(v) for v in lrs], opt_func
        self.train = train

    def before_fit(self) -> None:
        self.total_steps = self.learn.n_epochs * len(self.learn.dls.train)
        distinct = {_identity(s, lr): (s, lr) for s, lr in zip(self.schedules, self.lrs)}  # seeds share one
        steps = [_steps(s, self.opt_func, lr, self.total_steps) for s, lr in distinct.values()]
        if len({repr([sorted(v.items()) for v in st]) for st in steps}) > 1:
            raise ValueError(
                "fused members' schedules differ in more than the lr (momentum or betas move differently): "
                "fuse only members with equal `schedule_trace`s"
            )
        self.moved = _moved_keys(steps[0])
        self.opts = [_stand_in(self.opt_func, lr) for lr in self.lrs]
        self.scheds = [s.make(o, self.total_steps) for s, o in zip(self.schedules, self.opts)]
        self._apply()

    def after_step(self) -> None:
        if self.scheds[0].last_epoch < self.total_steps:  # never past the end (OneCycleLR would raise)
            for opt, sched in zip(self.opts, self.scheds):
                opt.step()  # no gradients: only keeps torch's "step before scheduler" order
                sched.step()
            self._apply()

    def _apply(self) -> None:
        """The fused optimizer at the largest member lr, each member's update scaled to its own lr."""
        lrs = [o.param_groups[0]["lr"] for o in self.opts]
        peak = max(lrs)
        for group in self.learn.opt.param_groups:
            group.update({k: v for k, v in _others(self.opts[0]).items() if k in self.moved}, lr=peak)
        w = next(self.learn.model.parameters())
        mult = None if len(set(lrs)) == 1 else [v / peak for v in lrs]  # one lr: the plain shared step
        self.train.lr_mult = None if mult is None else torch.tensor(mult, dtype=w.dtype).to(w.device, non_blocking=True)
