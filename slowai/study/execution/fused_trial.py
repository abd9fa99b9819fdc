"""Runs of one candidate trained together as one fused model (`slowai.fuse`), each still its own Optuna trial, W&B
run, saved model and results row: a confirm round's seeds, or tune trials whose draws keep the model's shapes.

Why: a small net's step is dispatch-bound, so one fused step of K members can cost far less than K steps (the plan
measures it per candidate, `planning.fusion`). Member k is the unfused run it stands for: its seed's initialisation,
its train/valid split, its batches and augmentations (`tests/test_fuse.py`, `tests/test_fused_study.py`), and in a
tune batch its own lr, weight decay, label smoothing and lr schedule; a member the pruner stops stops counting while
the others go on. What differs: a fused model trains channels-last when the plan chose it for the candidate but never
compiled, and each member's seconds are the fused run's divided by K.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from torch.optim import Optimizer

from slowai.core import Callback
from slowai.fuse import FusedMetricsCB, FusedTrainCB, fuse_seeds, fused_learner, schedule_trace
from slowai.learner import Learner
from slowai.optim import create_optimizer
from slowai.schedules import ScheduleCB, create_schedule
from slowai.study.coordination.failures import reason
from slowai.study.execution import artifacts
from slowai.study.execution.tracking import TrackedRun
from slowai.study.execution.trial import Outcome, TrialContext, TrialRunner, history_rows, test_scores
from slowai.study.space import TrainConfig
from slowai.summary import Summary

FUSED = "fused"  # trial attr: how many runs trained together in this run's fused model


def fusable_key(cfg: TrainConfig) -> tuple:
    """Runs with equal keys may fuse: same model, data, batch size and optimizer; lr, weight decay, label smoothing
    and schedule values are each member's own (exact: elementwise optimizers, `slowai.fuse.schedules`), as long as
    their schedules move nothing but the lr differently (`fusable_groups` checks)."""
    return (cfg.opt, repr(sorted(_opt_kw(cfg).items())), repr(sorted(cfg.model_kw.items())),
            repr(sorted(cfg.data_kw.items())), cfg.bs)  # fmt: skip


def fusable_groups(ctxs: list[TrialContext]) -> list[list[int]]:
    """Indices of `ctxs` that train together: equal `fusable_key`s and equal schedule traces (momentum, betas)."""
    if len(ctxs) == 1:
        return [[0]]
    groups: dict[tuple, list[int]] = {}
    traces: dict[tuple, tuple] = {}
    for i, ctx in enumerate(ctxs):
        cfg, total = ctx.config, ctx.epochs * len(ctx.dls.train)
        key = (fusable_key(cfg), cfg.sched, repr(sorted(cfg.sched_kw.items())), cfg.lr, total)
        if key not in traces:  # confirm seeds share one: simulate it once
            opt_func = partial(_opt_func(cfg), weight_decay=0.0)
            traces[key] = schedule_trace(_schedule(cfg), opt_func, float(cfg.lr), total)
        groups.setdefault((key[0], traces[key]), []).append(i)
    return list(groups.values())


def run_fused(trials: TrialRunner, ctxs: list[TrialContext], study: optuna.Study) -> list[Outcome]:
    """Train `ctxs` (one candidate and stage, one of `fusable_groups`) as one model; record every member as its run."""
    summary = trials.summary(ctxs[0].candidate, ctxs[0].config, ctxs[0].dls)
    channels_last = "channels_last" in trials.speedups.get(ctxs[0].candidate.name, [])
    runs = [_start(trials, ctx, summary, len(ctxs), channels_last) for ctx in ctxs]
    try:
        learn, wall = _train(ctxs, channels_last)
    except BaseException as e:  # the trials themselves are closed FAIL by the scheduler's hold
        for run in runs:
            run.summary({"state": "failed", "fail_reason": reason(e)})
            run.finish(1)
        raise
    name = ctxs[0].candidate.name
    table = summary if runs[0].id is not None and name not in trials.logged_tables else None  # member 0's run
    if table is not None:
        trials.logged_tables.add(name)
    return [
        _finish(trials, study, ctx, run, learn, k, wall, table if k == 0 else None)
        for k, (ctx, run) in enumerate(zip(ctxs, runs))
    ]


def _start(trials: TrialRunner, ctx: TrialContext, summary: Summary, k: int, channels_last: bool) -> TrackedRun:
    """A member's attrs and W&B run, as an unfused run has them, plus how many runs it trained with."""
    attrs = trials.attrs(ctx, summary) | {"accel": ["ChannelsLastCB"] if channels_last else [], FUSED: k}
    for key, value in attrs.items():
        ctx.trial.set_user_attr(key, value)
    run = trials.start_run(ctx, attrs)
    ctx.trial.set_user_attr("wandb_run_id", run.id)
    return run


def _train(ctxs: list[TrialContext], channels_last: bool) -> tuple[Learner, float]:
    """One fit of the fused model: member k built after set_seed(its seed), trained on its split and stream."""
    first = ctxs[0]
    cfg, dls = first.config, first.dls
    seeds = [ctx.seed for ctx in ctxs]

    def build():
        return first.candidate.build(dls.input_shape[0], dls.n_classes, **cfg.model_kw)

    fused = fuse_seeds(build, seeds, dls.train.one_batch()[0][:8])
    if channels_last:
        fused.to_channels_last()
    cbs: list[Callback] = [FusedPruningCB([ctx.trial for ctx in ctxs])] if first.stage == "tune" else []
    lrs = [_lr(ctx.config) for ctx in ctxs]
    wd, smoothing = (_shared_or_each([f(ctx.config) for ctx in ctxs]) for f in (_weight_decay, _smoothing))
    per_member, schedules = [ctx.dls for ctx in ctxs], [_schedule(ctx.config) for ctx in ctxs]
    learn = fused_learner(
        fused, per_member, seeds, lrs, _opt_func(cfg), cbs, weight_decay=wd, label_smoothing=smoothing,
        schedules=schedules,
    )  # fmt: skip
    t0 = time.perf_counter()
    learn.fit(first.epochs)
    return learn, time.perf_counter() - t0


def _shared_or_each(values: list[float]) -> float | list[float]:
    """One value when all members share it (the optimizer's own: the fused step is one plain step), else a list."""
    return values[0] if len(set(values)) == 1 else values


def _opt_func(cfg: TrainConfig) -> Callable[..., Optimizer]:
    """The run's optimizer without its weight decay (`fused_learner` sets that: the optimizer's, or per member)."""
    return partial(create_optimizer, cfg.opt, **_opt_kw(cfg))


def _opt_kw(cfg: TrainConfig) -> dict[str, Any]:
    """The optimizer's settings but its weight decay, which fused members may each have their own of."""
    return {k: v for k, v in cfg.opt_kw.items() if k != "weight_decay"}


def _schedule(cfg: TrainConfig) -> ScheduleCB:
    return create_schedule(cfg.sched, **cfg.sched_kw)


def _lr(cfg: TrainConfig) -> float:
    return float(cfg.lr)


def _smoothing(cfg: TrainConfig) -> float:
    return float(cfg.label_smoothing)


def _weight_decay(cfg: TrainConfig) -> float:
    """The member's weight decay: its own, else its optimizer's default (AdamW's 0.01, SGD's 0)."""
    if "weight_decay" in cfg.opt_kw:
        return float(cfg.opt_kw["weight_decay"])
    import torch

    probe = create_optimizer(cfg.opt, [torch.zeros(1, requires_grad=True)], 1.0)
    return float(probe.defaults.get("weight_decay", 0.0))


class FusedPruningCB(Callback):
    """`PruningCB` per member: report each member's valid accuracy to its trial after every epoch and stop the members
    the pruner prunes (never after the last epoch); the others train on."""

    order = 60  # after FusedTrainCB, whose divergence stop runs first

    def __init__(self, trials: list[optuna.Trial]) -> None:
        self.trials = trials

    def before_fit(self) -> None:
        self.pruned: dict[int, str] = {}

    def after_epoch(self) -> None:
        if self.learn.training:
            return
        epoch, n = self.learn.epoch, self.learn.n_epochs
        train = self.learn.cb(FusedTrainCB)
        rows = self.learn.cb(FusedMetricsCB).history
        for k, trial in enumerate(self.trials):
            if k in train.stopped:
                continue
            trial.report(rows[k][-1]["accuracy"], epoch)
            if epoch < n - 1 and trial.should_prune():
                self.pruned[k] = f"pruned after epoch {epoch + 1}/{n}"
                trial.set_user_attr("stop_reason", self.pruned[k])
                train.stop(k, self.pruned[k])  # the last one stopped ends the fit


def _finish(
    trials: TrialRunner,
    study: optuna.Study,
    ctx: TrialContext,
    run: TrackedRun,
    learn: Learner,
    k: int,
    wall: float,
    table: Summary | None,
) -> Outcome:
    """Member k as its own run: history, test accuracy (confirm), saved weights, W&B rows, its Optuna trial told."""
    model, n = learn.model.member(k), learn.model.k
    rows = learn.cb(FusedMetricsCB).history[k]
    train_s = [r["seconds"] for r in rows if r["train"] == "train"]
    state, why = _state(learn, k, ctx.stage)
    test: dict[str, Any] | None = None
    if ctx.stage == "confirm":
        test = test_scores(model, ctx.dls.test)
    out = Outcome(history_rows(rows), sum(train_s) / max(len(train_s), 1) / n, wall / n, test, state, why, n)
    for row in out.history:
        run.log({key.replace("_", "/", 1): v for key, v in row.items() if key != "epoch"}, step=row["epoch"])
    if table is not None:  # after the epochs: logged first, it would take step 0 and W&B would drop epoch 0
        run.table("model_summary", table.columns, table.data)
    if ctx.stage == "confirm" and state == "complete":
        artifacts.save_model(study, ctx.trial, model, ctx, run, trials.out)
    try:
        trials.record(study, ctx.trial, run, out, ctx.stage)
    except UpdateFinishedTrialError:  # silent past the grace period: its retry counts instead
        run.finish(1)
        out.state, out.reason = "dropped", "declared lost by another worker meanwhile"
    return out


def _state(learn: Learner, k: int, stage: str) -> tuple[str, str | None]:
    """complete, or why member k stopped: pruned (by the pruner, or diverged while tuning) or diverged (confirm)."""
    stopped = learn.cb(FusedTrainCB).stopped
    if k not in stopped:
        return "complete", None
    pruning = learn.cb(FusedPruningCB)
    pruned = pruning is not None and k in pruning.pruned
    return ("pruned" if pruned or stage == "tune" else "diverged"), stopped[k]
