"""One training run of a study (a tune trial or a confirm seed): its callbacks, its records in Optuna and W&B.

A run is a fresh model trained with the candidate's recipe as overridden by the drawn hyperparameters (see
`slowai.study.space`), plus the study's own callbacks (`StudySpec.callbacks`, each called with a `TrialContext`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from slowai.accel import CompileCB, accel_cbs
from slowai.callbacks import MetricsCB
from slowai.core import Callback
from slowai.data import DataLoaders
from slowai.learner import DeviceCB, Learner
from slowai.optim import create_optimizer
from slowai.schedules import create_schedule
from slowai.study.analysis import testset
from slowai.study.coordination.failures import reason
from slowai.study.coordination.lease import worker_id
from slowai.study.data import describe_data
from slowai.study.execution import artifacts
from slowai.study.execution.callbacks import FiniteLossCB, NonFiniteLoss, PruningCB, TrialBarCB
from slowai.study.execution.tracking import TrackedRun, Tracker, WandbCB
from slowai.study.space import TrainConfig
from slowai.study.spec import Candidate, StudySpec, json_safe
from slowai.summary import Summary, summarize
from slowai.train import evaluate
from slowai.utils import set_seed


@dataclass
class TrialContext:
    """What a study callback factory is told about the run it is added to."""

    spec: StudySpec
    candidate: Candidate
    stage: str  # "tune" or "confirm"
    seed: int
    trial: optuna.Trial
    hp: dict[str, Any]  # the search space's dict, as drawn
    config: TrainConfig  # the same, routed (see slowai.study.space)
    dls: DataLoaders
    epochs: int
    out: Path


@dataclass
class Outcome:
    """What one trained trial produced."""

    history: list[dict[str, float]]
    seconds_per_epoch: float
    wall_s: float
    test: dict[str, float] | None = None
    state: str = "complete"
    reason: str | None = None
    fused: int = 1  # runs trained together as one fused model (`fused_trial`)

    @property
    def best_valid(self) -> float:
        valid = [r["valid_accuracy"] for r in self.history if r.get("valid_accuracy") is not None]
        return max(valid) if valid else float("nan")

    @property
    def last_valid(self) -> float:
        last = self.history[-1].get("valid_accuracy") if self.history else None
        return float("nan") if last is None else last  # 0.0 is a result, not a missing one


class TrialRunner:
    """Trains, records and saves runs for one worker process: W&B runs, trial attrs, model artifacts."""

    def __init__(
        self,
        spec: StudySpec,
        tracker: Tracker,
        accel: dict[str, list[str]],
        commit: str | None,
    ) -> None:
        self.spec, self.tracker, self.speedups, self.commit = spec, tracker, accel, commit
        self.out = spec.out_dir
        self.summaries: dict[tuple, Summary] = {}
        self.logged_tables: set[str] = set()
        self.compiled: dict[tuple, torch.nn.Module] = {}

    def accel(self, cand: Candidate) -> list[Callback]:
        """The speed-up callbacks the plan chose for this candidate."""
        names = self.speedups.get(cand.name, [])
        return accel_cbs(amp="amp" in names, channels_last="channels_last" in names, compile="compile" in names)

    def summary(self, cand: Candidate, cfg: TrainConfig, dls: DataLoaders) -> Summary:
        """Per-layer summary of the model this run trains (tuned model kwargs included), once per process."""
        key = _model_key(cand, cfg, dls)
        if key not in self.summaries:
            model = cand.build(dls.input_shape[0], dls.n_classes, **cfg.model_kw).to(dls.device)
            self.summaries[key] = summarize(model, dls=dls)
        return self.summaries[key]

    def train(self, ctx: TrialContext, run: TrackedRun, bar: Any) -> tuple[Outcome, torch.nn.Module]:
        """Seeded training of a fresh model; tune runs get pruning and the divergence stop."""
        cfg, dls, tune = ctx.config, ctx.dls, ctx.stage == "tune"
        set_seed(ctx.seed)  # the model's initialisation (and dropout) stream
        model = ctx.candidate.build(dls.input_shape[0], dls.n_classes, **cfg.model_kw)
        dls.train.reseed(ctx.seed)  # paired seeds: every candidate sees this seed's batch order and augmentations
        accel = self.accel(ctx.candidate)
        if any(isinstance(cb, CompileCB) for cb in accel):
            model = self._reuse_compiled(ctx, model)
        metrics = MetricsCB()
        cbs: list[Callback] = [DeviceCB(dls.device), metrics, create_schedule(cfg.sched, **cfg.sched_kw), WandbCB(run)]
        cbs += accel
        cbs.append(FiniteLossCB())  # a diverged confirm run stops too, and is reported as diverged with its reason
        if tune:
            cbs.append(PruningCB(ctx.trial))
        if bar is not None:
            cbs.append(TrialBarCB(bar))
        cbs += [cb for make in self.spec.callbacks for cb in _as_list(make(ctx))]
        opt_func = partial(create_optimizer, cfg.opt, **cfg.opt_kw)
        learn = Learner(model, dls, cfg.loss_func(), lr=cfg.lr, cbs=cbs, opt_func=opt_func)
        t0 = time.perf_counter()
        state, why = "complete", None
        try:
            learn.fit(ctx.epochs)
        except optuna.TrialPruned:
            state, why = "pruned", ctx.trial.user_attrs.get("stop_reason", "pruned")
        except NonFiniteLoss as e:
            state, why = ("pruned" if tune else "diverged"), str(e)
        finally:
            dls.train.reseed(None)
        test = test_scores(model, dls.test) if not tune else None
        wall = time.perf_counter() - t0
        train_s = [r["seconds"] for r in metrics.train_history]
        return Outcome(
            history_rows(metrics.history), sum(train_s) / max(len(train_s), 1), wall, test, state, why
        ), model

    def _reuse_compiled(self, ctx: TrialContext, fresh: torch.nn.Module) -> torch.nn.Module:
        """The module this process already compiled for this architecture, holding `fresh`'s seeded weights.

        Why: compiling a new module costs seconds of tracing even with inductor's disk cache, every trial; copying the
        new weights and buffers into the compiled one (in place, so no guard changes) costs nothing.
        """
        cached = self.compiled.setdefault(_model_key(ctx.candidate, ctx.config, ctx.dls), fresh)
        if cached is not fresh:
            with torch.no_grad():
                cached.load_state_dict(fresh.to(next(cached.parameters()).device).state_dict())
        return cached

    def run(self, ctx: TrialContext, study: optuna.Study, bar: Any) -> Outcome:
        """Train, record attrs + W&B, save a confirm run's model, tell Optuna; on errors the W&B run is closed."""
        trial, cand = ctx.trial, ctx.candidate
        s = self.summary(cand, ctx.config, ctx.dls)
        attrs = self.attrs(ctx, s)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        run = self.start_run(ctx, attrs)
        trial.set_user_attr("wandb_run_id", run.id)
        try:
            out, model = self.train(ctx, run, bar)
        except BaseException as e:  # the trial itself is closed FAIL by the scheduler's claim
            run.summary({"state": "failed", "fail_reason": reason(e)})
            run.finish(1)
            raise
        if run.id is not None and cand.name not in self.logged_tables:
            run.table("model_summary", s.columns, s.data)
            self.logged_tables.add(cand.name)
        if ctx.stage == "confirm" and out.state == "complete":
            artifacts.save_model(study, trial, model, ctx, run, self.out)
        try:
            self.record(study, trial, run, out, ctx.stage)
        except UpdateFinishedTrialError:  # this worker was silent past the grace period: its retry counts instead
            run.finish(1)
            out.state, out.reason = "dropped", "declared lost by another worker meanwhile"
        return out

    def attrs(self, ctx: TrialContext, s: Summary) -> dict[str, Any]:
        return {
            "candidate": ctx.candidate.name,
            "stage": ctx.stage,
            "seed": ctx.seed,
            "dataset": self.spec.dataset_name,
            **describe_data(ctx.dls),
            "model": ctx.candidate.describe(),
            "hyperparams": {k: json_safe(v) for k, v in ctx.hp.items()},  # as drawn, fixed values included
            "train_config": ctx.config.describe(),  # what trained: the recipe's defaults filled in
            "accel": [cb.name for cb in self.accel(ctx.candidate)],
            "params": s.total_params,
            "mflops": s.total_mflops,
            "epochs": ctx.epochs,
            "git_commit": self.commit,
            "worker": worker_id(),
        }

    def start_run(self, ctx: TrialContext, attrs: dict[str, Any]) -> TrackedRun:
        keys = ("seed", "params", "mflops", "epochs", "data_source", "model", "accel", "input_shape")
        config = {
            **ctx.config.describe(),
            **attrs["hyperparams"],
            **{k: attrs[k] for k in keys},
            "candidate": ctx.candidate.name,
            "dataset": self.spec.dataset_name,
            "trial": ctx.trial.number,
            "study": self.spec.name,
            "stage": ctx.stage,
            "train_size": ctx.dls.train.n,
            "bs": ctx.dls.train.bs,
        }
        name, tags = f"{ctx.candidate.name}-{ctx.stage}-t{ctx.trial.number}", [ctx.candidate.name, config["dataset"]]
        return self.tracker.start(name, ctx.stage, tags, config)

    def record(self, study: optuna.Study, trial: optuna.Trial, run: TrackedRun, out: Outcome, stage: str) -> None:
        trial.set_user_attr("history", out.history)
        trial.set_user_attr("seconds_per_epoch", out.seconds_per_epoch)
        trial.set_user_attr("wall_time_s", out.wall_s)
        trial.set_user_attr("best_valid_accuracy", out.best_valid)
        trial.set_user_attr("outcome", out.state)  # complete | pruned | diverged
        summary = {"best_valid_accuracy": out.best_valid, "wall_time_s": out.wall_s, "state": out.state}
        if out.reason:
            trial.set_user_attr("stop_reason", out.reason)
            summary["stop_reason"] = out.reason
        if out.test is not None:
            trial.set_user_attr("test_accuracy", out.test["accuracy"])
            trial.set_user_attr("test_loss", out.test["loss"])
            summary |= {"test_accuracy": out.test["accuracy"], "test_loss": out.test["loss"]}
            if testset.ATTR in out.test:
                trial.set_user_attr(testset.ATTR, out.test[testset.ATTR])
        if out.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            value = out.last_valid if stage == "tune" else out.test["accuracy"]
            if not math.isfinite(value):  # Optuna would fail it silently, and a rerun would repeat it: say why, once
                for k, v in {"fail_reason": f"non-finite result ({value})", "failure": "error", "final": True}.items():
                    trial.set_user_attr(k, v)
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, value)
        run.summary(summary)
        run.finish(0)


def _model_key(cand: Candidate, cfg: TrainConfig, dls: DataLoaders) -> tuple:
    """One architecture as built for one dataset: what a summary or a compiled module can be reused for."""
    return (cand.name, repr(sorted(cfg.model_kw.items())), dls.input_shape, dls.n_classes)


def test_scores(model: torch.nn.Module, dl: Any) -> dict[str, Any]:
    """Test loss and accuracy, and which test images the run got right, packed (`analysis.testset`): the verdicts
    fold the test set's sampling error into Δ from it. One pass over the test set."""
    test = evaluate(model, dl, per_item=True)
    test[testset.ATTR] = testset.pack(test.pop("correct").numpy())
    return test


def _as_list(cbs: Any) -> list[Callback]:
    if cbs is None:
        return []
    return [cbs] if isinstance(cbs, Callback) else list(cbs)


def history_rows(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per-epoch rows {epoch, train_loss, train_accuracy, valid_loss, valid_accuracy} (JSON-safe floats) out of
    MetricsCB-style rows (one per pass)."""
    out: dict[int, dict[str, float]] = {}
    for r in rows:
        kind = "train" if r["train"] == "train" else "valid"
        row = out.setdefault(r["epoch"], {"epoch": r["epoch"]})
        row[f"{kind}_loss"], row[f"{kind}_accuracy"] = _finite(r["loss"]), _finite(r["accuracy"])
    return [out[k] for k in sorted(out)]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
