"""Callbacks for metrics, progress, lr recording and lr finding (the lr schedules live in `slowai.schedules`)."""

from __future__ import annotations

import math
import sys
import time
import warnings
from typing import TYPE_CHECKING, Any

from slowai.core import Callback, CancelFitException
from slowai.learner import Learner
from slowai.schedules import MultiStepCB as MultiStepCB  # re-exported: the schedules used to live here
from slowai.schedules import OneCycleCB as OneCycleCB
from slowai.schedules import ScheduleCB
from slowai.utils import in_notebook

if TYPE_CHECKING:
    from torcheval.metrics import Metric


class MetricsCB(Callback):
    """Per-epoch torcheval metrics + mean loss for the train and valid passes, accumulated on the device.

    Batches only update on-device metric state (no host sync); `.item()` happens once per epoch. `history` holds
    one dict per pass: {"epoch", "train", "loss", <metric names>...}; `train_history`/`valid_history` filter it.
    """

    order = 0

    def __init__(self, **metrics: Metric) -> None:
        tm = _torcheval_metrics()
        self.metrics: dict[str, Metric] = metrics or {"accuracy": tm.MulticlassAccuracy()}
        self.loss = tm.Mean()
        self.history: list[dict[str, Any]] = []
        self.last: dict[str, Any] = {}

    @property
    def names(self) -> list[str]:
        """Column order of `history` rows and the progress table."""
        return [*self.metrics, "loss", "epoch", "train"]

    def before_fit(self) -> None:
        self.history = []
        device = next(self.learn.model.parameters()).device
        for m in (*self.metrics.values(), self.loss):
            m.to(device)

    def before_epoch(self) -> None:
        for m in (*self.metrics.values(), self.loss):
            m.reset()
        self._t0 = time.perf_counter()

    def after_batch(self) -> None:
        preds, y = self.learn.preds.detach(), self.learn.batch[-1]
        for m in self.metrics.values():
            m.update(preds, y)
        self.loss.update(self.learn.loss.detach(), weight=len(y))

    def after_epoch(self) -> None:
        row = {name: m.compute().item() for name, m in self.metrics.items()}
        row |= {
            "loss": self.loss.compute().item(),
            "epoch": self.learn.epoch,
            "train": "train" if self.learn.training else "eval",
            "seconds": time.perf_counter() - self._t0,
        }
        self.last = row
        self.history.append(row)

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.history if r["train"] == kind]

    @property
    def train_history(self) -> list[dict[str, Any]]:
        return self._of("train")

    @property
    def valid_history(self) -> list[dict[str, Any]]:
        return self._of("eval")


def live_bars() -> bool:
    """Live bars in notebooks and terminals; plain table lines in logs (CI, redirected output)."""
    return in_notebook() or sys.stdout.isatty()


class ProgressCB(Callback):
    """fastprogress bars with the live loss, and the per-epoch metrics table that MetricsCB computes."""

    order = MetricsCB.order + 1

    def __init__(self, bars: bool | None = None, loss_every: int = 10) -> None:
        self.bars, self.loss_every = bars, loss_every

    def before_fit(self) -> None:
        self.metrics = self.learn.cb(MetricsCB)
        self.mbar = None
        if self.bars if self.bars is not None else live_bars():
            from fastprogress.fastprogress import master_bar  # imported here: it pulls in a web framework

            self.learn.epochs = self.mbar = master_bar(self.learn.epochs)
        self.first = True

    def _write(self, row: list[str]) -> None:
        if self.mbar is not None:
            self.mbar.write(row, table=True)
        else:
            print("  ".join(f"{c:<8}" for c in row).rstrip(), flush=True)

    def after_epoch(self) -> None:
        if self.metrics is None:
            return
        if self.first:
            self._write(self.metrics.names)
            self.first = False
        last = self.metrics.last
        self._write([f"{last[n]:.3f}" if isinstance(last[n], float) else str(last[n]) for n in self.metrics.names])

    def before_epoch(self) -> None:
        if self.mbar is not None:
            from fastprogress.fastprogress import progress_bar

            self.learn.dl = self.pb = progress_bar(self.learn.dl, leave=False, parent=self.mbar)

    def after_batch(self) -> None:
        # The live loss costs a host sync, so it is read only every `loss_every` batches.
        if self.mbar is not None and self.learn.training and self.learn.iter % self.loss_every == 0:
            self.pb.comment = f"{self.learn.loss.item():.3f}"


def _torcheval_metrics() -> Any:
    """torcheval.metrics, imported on first use: its package loads every metric (image ones too), ~1 s."""
    with warnings.catch_warnings():  # torcheval's import calls the deprecated torch.jit.script
        warnings.simplefilter("ignore", FutureWarning)
        import torcheval.metrics

    return torcheval.metrics


def _momentum(group: dict[str, Any]) -> float:
    """SGD's momentum or Adam's beta1, whichever the optimizer has."""
    return group["betas"][0] if "betas" in group else group.get("momentum", 0.0)


class RecorderCB(Callback):
    """Record the lr and momentum of every training batch (plain floats from the optimizer: no host sync)."""

    order = ScheduleCB.order + 1

    def before_fit(self) -> None:
        self.lrs: list[float] = []
        self.moms: list[float] = []

    def before_batch(self) -> None:
        if self.learn.training:  # before the step, so each entry is the lr this batch trains with
            group = self.learn.opt.param_groups[0]
            self.lrs.append(group["lr"])
            self.moms.append(_momentum(group))

    def plot(self) -> Any:
        import matplotlib.pyplot as plt

        fig, (ax_lr, ax_mom) = plt.subplots(1, 2, figsize=(10, 3.5))
        ax_lr.plot(self.lrs)
        ax_lr.set(title="learning rate", xlabel="batch")
        ax_mom.plot(self.moms)
        ax_mom.set(title="momentum / beta1", xlabel="batch")
        fig.tight_layout()
        return fig


class LRFinderCB(Callback):
    """Multiply the lr by `gamma` every batch; stop when the loss exceeds `max_mult` × its minimum or is not finite.

    A diagnostic, not the training hot loop, so it reads the loss every batch.
    """

    order = ScheduleCB.order

    def __init__(self, gamma: float = 1.3, max_mult: float = 3.0) -> None:
        self.gamma, self.max_mult = gamma, max_mult

    def before_fit(self) -> None:
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.min = math.inf

    def after_batch(self) -> None:
        if not self.learn.training:
            raise CancelFitException()
        loss = self.learn.loss.item()
        self.lrs.append(self.learn.opt.param_groups[0]["lr"])
        self.losses.append(loss)
        self.min = min(self.min, loss)
        if not math.isfinite(loss) or loss > self.max_mult * self.min:
            raise CancelFitException()
        for g in self.learn.opt.param_groups:
            g["lr"] *= self.gamma

    @property
    def result(self) -> LRFinderResult:
        return LRFinderResult(self.lrs, self.losses)


class LRFinderResult:
    """Learning rates and losses of an lr_find sweep, with a `plot()` and a suggestion."""

    def __init__(self, lrs: list[float], losses: list[float]) -> None:
        self.lrs, self.losses = lrs, losses

    @property
    def suggestion(self) -> float:
        """The lr of the steepest loss descent, a tenth of the lr at the minimum if there is no clear slope."""
        import math

        if len(self.losses) < 3:
            return self.lrs[0] if self.lrs else float("nan")
        best_i = min(range(len(self.losses)), key=self.losses.__getitem__)
        slopes = [
            (self.losses[i + 1] - self.losses[i]) / (math.log(self.lrs[i + 1]) - math.log(self.lrs[i]))
            for i in range(best_i)
        ]
        if not slopes:
            return self.lrs[best_i] / 10
        return self.lrs[min(range(len(slopes)), key=slopes.__getitem__)]

    def plot(self, ax: Any = None) -> Any:
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots()[1]
        ax.plot(self.lrs, self.losses)
        ax.set(xscale="log", xlabel="learning rate", ylabel="loss")
        ax.axvline(self.suggestion, ls="--", c="gray")
        return ax

    def __repr__(self) -> str:
        return f"LRFinderResult({len(self.lrs)} steps, suggestion={self.suggestion:.2e})"


def lr_find(
    learn: Learner, start_lr: float = 1e-6, gamma: float = 1.3, max_mult: float = 3.0, max_epochs: int = 10
) -> LRFinderResult:
    """Ramp the lr exponentially from `start_lr` until the loss diverges; weights are restored afterwards."""
    state = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    finder = LRFinderCB(gamma=gamma, max_mult=max_mult)
    try:
        learn.fit(max_epochs, valid=False, lr=start_lr, cbs=finder)
    finally:
        learn.model.load_state_dict(state)
    return finder.result


Learner.lr_find = lr_find  # a tool built from a callback, attached where the callback lives (as fastai does)
