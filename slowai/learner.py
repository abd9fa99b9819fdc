"""The training loop: a tiny Learner whose every behaviour is a callback.

The Learner only sequences events. `fit` runs `before_fit`, then per epoch `before_epoch`, per batch `before_batch`,
`predict`, `after_predict`, `get_loss`, `after_loss` and, when training, `backward`, `after_backward`, `step`,
`after_step`, `zero_grad`, then `after_batch`. Each level (fit, epoch, batch) can be cancelled by raising its
`Cancel*Exception`; the rest of that level is skipped but its `cleanup_*` event always runs, error or not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from slowai.core import CANCEL, Callback, CancelBatchException, CancelEpochException, CancelFitException
from slowai.utils import resolve_device, to_device

__all__ = [
    "Callback",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "Learner",
    "TrainCB",
    "DeviceCB",
]


# Steps that a callback implements (TrainCB by default): the Learner forwards them instead of hard-coding them.
STEP_METHODS = ("predict", "get_loss", "backward", "step", "zero_grad")


class with_cbs:
    """Decorator: wrap a Learner stage in its before/after events, its cancel exception and its cleanup."""

    def __init__(self, stage: str) -> None:
        self.stage = stage

    def __call__(self, f: Callable) -> Callable:
        stage, cancel = self.stage, CANCEL[self.stage]

        def wrapped(learn: Learner, *args: Any, **kw: Any) -> None:
            try:
                learn.callback(f"before_{stage}")
                f(learn, *args, **kw)
                learn.callback(f"after_{stage}")
            except cancel:
                pass
            finally:
                learn.callback(f"cleanup_{stage}")

        return wrapped


class Learner:
    """Model + data + loss + optimizer factory; `fit` drives the events, callbacks do the work.

    `TrainCB` (standard supervised step) and `DeviceCB` (auto device) are added unless `cbs` already has a
    callback of those kinds, so `Learner(model, dls).fit(1)` trains.
    """

    def __init__(
        self,
        model: nn.Module,
        dls: Any,
        loss_func: Callable[..., torch.Tensor] = F.cross_entropy,
        lr: float = 1e-2,
        cbs: Sequence[Callback] | Callback | None = None,
        opt_func: Callable[..., torch.optim.Optimizer] | None = torch.optim.SGD,
    ) -> None:
        self.model, self.dls, self.loss_func, self.lr, self.opt_func = model, dls, loss_func, lr, opt_func
        self.cbs: list[Callback] = []
        self.opt: torch.optim.Optimizer | None = None
        self.training = False
        given = _as_list(cbs)
        if not any(hasattr(cb, "predict") for cb in given):
            given.insert(0, TrainCB())
        if not any(isinstance(cb, DeviceCB) for cb in given):
            given.insert(0, DeviceCB())
        self.add_cbs(given)

    # ---------------------------------------------------------------- callbacks
    def add_cbs(self, cbs: Sequence[Callback] | Callback) -> None:
        for cb in _as_list(cbs):
            cb.learn = self
            self.cbs.append(cb)

    def remove_cbs(self, cbs: Sequence[Callback] | Callback) -> None:
        for cb in _as_list(cbs):
            if cb in self.cbs:
                self.cbs.remove(cb)

    def callback(self, event: str) -> None:
        """Fire `event` on every callback (sorted once per fit, so per-batch dispatch stays cheap)."""
        for cb in self._sorted_cbs:
            method = getattr(cb, event, None)
            if method is not None:
                method()

    @property
    def _sorted_cbs(self) -> list[Callback]:
        key = tuple(map(id, self.cbs))
        if getattr(self, "_sorted_key", None) != key:
            self._sorted_key, self._sorted = key, sorted(self.cbs, key=lambda c: getattr(c, "order", 0))
        return self._sorted

    def cb(self, kind: type[Callback]) -> Callback | None:
        """The first attached callback of type `kind` (e.g. `learn.cb(MetricsCB).history`)."""
        return next((c for c in self.cbs if isinstance(c, kind)), None)

    def __getattr__(self, name: str) -> Any:
        if name in STEP_METHODS:
            return partial(self.callback, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ---------------------------------------------------------------- the loop
    def fit(
        self,
        n_epochs: int = 1,
        train: bool = True,
        valid: bool = True,
        cbs: Sequence[Callback] | Callback | None = None,
        lr: float | None = None,
    ) -> Learner:
        """Train `n_epochs` (a fresh optimizer at `lr`); `cbs` are attached for this call only, even on error."""
        if n_epochs < 1:
            raise ValueError(f"n_epochs must be >= 1, got {n_epochs}")
        extra = _as_list(cbs)
        self.add_cbs(extra)
        try:
            self.n_epochs, self.epochs = n_epochs, range(n_epochs)
            self.lr_used = self.lr if lr is None else lr
            if self.opt_func is not None:
                self.opt = self.opt_func(self.model.parameters(), lr=self.lr_used)
            self._fit(train, valid)
        finally:
            self.remove_cbs(extra)
        return self

    @with_cbs("fit")
    def _fit(self, train: bool, valid: bool) -> None:
        for self.epoch in self.epochs:
            if train:
                self.one_epoch(True)
            if valid:
                with torch.no_grad():
                    self.one_epoch(False)

    def one_epoch(self, training: bool) -> None:
        self.training = training
        self.model.train(training)
        self.dl = self.dls.train if training else self.dls.valid
        self._one_epoch()

    @with_cbs("epoch")
    def _one_epoch(self) -> None:
        for self.iter, self.batch in enumerate(self.dl):
            self._one_batch()

    @with_cbs("batch")
    def _one_batch(self) -> None:
        self.predict()
        self.callback("after_predict")
        self.get_loss()
        self.callback("after_loss")
        if self.training:
            self.backward()
            self.callback("after_backward")
            self.step()
            self.callback("after_step")
            self.zero_grad()


class TrainCB(Callback):
    """The standard supervised step: `preds = model(x)`, `loss = loss_func(preds, y)`, backward, step, zero_grad."""

    def __init__(self, n_inp: int = 1) -> None:
        self.n_inp = n_inp

    def predict(self) -> None:
        self.learn.preds = self.learn.model(*self.learn.batch[: self.n_inp])

    def get_loss(self) -> None:
        self.learn.loss = self.learn.loss_func(self.learn.preds, *self.learn.batch[self.n_inp :])

    def backward(self) -> None:
        self.learn.loss.backward()

    def step(self) -> None:
        self.learn.opt.step()

    def zero_grad(self) -> None:
        self.learn.opt.zero_grad(set_to_none=True)


class DeviceCB(Callback):
    """Put the model (before fit) and each batch (a no-op for on-device TensorLoaders) on `device`: cuda if present."""

    order = -20

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = resolve_device(device)

    def before_fit(self) -> None:
        self.learn.model.to(self.device)

    def before_batch(self) -> None:
        self.learn.batch = to_device(self.learn.batch, self.device)


def _as_list(cbs: Sequence[Callback] | Callback | None) -> list[Callback]:
    if cbs is None:
        return []
    if isinstance(cbs, Callback):
        return [cbs]
    return list(cbs)
