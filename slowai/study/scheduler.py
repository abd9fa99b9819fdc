"""Claiming work from the storage, running it, and waiting for (or taking over) what other workers hold.

Every unit of work is claimed from the storage right before it runs (tune: "fewer than N finished or running
trials"; confirm: "(hyperparameters, seed) not yet done"), so rerunning resumes, adding trials adds only the missing
ones, and several workers (processes, GPUs, machines) can share one study: each keeps claiming until nothing is
left, then waits for what others still run (taking over trials of workers that died).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna

from slowai.study import claims, failures
from slowai.study import plan as planning
from slowai.study.analysis import design_of
from slowai.study.data import StudyData
from slowai.study.knobs import route
from slowai.study.ledger import Ledger, confirm_seeds
from slowai.study.spec import Candidate, StudyError, StudySpec
from slowai.study.trial import Outcome, TrialContext, TrialRunner
from slowai.study.verdicts import seeds_needed

TUNE_SEED_BASE = 10_000
POLL_S = 2.0  # how often an idle worker re-reads the storage while others finish their trials
STUCK_POLLS = 5  # idle polls with no trial held anywhere before pending work counts as stuck (a bug, not a wait)
STORAGE_PATIENCE_S = 600.0  # how long a worker rides out an unreachable storage (a database restart) before giving up


@dataclass
class Job:
    """One unit of work: a tune trial slot or a confirm seed of a candidate."""

    stage: str
    candidate: str
    seed: int | None = None
    estimate_s: float = 0.0

    def __str__(self) -> str:
        return f"{self.candidate} {self.stage}" + (f" seed {self.seed}" if self.seed is not None else "")


class Scheduler:
    """Runs a plan's jobs on one worker, then finishes whatever the whole study still needs."""

    def __init__(
        self,
        spec: StudySpec,
        plan: planning.Plan,
        ledger: Ledger,
        data: StudyData,
        trials: TrialRunner,
        say: Callable[[str], None],
        poll_s: float = POLL_S,
    ) -> None:
        self.spec, self.plan, self.ledger, self.data, self.trials = spec, plan, ledger, data, trials
        self.budget, self.say, self.poll_s = plan.budget, say, poll_s
        self._waiting_on: set[str] = set()
        self._down_since: float | None = None

    # ------------------------------------------------------------------------------------ one job
    def run_one(self, cand: Candidate, stage: str, study: optuna.Study, trial: optuna.Trial, seed: int, bar: Any):
        """Draw the hyperparameters, route them, and train on the stage's data."""
        hp = self.spec.space_of(cand)(trial)
        cfg = route(hp, cand.recipe, f"the search space of {cand.name!r}")
        dls = self.data.for_stage(self.budget, stage, cfg)
        epochs = self.budget.tune_epochs if stage == "tune" else self.budget.confirm_epochs
        ctx = TrialContext(self.spec, cand, stage, seed, trial, hp, cfg, dls, epochs, self.spec.out_dir)
        return self.trials.run(ctx, study, bar)

    def tune_one(self, cand: Candidate, bar: Any) -> str | None:
        """Claim and run one tune trial if the candidate still needs one (counted from the storage, all workers)."""
        study = self.ledger.study(cand.name, "tune")
        wanted = self.budget.trials
        if not claims.tune_open(study, wanted):
            return None
        trial = study.ask()  # a queued retry of a lost trial first, else a new one
        with self._hold(study, trial, f"{cand.name} tune t{trial.number}"):
            slot = claims.tune_slot(study, trial, wanted)
            if slot is None:
                claims.mark_failed(study, trial, "surplus: another worker claimed the last trial")
                return None
            trial.set_user_attr("slot", slot)
            if claims.slot_duplicate(study, trial, slot):
                claims.mark_failed(study, trial, f"surplus: an earlier trial holds tune slot {slot}")
                return None
            study.sampler = self.ledger.sampler(cand.name, "tune", slot)
            seed = TUNE_SEED_BASE + slot
            out: Outcome = self.run_one(cand, "tune", study, trial, seed, bar)
        return f"{cand.name} tune t{trial.number}: valid acc {_fmt(out.last_valid)} ({out.state}) in {out.wall_s:.1f} s"

    def confirm_one(self, cand: Candidate, seed: int, bar: Any) -> str | None:
        """Claim and run a confirm run (best params, `seed`, or a queued one) once tuning has finished everywhere."""
        if not claims.tune_done(self.ledger.study(cand.name, "tune"), self.budget.trials):
            return None  # another worker still tunes this candidate: its best params are not final yet
        best = self.ledger.best_params(cand.name)
        if best is None:
            return None  # every tune trial was pruned or failed: reported as such, nothing to confirm
        key = claims.confirm_key(best)
        study = self.ledger.study(cand.name, "confirm")
        if seed in claims.confirm_claimed(study, key):
            return None
        if not claims.confirm_queued(study, key, seed):
            study.enqueue_trial(best, user_attrs={"seed": seed, "params_key": key})
        trial = study.ask()  # pops the oldest waiting trial: ours, a retry, or another worker's claim
        seed = trial.user_attrs.get("seed", seed)
        with self._hold(study, trial, f"{cand.name} confirm seed {seed} (t{trial.number})"):
            if trial.user_attrs.get("params_key") != key or claims.confirm_duplicate(study, trial, key, seed):
                claims.mark_failed(study, trial, "surplus: claimed by another worker")
                return None
            out = self.run_one(cand, "confirm", study, trial, seed, bar)
        acc = out.test["accuracy"] if out.test else float("nan")
        return f"{cand.name} confirm seed {seed}: test acc {_fmt(acc)} ({out.state}) in {out.wall_s:.1f} s"

    def _hold(self, study: optuna.Study, trial: optuna.Trial, label: str) -> Any:
        return claims.hold(self.ledger.storage, self.ledger.liveness, study, trial, label)

    def do(self, job: Job, bar: Any) -> str | None:
        """Run one job; a failed or dropped trial is a line of output, an unreachable storage a pause."""
        cand = self.spec.candidate(job.candidate)
        try:
            out = self.tune_one(cand, bar) if job.stage == "tune" else self.confirm_one(cand, job.seed, bar)
        except (failures.TrialFailed, failures.Dropped) as e:
            out = str(e)
        except Exception as e:
            self._storage_down(e)
            return None
        self._down_since = None
        return out

    def _storage_down(self, e: Exception) -> None:
        """Re-raise `e` unless the storage is unreachable; then wait, up to `STORAGE_PATIENCE_S` in all."""
        if not (isinstance(e, failures.StorageDown) or failures.storage_error(e)):
            raise e
        now = time.monotonic()
        self._down_since = self._down_since or now
        if now - self._down_since > STORAGE_PATIENCE_S:
            raise StudyError(f"storage unreachable for {planning.fmt_seconds(now - self._down_since)}: {e}") from e
        self.say(f"storage unreachable ({str(e).splitlines()[0][:120]}); retrying in {self.poll_s:g} s")
        time.sleep(self.poll_s)

    # ------------------------------------------------------------------------------------ all jobs
    def jobs(self) -> list[Job]:
        """Remaining work in order: all tune slots, then all confirm seeds (re-checked against storage when run)."""
        b, est, done = self.budget, self.plan.estimate, self.plan.done
        jobs = []
        for c in self.spec.candidates:
            n = b.trials - done[c.name][0]
            jobs += [Job("tune", c.name, estimate_s=est.per_trial("tune", c.name, n)) for _ in range(n)]
        for c in self.spec.candidates:
            per = est.per_trial("confirm", c.name, b.seeds - done[c.name][1])
            jobs += [Job("confirm", c.name, seed=s, estimate_s=per) for s in self.ledger.seeds()]
        return jobs

    def pending(self) -> list[Job]:
        """Work not finished by any worker, read from the storage: one tune job per candidate still tuning, else the
        confirm seeds it still needs (the first look's, then one round at a time while its comparison is undecided)
        without a completed run."""
        tuning = [c.name for c in self.spec.candidates if not self._tuned(c.name)]
        jobs = [Job("tune", name) for name in tuning]
        states = {c.name: self.ledger.confirm_state(c.name) for c in self.spec.candidates if c.name not in tuning}
        accs = {name: state[0] for name, state in states.items() if state is not None}  # None: nothing to confirm
        need = self._seeds_needed(accs) if not tuning else {}
        for name, done in accs.items():
            wanted = confirm_seeds(self.spec, self.budget, need.get(name, self.budget.seeds))
            failed = states[name][1]
            jobs += [Job("confirm", name, seed=s) for s in wanted if s not in done and s not in failed]
        return jobs

    def _tuned(self, candidate: str) -> bool:
        return claims.tune_done(self.ledger.study(candidate, "tune"), self.budget.trials)

    def _seeds_needed(self, accs: dict[str, dict[int, float]]) -> dict[str, int]:
        """Seeds per candidate by the sequential rule (`slowai.study.verdicts`); a fixed study needs `seeds`."""
        b = self.budget
        if b.last_seeds == b.seeds or self.spec.reference not in accs:  # no reference: nothing to decide
            return {}
        return seeds_needed(accs, self.spec.reference, design_of(self.spec, b))

    def run(self, bars: bool) -> None:
        """Do this worker's jobs (with a master bar, or one line per trial), then everything left in the study."""
        jobs = self.jobs()
        if bars:
            from fastprogress.fastprogress import master_bar

            mb = master_bar(jobs)
            for job in mb:
                if msg := self.do(job, mb):
                    mb.write(msg)
        else:
            self._run_logged(jobs)
        self.finish_remaining()

    def _run_logged(self, jobs: list[Job]) -> None:
        """One line per finished trial with an ETA scaled by how fast the estimate has proven so far."""
        spent = est_done = 0.0
        for i, job in enumerate(jobs, 1):
            t0 = time.perf_counter()
            msg = self.do(job, None)
            spent += time.perf_counter() - t0
            est_done += job.estimate_s
            left = sum(j.estimate_s for j in jobs[i:]) * (spent / est_done if est_done else 1.0)
            if msg:
                self.say(f"[{i}/{len(jobs)}] {msg}" + (f"; ETA {planning.fmt_seconds(left)}" if est_done else ""))

    def finish_remaining(self) -> None:
        """Until the whole study is finished: run what became claimable (confirms after tuning, retries of lost
        trials), else sleep `poll_s` while other workers run theirs."""
        idle = 0
        while todo := self._pending():
            ran = False
            for job in todo:
                if msg := self.do(job, None):
                    ran = True
                    self.say(msg)
            if ran:
                idle = 0
                continue
            try:
                idle = 0 if self._note_waiting() else idle + 1
            except Exception as e:
                self._storage_down(e)
                continue
            if idle > STUCK_POLLS:  # nobody holds a trial, yet the work stays undone: waiting would never end
                left = ", ".join(map(str, todo))
                raise StudyError(f"study {self.spec.name!r} is stuck: {left} cannot be claimed and no worker runs them")
            time.sleep(self.poll_s)

    def _pending(self) -> list[Job]:
        """`pending()`, riding out a storage outage: while unreachable, the work is unknown, not done."""
        while True:
            try:
                todo = self.pending()
            except Exception as e:
                self._storage_down(e)
                continue
            self._down_since = None
            return todo

    def _note_waiting(self) -> bool:
        """Say (once per change) which workers this one waits for: a stuck wait names its culprit. True if any."""
        held = self.ledger.held_by()
        if held and held != self._waiting_on:
            self.say(f"waiting for trials running on {', '.join(sorted(held))}")
        self._waiting_on = held
        return bool(held)


def _fmt(acc: float | None) -> str:
    return f"{acc:.4f}" if acc is not None and math.isfinite(acc) else "n/a"


def say_to(log: Callable[[str], None], progress: bool) -> Callable[[str], None]:
    """`log`, flushed, when progress output is on; silent otherwise."""

    def say(msg: str) -> None:
        if progress:
            log(msg)
            sys.stdout.flush()

    return say
