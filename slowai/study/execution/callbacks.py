"""The callbacks every study run gets: pruning, the divergence stop, and a nested progress bar."""

from __future__ import annotations

import math
from typing import Any

import optuna
import torch

from slowai.callbacks import MetricsCB
from slowai.core import Callback
from slowai.learner import Learner

NAN_CHECK_EVERY_GPU = 8  # batches between loss checks on an accelerator (each check is a host sync)


class NonFiniteLoss(Exception):
    """Training diverged (NaN/inf loss): stop the trial now, there is nothing left to learn from it."""


class PruningCB(Callback):
    """Report valid accuracy to Optuna after every epoch and raise `optuna.TrialPruned` when the pruner says so.

    Never prunes after the last epoch: that trial's value is complete and should count as such.
    """

    order = MetricsCB.order + 3  # after WandbCB, so the pruned epoch is still logged

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def after_epoch(self) -> None:
        if self.learn.training:
            return
        epoch = self.learn.epoch
        self.trial.report(self.learn.cb(MetricsCB).last["accuracy"], epoch)
        if epoch < self.learn.n_epochs - 1 and self.trial.should_prune():
            self.trial.set_user_attr("stop_reason", f"pruned after epoch {epoch + 1}/{self.learn.n_epochs}")
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


class FiniteLossCB(Callback):
    """Stop a diverged trial as soon as its loss is NaN/inf, with the epoch and batch in the reason.

    The batch loss is checked every batch on CPU (free) and every `every` batches on an accelerator (each check is a
    host sync), and the epoch mean always: a diverged trial stops within a few batches instead of running on.
    """

    order = MetricsCB.order + 1

    def __init__(self, every: int | None = None) -> None:
        self.every = every

    def after_loss(self) -> None:
        loss, i = self.learn.loss, self.learn.iter
        k = self.every or (1 if loss.device.type == "cpu" else NAN_CHECK_EVERY_GPU)
        if (i + 1) % k == 0 and not bool(torch.isfinite(loss.detach()).all()):
            self._stop(float(loss.detach().float().mean()), f", batch {i + 1}/{_n_batches(self.learn)}")

    def after_epoch(self) -> None:
        loss = self.learn.cb(MetricsCB).last["loss"]
        if not math.isfinite(loss):
            self._stop(loss, " (epoch mean)")

    def _stop(self, value: float, where: str) -> None:
        kind = "train" if self.learn.training else "valid"
        raise NonFiniteLoss(
            f"non-finite {kind} loss ({value}) at epoch {self.learn.epoch + 1}/{self.learn.n_epochs}{where}"
        )


def _n_batches(learn: Learner) -> int | str:
    dl = learn.dls.train if learn.training else learn.dls.valid  # learn.dl may be wrapped in a progress bar
    return len(dl) if hasattr(dl, "__len__") else "?"


class TrialBarCB(Callback):
    """A batch progress bar per epoch nested under the study's master bar."""

    order = MetricsCB.order + 4

    def __init__(self, parent: Any) -> None:
        self.parent = parent

    def before_epoch(self) -> None:
        from fastprogress.fastprogress import progress_bar

        self.learn.dl = progress_bar(self.learn.dl, leave=False, parent=self.parent)
