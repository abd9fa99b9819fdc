"""Ready-made recipes over the Learner (one-cycle AdamW, the tutorial's multi-step SGD) and a sync-free evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from slowai.callbacks import MetricsCB, MultiStepCB, OneCycleCB, ProgressCB
from slowai.learner import Callback, DeviceCB, Learner

# The CIFAR-10 tutorial's optimizers: SGD for its ResNets, AdamW for GoogleNet and DenseNet.
TUTORIAL_SGD = partial(torch.optim.SGD, momentum=0.9, weight_decay=1e-4)
TUTORIAL_ADAMW = partial(torch.optim.AdamW, weight_decay=1e-4)

# name -> (optimizer class, default weight decay, lr schedule callback): what a study candidate trains with.
RECIPES: dict[str, tuple[Callable[..., torch.optim.Optimizer], float, Callable[[], Callback]]] = {
    "onecycle": (torch.optim.AdamW, 0.01, OneCycleCB),
    "tutorial_sgd": (partial(torch.optim.SGD, momentum=0.9), 1e-4, MultiStepCB),
    "tutorial_adamw": (torch.optim.AdamW, 1e-4, MultiStepCB),
}


def recipe(name: str, weight_decay: float | None = None) -> tuple[Callable[..., torch.optim.Optimizer], Callback]:
    """(optimizer factory, schedule callback) of a named recipe, with `weight_decay` or the recipe's default."""
    opt, default_wd, schedule = RECIPES[name]
    return partial(opt, weight_decay=default_wd if weight_decay is None else weight_decay), schedule()


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
    model: nn.Module, dl: Iterable[tuple[torch.Tensor, torch.Tensor]], loss_func: Callable = F.cross_entropy
) -> dict[str, float]:
    """Mean loss and accuracy of `model` over `dl` in eval mode; sums stay on the device until the end."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    try:
        for xb, yb in dl:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            preds = model(xb)
            loss_sum += loss_func(preds, yb, reduction="sum")
            correct += (preds.argmax(1) == yb).sum()
            n += len(yb)
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}
