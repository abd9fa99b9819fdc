"""The Optuna studies of one slowai study: one per (candidate, stage), created with the study's attrs and seeded
samplers, plus what the scheduler and planner read back from them (best hyperparameters, confirm state, work done)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import optuna
from optuna.trial import TrialState

from slowai.study.coordination import trials, workqueue
from slowai.study.coordination.lease import Liveness, Watch
from slowai.study.coordination.readback import best_trial, candidate_studies, runs_under_best
from slowai.study.seeds import confirm_seeds, stable_seed
from slowai.study.spec import STAGES, Budget, StudySpec, optuna_name


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """'none' | 'median' (prunes below the median after 2 finished trials) | 'hyperband' (over epochs)."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)


class OptunaStudies:
    """Opens each (candidate, stage) study once per process, queueing a tune study's slots (once per study, by the
    first worker to claim them); every access first fails (and queues a retry of) trials whose worker is gone, so a
    waiting worker takes over a killed one's work."""

    def __init__(
        self,
        spec: StudySpec,
        storage: Any,
        budget: Budget,
        attrs: dict[str, Any],
        fingerprints: dict[str, dict[str, Any]],
        liveness: Liveness,
        log: Callable[[str], None],
    ) -> None:
        self.spec, self.storage, self.budget, self.attrs = spec, storage, budget, attrs
        self.fingerprints, self.liveness, self.log = fingerprints, liveness, log
        self.watch = Watch(liveness.grace)
        self.studies: dict[tuple[str, str], optuna.Study] = {}

    def study(self, candidate: str, stage: str) -> optuna.Study:
        key = (candidate, stage)
        if key not in self.studies:
            self.studies[key] = self._create(candidate, stage)
        study = self.studies[key]
        if failed := trials.fail_lost_trials(self.storage, study, self.watch, self.liveness.max_retry):
            self.log(f"  trials {failed} of {study.study_name} lost their worker: marked FAIL, queued for retry")
        return study

    def _create(self, candidate: str, stage: str) -> optuna.Study:
        study = optuna.create_study(
            study_name=optuna_name(self.spec.name, candidate, stage),
            storage=self.storage,
            direction="maximize",
            sampler=self.sampler(candidate, stage, 0),
            pruner=make_pruner(self.spec.pruner, self.budget.tune_epochs),
            load_if_exists=True,
        )
        attrs = {
            **self.attrs,
            "candidate": candidate,
            "stage": stage,
            "budget": asdict(self.budget),
            "fingerprint": self.fingerprints[candidate],
        }
        for k, v in attrs.items():
            if study.user_attrs.get(k) != v and self._may_write(study.user_attrs, k):
                study.set_user_attr(k, v)
        if stage == "tune":
            workqueue.queue_tune_slots(self.storage, self.spec.name, study, candidate, self.budget.trials)
        return study

    def _may_write(self, stored: dict[str, Any], key: str) -> bool:
        """The plan's attrs are written once: the budget again only as a resume grows trials or seeds, and the
        speed-ups never (a worker with conflicting explicit flags must not rewrite what the others train with)."""
        if key not in stored or key not in ("budget", "accel", "fuse", "fingerprint"):
            return True
        if key == "budget":
            return Budget(**stored["budget"]).fingerprint() == self.budget.fingerprint()
        return False

    @property
    def startup_trials(self) -> int:
        """TPE's random start-up draws (they need no finished trial, so they may be drawn together)."""
        return max(2, min(10, self.budget.trials // 2))

    def sampler(self, candidate: str, stage: str, number: int) -> optuna.samplers.BaseSampler:
        """TPE seeded by the trial number: reproducible for one worker, and distinct draws for concurrent workers."""
        n_startup = self.startup_trials
        return optuna.samplers.TPESampler(
            seed=stable_seed(self.spec.seed, candidate, stage, number), n_startup_trials=n_startup
        )

    def init_all(self) -> None:
        """Create every (candidate, stage) study with its attrs, so workers started later resume this plan."""
        for c in self.spec.candidates:
            for stage in STAGES:
                self.study(c.name, stage)

    def best_params(self, candidate: str) -> dict[str, Any] | None:
        best = best_trial(self.study(candidate, "tune").get_trials(deepcopy=False))
        return dict(best.params) if best is not None else None

    def confirm_state(self, candidate: str) -> tuple[dict[int, float], set[int]] | None:
        """({seed: test accuracy} of the finished confirm runs, seeds failed for good), both with the current best
        hyperparameters; None while no tune trial has completed."""
        conf = self.study(candidate, "confirm")
        best, runs = runs_under_best(self.study(candidate, "tune"), conf, states=None)
        if best is None:
            return None
        accs = {int(t.user_attrs["seed"]): float(t.value) for t in runs if t.state == TrialState.COMPLETE}
        return accs, {int(t.user_attrs["seed"]) for t in runs if trials.is_final(t)}

    def held_by(self) -> set[str]:
        """Workers holding a running trial in any study this process has opened (this one's own abandoned trials are
        failed as lost on the next access, so a lone worker never waits on itself)."""
        running = (TrialState.RUNNING,)
        return {t.user_attrs.get("worker", "?") for s in self.studies.values() for t in s.get_trials(states=running)}


def done_counts(spec: StudySpec, storage: Any, budget: Budget) -> dict[str, tuple[int, int]]:
    """(finished tune trials, claimed first-look confirm seeds) per candidate, read without creating any study."""
    done = {c.name: (0, 0) for c in spec.candidates}
    if storage is None:
        return done
    seeds = confirm_seeds(spec, budget)
    for c in spec.candidates:
        tune, confirm = candidate_studies(storage, spec.name, c.name)
        if tune is None:
            continue
        best, runs = runs_under_best(tune, confirm, states=None)
        claimed = {int(t.user_attrs["seed"]) for t in runs if workqueue.occupies(t)}
        finished = sum(t.state in trials.FINISHED for t in tune.get_trials(deepcopy=False))
        done[c.name] = (min(finished, budget.trials), sum(s in claimed for s in seeds))
    return done


def epochs_trained(spec: StudySpec, storage: Any) -> dict[str, list[int]]:
    """Epochs each finished tune trial trained (all of them, or until it was pruned) per candidate: what the estimate
    learns the pruner's savings from."""
    out: dict[str, list[int]] = {c.name: [] for c in spec.candidates}
    if storage is None:
        return out
    for c in spec.candidates:
        tune, _ = candidate_studies(storage, spec.name, c.name)
        if tune is not None:
            finished = (t for t in tune.get_trials(deepcopy=False) if t.state in trials.FINISHED)
            out[c.name] = [len(t.intermediate_values) for t in finished if t.intermediate_values]
    return out
