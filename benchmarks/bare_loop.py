"""The seed recipe as a plain PyTorch loop (no slowai): the yardstick the Learner's results and speed are held to."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.optim.lr_scheduler import OneCycleLR

Batches = Callable[[], Iterable[tuple[Tensor, Tensor]]]


def plain_batches(
    x: Tensor, y: Tensor, bs: int, mean: Sequence[float], std: Sequence[float], shuffle: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of normalized float batches from uint8 (N,C,H,W) images, gathered by hand (shuffle: global CPU RNG)."""
    n, c = len(x), x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1)
    order = torch.randperm(n).to(x.device) if shuffle else torch.arange(n, device=x.device)
    for i in range(0, n, bs):
        idx = order[i : i + bs]
        yield (x[idx].float() / 255 - m) / s, y[idx].long()


def run_epoch(
    model: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    opt: torch.optim.Optimizer | None = None,
    sched: OneCycleLR | None = None,
) -> dict[str, float]:
    """Train (with `opt`) or evaluate one epoch; loss/accuracy sums stay on the device until one sync at the end."""
    training = opt is not None
    model.train(training)
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    with torch.set_grad_enabled(training):
        for xb, yb in batches:
            preds = model(xb)
            loss = F.cross_entropy(preds, yb)
            if training:
                loss.backward()
                opt.step()
                if sched is not None and sched.last_epoch < sched.total_steps:
                    sched.step()
                opt.zero_grad(set_to_none=True)
            loss_sum += loss.detach() * len(yb)
            correct += (preds.detach().argmax(1) == yb).sum()
            n += len(yb)
    return {"loss": loss_sum.item() / n, "accuracy": correct.item() / n}


def one_cycle(model: nn.Module, lr: float, total_steps: int) -> tuple[torch.optim.Optimizer, OneCycleLR]:
    """AdamW + OneCycleLR over `total_steps` batches: exactly what `train_1cycle` builds (torch defaults otherwise)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    return opt, OneCycleLR(opt, max_lr=lr, total_steps=total_steps)


def fit_1cycle(
    model: nn.Module, train: Batches, valid: Batches, n_batches: int, lr: float = 1e-2, n_epochs: int = 3
) -> list[dict[str, float]]:
    """The seed recipe: per epoch one training pass (one-cycle stepped per batch) and one validation pass."""
    opt, sched = one_cycle(model, lr, n_epochs * n_batches)
    history = []
    for epoch in range(n_epochs):
        history.append({"epoch": epoch, "train": True, **run_epoch(model, train(), opt, sched)})
        history.append({"epoch": epoch, "train": False, **run_epoch(model, valid())})
    return history
