"""Named recipes (optimizer + lr schedule by registry name), ready-made fits over the Learner, a sync-free eval."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from slowai.callbacks import MetricsCB, ProgressCB
from slowai.learner import Callback, DeviceCB, Learner
from slowai.optim import create_optimizer
from slowai.schedules import MultiStepCB, OneCycleCB, ScheduleCB, check_schedule, create_schedule


@dataclass(frozen=True)
class Recipe:
    """An optimizer and an lr schedule by registry name, with their keywords: what a study candidate trains with."""

    opt: str
    opt_kw: dict[str, Any]
    sched: str
    sched_kw: dict[str, Any]

    def opt_func(self, **overrides: Any) -> Callable[..., torch.optim.Optimizer]:
        """The Learner's `opt_func(params, lr=...)`, with `overrides` (e.g. a tuned weight_decay) over `opt_kw`."""
        return partial(create_optimizer, self.opt, **(self.opt_kw | overrides))

    def schedule(self) -> ScheduleCB:
        """A fresh schedule callback (callbacks hold per-fit state, so each fit gets its own)."""
        return create_schedule(self.sched, **self.sched_kw)


RECIPES: dict[str, Recipe] = {
    "onecycle": Recipe("adamw", {"weight_decay": 0.01}, "onecycle", {}),
    "tutorial_sgd": Recipe("sgd", {"momentum": 0.9, "weight_decay": 1e-4}, "multistep", {}),
    "tutorial_adamw": Recipe("adamw", {"weight_decay": 1e-4}, "multistep", {}),
}

# The CIFAR-10 tutorial's optimizers: SGD for its ResNets, AdamW for GoogleNet and DenseNet.
TUTORIAL_SGD = RECIPES["tutorial_sgd"].opt_func()
TUTORIAL_ADAMW = RECIPES["tutorial_adamw"].opt_func()


def register_recipe(name: str, recipe: Recipe) -> Recipe:
    """Add a named recipe for study candidates; its optimizer and schedule are checked now, not at the first trial."""
    if name in RECIPES:
        raise ValueError(f"recipe {name!r} is already registered")
    create_optimizer(recipe.opt, [torch.nn.Parameter(torch.zeros(1))], lr=1e-3, **recipe.opt_kw)
    check_schedule(recipe.sched, recipe.sched_kw)
    RECIPES[name] = recipe
    return recipe


def recipe(name: str, weight_decay: float | None = None) -> tuple[Callable[..., torch.optim.Optimizer], ScheduleCB]:
    """(optimizer factory, schedule callback) of a named recipe, with `weight_decay` or the recipe's default."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; registered: {', '.join(RECIPES)}")
    r = RECIPES[name]
    return r.opt_func(**({} if weight_decay is None else {"weight_decay": weight_decay})), r.schedule()


def train_1cycle(
    model: nn.Module,
    dls: Any = None,
    lr: float = 1e-2,
    n_epochs: int = 3,
    opt_func: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
    cbs: Sequence[Callback] = (),
    loss_func: Callable[..., torch.Tensor] = F.cross_entropy,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> Learner:
    """The reference recipe (AdamW, one-cycle to `lr`, 3 epochs, Fashion-MNIST bs 512 by default) → the fitted Learner.

    Metrics (`learn.cb(MetricsCB).history`) and, with `progress`, the bars and per-epoch table come built in.
    """
    return fit_with_schedule(model, dls, OneCycleCB(), lr, n_epochs, opt_func, cbs, loss_func, progress, device)


def train_multistep(
    model: nn.Module,
    dls: Any,
    lr: float = 0.1,
    n_epochs: int = 200,
    opt_func: Callable[..., torch.optim.Optimizer] = TUTORIAL_SGD,
    milestones: tuple[float, ...] = (0.6, 0.85),
    cbs: Sequence[Callback] = (),
    progress: bool = True,
    device: torch.device | str | None = None,
) -> Learner:
    """The CIFAR-10 tutorial's recipe: constant lr, ×0.1 at 60% and 85% of training (SGD for its ResNets)."""
    schedule = MultiStepCB(milestones)
    return fit_with_schedule(model, dls, schedule, lr, n_epochs, opt_func, cbs, F.cross_entropy, progress, device)


def fit_with_schedule(
    model: nn.Module,
    dls: Any,
    schedule: Callback,
    lr: float,
    n_epochs: int,
    opt_func: Callable[..., torch.optim.Optimizer],
    cbs: Sequence[Callback] = (),
    loss_func: Callable[..., torch.Tensor] = F.cross_entropy,
    progress: bool = True,
    device: torch.device | str | None = None,
) -> Learner:
    """Fit with metrics, an lr `schedule` callback and optional progress output; Fashion-MNIST when `dls` is None."""
    if dls is None:
        from slowai.data import fashion_mnist

        dls = fashion_mnist(bs=512, device=device)
    base: list[Callback] = [DeviceCB(device if device is not None else dls.device), MetricsCB(), schedule]
    if progress:
        base.append(ProgressCB())
    learn = Learner(model, dls, loss_func, lr=lr, cbs=[*base, *cbs], opt_func=opt_func)
    return learn.fit(n_epochs)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dl: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_func: Callable = F.cross_entropy,
    per_item: bool = False,
) -> dict[str, Any]:
    """Mean loss and accuracy of `model` over `dl` in eval mode; sums stay on the device until the end. With
    `per_item`, also "correct": which items it got right (a bool tensor on the CPU), from the same pass."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    right: list[torch.Tensor] = []
    n = 0
    try:
        for xb, yb in dl:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            preds = model(xb)
            loss_sum += loss_func(preds, yb, reduction="sum")
            hit = preds.argmax(1) == yb
            correct += hit.sum()
            right += [hit] if per_item else []
            n += len(yb)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate got an empty loader")
    out: dict[str, Any] = {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}
    return out | ({"correct": torch.cat(right).cpu()} if per_item else {})
