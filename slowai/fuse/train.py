"""Training a FusedModel with the Learner: per-member losses, hyperparameters, metrics, divergence and early stop.

What is exact. The loss is the sum of the members' mean losses, so each member's gradients are those of its own
run. One optimizer over the fused tensors is exact for elementwise optimizers (SGD with or without momentum, Adam,
AdamW, RMSprop, Adagrad): every state element belongs to one member. Not exact: optimizers with per-tensor norms
(LARS, LAMB) and global-norm gradient clipping, which would mix members. Per-member lr is a multiplier of the
optimizer's (scheduled) lr, applied to each member's update after the step; per-member weight decay is applied by
this callback (decoupled for AdamW, added to the gradient otherwise), so the optimizer's own must be 0. A stopped
member (`stop(k)`, or a non-finite training loss at an epoch's end) keeps its weights and BatchNorm statistics
(BatchNorm's `num_batches_tracked` is one counter for all members: it counts the fused model's steps).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from slowai.core import Callback, CancelFitException
from slowai.data import DataLoaders
from slowai.fuse.loaders import fused_loaders
from slowai.fuse.model import FusedModel, fuse_seeds
from slowai.fuse.schedules import MemberSchedulesCB
from slowai.learner import DeviceCB, Learner
from slowai.schedules import ScheduleCB

__all__ = ["FusedMetricsCB", "FusedTrainCB", "fit_fused", "fused_learner", "member_losses"]

PerMember = float | Sequence[float]


def member_losses(preds: Tensor, y: Tensor, label_smoothing: Tensor | float = 0.0) -> Tensor:
    """(K,) mean cross-entropy per member of (K, B, classes) logits; `label_smoothing` a float or one per member."""
    k, b = y.shape
    if not isinstance(label_smoothing, Tensor):
        flat = F.cross_entropy(preds.flatten(0, 1), y.flatten(), reduction="none", label_smoothing=label_smoothing)
        return flat.view(k, b).mean(1)
    logp = preds.log_softmax(-1)
    nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    eps = label_smoothing.view(k, 1)
    return ((1 - eps) * nll - eps * logp.mean(-1)).mean(1)  # what F.cross_entropy(label_smoothing=eps) computes


def _per_member(values: PerMember | None, like: Tensor, k: int, name: str) -> Tensor | None:
    """One value per member (a float: the same for all) as a tensor of the weights' dtype and device."""
    if values is None:
        return None
    if isinstance(values, (int, float)):
        values = [values] * k
    if len(values) != k:
        raise ValueError(f"{name} needs one value per member ({k}), got {len(values)}")
    return torch.tensor([float(v) for v in values], dtype=like.dtype, device=like.device)


def _by_member(t: Tensor, k: int) -> Tensor:
    return t.unflatten(0, (k, -1))


def _broadcast(v: Tensor, like: Tensor) -> Tensor:
    return v.view(-1, *[1] * (like.ndim - 1))


class FusedTrainCB(Callback):
    """The fused step (replaces TrainCB): per-member losses, lr multipliers, weight decay, divergence and stop.

    `lr_mult` scales each member's update (of the optimizer's scheduled lr); `weight_decay` is applied here, per
    member, on top of the optimizer's (give it 0 there); both take one value per member or one for all.
    `learn.member_loss` holds the (K,) losses of the batch. `stopped` maps a stopped member to the reason.
    """

    order = 50  # after MetricsCB-like callbacks, so a divergence stop sees the epoch they recorded

    def __init__(
        self, lr_mult: PerMember | None = None, weight_decay: PerMember | None = None, label_smoothing: PerMember = 0.0
    ) -> None:
        self.lr_mult_arg, self.wd_arg, self.ls_arg = lr_mult, weight_decay, label_smoothing

    def before_fit(self) -> None:
        model: FusedModel = self.learn.model
        self.k, weight = model.k, next(model.parameters())
        self.stopped: dict[int, str] = {}
        self.active = torch.ones(self.k, dtype=torch.bool, device=weight.device)
        self.lr_mult = _per_member(self.lr_mult_arg, weight, self.k, "lr_mult")
        self.wd = _per_member(self.wd_arg, weight, self.k, "weight_decay")
        shared = isinstance(self.ls_arg, (int, float))  # one float: F.cross_entropy's own label smoothing
        self.label_smoothing = self.ls_arg if shared else _per_member(self.ls_arg, weight, self.k, "label_smoothing")
        if self.wd is not None and any(g.get("weight_decay", 0) for g in self.learn.opt.param_groups):
            raise ValueError("per-member weight_decay needs the optimizer's own weight_decay set to 0")
        opt = self.learn.opt
        self.decoupled = isinstance(opt, torch.optim.AdamW) or bool(opt.defaults.get("decoupled_weight_decay"))

    @property
    def shared_step(self) -> bool:
        """True when one optimizer step is already every member's own step (no per-member work needed)."""
        return self.lr_mult is None and self.wd is None and not self.stopped

    def before_epoch(self) -> None:
        self.finite = torch.ones(self.k, dtype=torch.bool, device=self.active.device)

    def predict(self) -> None:
        keep = self.stopped and self.learn.training  # restored in `step`: the backward pass still reads them
        self.kept = [(b, b.clone()) for b in self.learn.model.buffers() if b.ndim] if keep else []
        self.learn.preds = self.learn.model(self.learn.batch[0])

    def get_loss(self) -> None:
        self.learn.member_loss = member_losses(self.learn.preds, self.learn.batch[1], self.label_smoothing)
        if self.learn.training:
            self.finite &= torch.isfinite(self.learn.member_loss.detach())
        self.learn.loss = torch.where(self.active, self.learn.member_loss, 0).sum()

    def backward(self) -> None:
        self.learn.loss.backward()

    def step(self) -> None:
        if self.shared_step:
            self.learn.opt.step()
            return
        params = [p for g in self.learn.opt.param_groups for p in g["params"] if p.grad is not None]
        old = [p.detach().clone() for p in params]
        if self.wd is not None:
            self._decay()
        self.learn.opt.step()
        with torch.no_grad():
            for b, o in self.kept:  # a stopped member's BatchNorm statistics stay put
                self._keep_stopped(b, o, b)
            for p, o in zip(params, old):
                pk, ok = _by_member(p, self.k), _by_member(o, self.k)
                self._keep_stopped(p, o, pk if self.lr_mult is None else ok + _broadcast(self.lr_mult, pk) * (pk - ok))

    def _keep_stopped(self, t: Tensor, old: Tensor, new: Tensor) -> None:
        """Write `new` (member-major, like `_by_member(t)`) into `t`, keeping stopped members' `old` slices."""
        tk = _by_member(t, self.k)
        tk.copy_(torch.where(_broadcast(self.active, tk), new.view_as(tk), _by_member(old, self.k)))

    @torch.no_grad()
    def _decay(self) -> None:
        """Per-member weight decay: shrink the weights (AdamW's decoupled decay) or add wd·w to the gradient."""
        for group in self.learn.opt.param_groups:
            for p in (p for p in group["params"] if p.grad is not None):
                pk = _by_member(p, self.k)
                wd = _broadcast(self.wd, pk)
                if self.decoupled:
                    pk.mul_(1 - group["lr"] * wd)
                else:
                    _by_member(p.grad, self.k).add_(pk * wd)

    def zero_grad(self) -> None:
        self.learn.opt.zero_grad(set_to_none=True)

    def after_epoch(self) -> None:
        if not self.learn.training:
            return
        epoch = self.learn.epoch + 1
        for k in (~self.finite).nonzero().flatten().tolist():  # the one host sync of the epoch
            if k not in self.stopped:
                self.stop(k, f"diverged: non-finite train loss in epoch {epoch}")

    def stop(self, k: int, reason: str = "stopped") -> None:
        """Member k stops updating from the next batch on (early stop, pruning); all stopped ends the fit."""
        self.stopped[k] = reason
        self.active[k] = False
        if len(self.stopped) == self.k:
            raise CancelFitException()


class FusedMetricsCB(Callback):
    """Per-member accuracy and mean loss per pass, summed on the device and read once per epoch.

    `history[k]` is member k's list of rows {"accuracy", "loss", "epoch", "train", "seconds"}, like MetricsCB's.
    """

    order = 0

    def before_fit(self) -> None:
        self.history: list[list[dict[str, Any]]] = [[] for _ in range(self.learn.model.k)]

    def before_epoch(self) -> None:
        device = next(self.learn.model.parameters()).device
        self.loss_sum = torch.zeros(len(self.history), device=device)
        self.correct = torch.zeros(len(self.history), dtype=torch.long, device=device)
        self.n, self.t0 = 0, time.perf_counter()

    def after_batch(self) -> None:
        y = self.learn.batch[1]
        self.loss_sum += self.learn.member_loss.detach() * y.shape[1]
        self.correct += (self.learn.preds.detach().argmax(-1) == y).sum(1)
        self.n += y.shape[1]

    def after_epoch(self) -> None:
        losses = [v / self.n for v in self.loss_sum.tolist()]  # divided on the host in float64, like MetricsCB
        accs = [c / self.n for c in self.correct.tolist()]
        kind, seconds = "train" if self.learn.training else "eval", time.perf_counter() - self.t0
        for rows, loss, acc in zip(self.history, losses, accs):
            rows.append({"accuracy": acc, "loss": loss, "epoch": self.learn.epoch, "train": kind, "seconds": seconds})


def fused_learner(
    fused: FusedModel,
    dls: DataLoaders | Sequence[DataLoaders],
    seeds: Sequence[int],
    lr: PerMember,
    opt_func: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
    cbs: Sequence[Callback] = (),
    weight_decay: PerMember | None = None,
    label_smoothing: PerMember = 0.0,
    schedules: Sequence[ScheduleCB] | None = None,
) -> Learner:
    """A Learner for `fused` whose member k trains on seed k's stream of `dls.train`, or of `dls[k].train` when each
    member has loaders of its own (`fused_loaders`).

    A list `lr` gives each member its own peak lr (a schedule in `cbs` peaks at the largest); `schedules`, one per
    member, gives each member its own schedule from its own peak instead (`MemberSchedulesCB`; then `cbs` holds no
    schedule). A float `weight_decay` goes to `opt_func`, a list is applied per member (see the module docstring for
    what is exact).
    """
    lrs = [float(v) for v in lr] if isinstance(lr, Sequence) else None
    peak = max(lrs) if lrs else float(lr)
    if weight_decay is not None:  # a float is the optimizer's; a list is applied per member, the optimizer's is 0
        per_member = isinstance(weight_decay, Sequence)
        opt_func = partial(opt_func, weight_decay=0.0 if per_member else float(weight_decay))
        weight_decay = weight_decay if per_member else None
    mult = [v / peak for v in lrs] if lrs and schedules is None else None
    train = FusedTrainCB(mult, weight_decay, label_smoothing)
    loaders = fused_loaders(dls, seeds)
    base = [DeviceCB(loaders.device), train, FusedMetricsCB()]
    if schedules is not None:
        base.append(MemberSchedulesCB(schedules, lrs or [peak] * fused.k, opt_func, train))
    return Learner(fused, loaders, lr=peak, opt_func=opt_func, cbs=[*base, *cbs])


def fit_fused(
    factory: Callable[[], nn.Module], seeds: Sequence[int], dls: DataLoaders, lr: PerMember, n_epochs: int, **kw: Any
) -> Learner:
    """Train `factory()` once per seed, fused: member k is the run `set_seed(seed_k)`, `dls.train.reseed(seed_k)`.

    `kw` as `fused_learner`. Read the results from the returned Learner: `learn.model.member(k)`,
    `learn.cb(FusedMetricsCB).history[k]`, `learn.cb(FusedTrainCB).stopped`.
    """
    fused = fuse_seeds(factory, seeds, dls.train.one_batch()[0][:8])
    return fused_learner(fused, dls, seeds, lr, **kw).fit(n_epochs)
