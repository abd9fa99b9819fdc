"""One unit of work on this worker: pop queued trials of a candidate (tune slots, or a confirm round's seeds) and
train them, fused where the plan fuses the candidate and the runs agree (`fused_trial`), else one by one."""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState

from slowai.study.coordination import workqueue
from slowai.study.coordination.readback import confirm_key
from slowai.study.coordination.studies import OptunaStudies
from slowai.study.coordination.trials import DRAWN, hold_all
from slowai.study.data import StudyData
from slowai.study.execution.fused_trial import fusable_groups, run_fused
from slowai.study.execution.trial import Outcome, TrialContext, TrialRunner
from slowai.study.planning.plan import Plan
from slowai.study.seeds import tune_seed
from slowai.study.space import route
from slowai.study.spec import Candidate, StudySpec

WAITING = TrialState.WAITING


class JobRunner:
    """Pops and trains one job's trials; the scheduler decides which job comes next."""

    def __init__(self, spec: StudySpec, plan: Plan, studies: OptunaStudies, data: StudyData, trials: TrialRunner):
        self.spec, self.plan, self.studies, self.data, self.trials = spec, plan, studies, data, trials
        self.budget = plan.budget

    def context(self, cand: Candidate, stage: str, trial: optuna.Trial, seed: int) -> TrialContext:
        """Draw the trial's hyperparameters, route them, and pick the stage's data (a confirm seed draws its split)."""
        hp = self.spec.space_of(cand)(trial)
        if stage == "tune" and not trial.user_attrs.get(DRAWN):
            trial.set_user_attr(DRAWN, True)  # drawn to the end: a retry keeps these params (`trials.retry`)
        cfg = route(hp, cand.recipe, f"the search space of {cand.name!r}")
        dls = self.data.for_stage(self.budget, stage, cfg, seed)
        epochs = self.budget.tune_epochs if stage == "tune" else self.budget.confirm_epochs
        return TrialContext(self.spec, cand, stage, seed, trial, hp, cfg, dls, epochs, self.spec.out_dir)

    def run_one(self, cand: Candidate, stage: str, study: optuna.Study, trial: optuna.Trial, seed: int, bar: Any):
        """Train one trial on the stage's data."""
        return self.trials.run(self.context(cand, stage, trial, seed), study, bar)

    def tune_one(self, cand: Candidate, bar: Any) -> str | None:
        """Pop and run queued tune slots: one, or while TPE still draws at random (its start-up draws need no results)
        up to the plan's fused K, trained fused where their draws agree on everything but lr, weight decay, label
        smoothing and lr-only schedule values (`fused_trial.fusable_groups`). Later draws stay one at a time: each
        learns from the ones before."""
        study = self.studies.study(cand.name, "tune")
        taken = sum(t.state != WAITING for t in study.get_trials(deepcopy=False))  # popped or finished, one read
        k = min(self.plan.fuse.get(cand.name, 1), max(1, self.studies.startup_trials - taken))
        popped = [study.ask() for _ in range(k) if workqueue.has_waiting(study)]
        if not popped:
            return None  # (an empty queue: `ask()` would create a trial that stands for no work)
        label = f"{cand.name} tune " + ", ".join(f"t{t.number}" for t in popped)
        with hold_all(self.studies.storage, self.studies.liveness, study, popped, label):
            runs = [t for t in popped if self._tunable(study, t)]
            ctxs = [self._tune_context(cand, study, t) for t in runs]
            outs = self._train(ctxs, study, bar)
        return (
            "\n".join(
                f"{cand.name} tune t{t.number}: valid acc {_fmt(out.last_valid)} ({out.state}) in {out.wall_s:.1f} s"
                + _fused_note(out)
                for t, out in zip(runs, outs)
            )
            or None
        )

    def _tunable(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """A popped tune trial stands for a slot no earlier trial holds; else it is closed as surplus."""
        slot = trial.user_attrs.get("slot")
        if slot is None or workqueue.holds_earlier(study, trial, "slot", slot):
            workqueue.mark_surplus(study, trial, "no tune slot was left to pop")
            return False
        return True

    def _tune_context(self, cand: Candidate, study: optuna.Study, trial: optuna.Trial) -> TrialContext:
        """The slot's draw, by a sampler seeded for that slot (reproducible whichever worker pops it)."""
        slot = trial.user_attrs["slot"]
        study.sampler = self.studies.sampler(cand.name, "tune", slot)
        return self.context(cand, "tune", trial, tune_seed(slot))

    def _train(self, ctxs: list[TrialContext], study: optuna.Study, bar: Any) -> list[Outcome]:
        """Train runs of one candidate and stage: those that fuse together as one model, any other alone."""
        outs: list[Any] = [None] * len(ctxs)
        for idx in fusable_groups(ctxs):
            members = [ctxs[i] for i in idx]
            done = run_fused(self.trials, members, study) if len(idx) > 1 else [self.trials.run(members[0], study, bar)]
            for i, out in zip(idx, done):
                outs[i] = out
        return outs

    def confirm_one(self, cand: Candidate, seeds: list[int], bar: Any) -> str | None:
        """Queue the round's `seeds` (once, by whichever worker claims them first) once tuning has finished everywhere,
        then pop and run queued seeds: one, or as many as the plan fuses for this candidate, trained as one model."""
        if not self.tuned(cand.name):
            return None  # another worker still tunes this candidate: its best params are not final yet
        best = self.studies.best_params(cand.name)
        if best is None:
            return None  # every tune trial was pruned or failed: reported as such, nothing to confirm
        key, study = confirm_key(best), self.studies.study(cand.name, "confirm")
        workqueue.queue_seeds(self.studies.storage, self.spec.name, study, cand.name, best, seeds)
        popped = [study.ask() for _ in range(self.plan.fuse.get(cand.name, 1)) if workqueue.has_waiting(study)]
        if not popped:
            return None
        numbers = ", ".join(f"seed {t.user_attrs.get('seed')} (t{t.number})" for t in popped)
        with hold_all(self.studies.storage, self.studies.liveness, study, popped, f"{cand.name} confirm {numbers}"):
            runs = [t for t in popped if self._confirmable(study, t, key)]
            outs = self._confirm(cand, study, runs, bar) if runs else []
        return (
            "\n".join(
                f"{cand.name} confirm seed {t.user_attrs['seed']}: test acc "
                f"{_fmt(out.test['accuracy'] if out.test else float('nan'))} ({out.state}) in {out.wall_s:.1f} s"
                + _fused_note(out)
                for t, out in zip(runs, outs)
            )
            or None
        )

    def _confirmable(self, study: optuna.Study, trial: optuna.Trial, key: str) -> bool:
        """A popped confirm trial stands for a seed under the current best params that no earlier trial holds; else
        it is closed as surplus."""
        seed = trial.user_attrs.get("seed")
        stale = trial.user_attrs.get("params_key") != key  # queued for an older best trial
        if seed is None or stale or workqueue.holds_earlier(study, trial, "seed", seed, key):
            workqueue.mark_surplus(study, trial, "no confirm seed with the current best params was left to pop")
            return False
        return True

    def _confirm(self, cand: Candidate, study: optuna.Study, runs: list[optuna.Trial], bar: Any) -> list[Outcome]:
        """Train the popped seeds: one alone, several fused (`fused_trial`)."""
        return self._train([self.context(cand, "confirm", t, t.user_attrs["seed"]) for t in runs], study, bar)

    def tuned(self, candidate: str) -> bool:
        return workqueue.tune_done(self.studies.study(candidate, "tune"), self.budget.trials)


def _fused_note(out: Outcome) -> str:
    """', 8 fused' after a run that trained as one of 8 members (its seconds are the fused run's / 8)."""
    return f", {out.fused} fused" if out.fused > 1 else ""


def _fmt(acc: float | None) -> str:
    return f"{acc:.4f}" if acc is not None and math.isfinite(acc) else "n/a"
