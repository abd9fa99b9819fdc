"""Popping work from the storage's queue, running it, and waiting for (or taking over) what other workers hold.

Every unit of work is a queued trial (`coordination.workqueue`): a candidate's tune slots are queued once when its
study is opened, a confirm round's seeds once its tuning has finished everywhere (and, with sequential seeds, once
the round before left a comparison undecided). Workers pop until nothing is left, then wait for what others still
run (taking over trials of workers that died), so rerunning resumes, adding trials queues only the missing ones,
and several workers (processes, GPUs, machines) can share one study.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slowai.study.analysis.answer import design_of
from slowai.study.analysis.verdicts import seeds_needed
from slowai.study.coordination import failures, workqueue
from slowai.study.coordination.studies import OptunaStudies
from slowai.study.data import StudyData
from slowai.study.execution.jobs import JobRunner
from slowai.study.execution.trial import TrialRunner
from slowai.study.planning.plan import Plan
from slowai.study.seeds import confirm_seeds
from slowai.study.spec import StudyError, StudySpec
from slowai.utils import fmt_seconds

POLL_S = 2.0  # how often an idle worker re-reads the storage while others finish their trials
STUCK_POLLS = 5  # idle polls with nothing running anywhere before missing work is queued again (or is stuck)


@dataclass
class Job:
    """One unit of work: a tune trial slot or a confirm seed of a candidate."""

    stage: str
    candidate: str
    seed: int | None = None
    estimate_s: float = 0.0
    round: list[int] | None = None  # a confirm job's whole round of seeds (queued together)

    def __str__(self) -> str:
        return f"{self.candidate} {self.stage}" + (f" seed {self.seed}" if self.seed is not None else "")


class Scheduler:
    """Runs a plan's jobs on one worker, then finishes whatever the whole study still needs."""

    def __init__(
        self,
        spec: StudySpec,
        plan: Plan,
        studies: OptunaStudies,
        data: StudyData,
        trials: TrialRunner,
        say: Callable[[str], None],
        poll_s: float = POLL_S,
    ) -> None:
        self.spec, self.plan, self.studies = spec, plan, studies
        self.budget, self.say, self.poll_s = plan.budget, say, poll_s
        self.work = JobRunner(spec, plan, studies, data, trials)
        self._waiting_on: set[str] = set()

    # ------------------------------------------------------------------------------------ one job
    def do(self, job: Job, bar: Any) -> str | None:
        """Run one job; a failed or dropped trial is a line of output. (An outage is waited out by the storage itself,
        `coordination.patience`; one that outlasts the patience stops the worker.)"""
        cand = self.spec.candidate(job.candidate)
        try:
            if job.stage == "tune":
                return self.work.tune_one(cand, bar)
            return self.work.confirm_one(cand, job.round or [job.seed], bar)
        except (failures.TrialFailed, failures.Dropped) as e:
            return str(e)

    # ------------------------------------------------------------------------------------ all jobs
    def jobs(self) -> list[Job]:
        """Remaining work in order: all tune slots, then all confirm seeds (re-checked against storage when run)."""
        b, est, done = self.budget, self.plan.estimate, self.plan.done
        jobs = []
        for c in self.spec.candidates:
            n = b.trials - done[c.name][0]
            jobs += [Job("tune", c.name, estimate_s=est.per_trial("tune", c.name, n)) for _ in range(n)]
        first = confirm_seeds(self.spec, b)
        for c in self.spec.candidates:
            per = est.per_trial("confirm", c.name, b.seeds - done[c.name][1])
            jobs += [Job("confirm", c.name, seed=s, estimate_s=per, round=first) for s in first]
        return jobs

    def pending(self) -> list[Job]:
        """Work not finished by any worker, read from the storage: one tune job per candidate still tuning, else the
        confirm seeds it still needs (the first look's, then one round at a time while its comparison is undecided)
        without a completed run."""
        tuning = [c.name for c in self.spec.candidates if not self.work.tuned(c.name)]
        jobs = [Job("tune", name) for name in tuning]
        states = {c.name: self.studies.confirm_state(c.name) for c in self.spec.candidates if c.name not in tuning}
        accs = {name: state[0] for name, state in states.items() if state is not None}  # None: nothing to confirm
        need = self._seeds_needed(accs) if not tuning else {}
        for name, done in accs.items():
            wanted = confirm_seeds(self.spec, self.budget, need.get(name, self.budget.seeds))
            failed = states[name][1]
            jobs += [Job("confirm", name, seed=s, round=wanted) for s in wanted if s not in done and s not in failed]
        return jobs

    def _seeds_needed(self, accs: dict[str, dict[int, float]]) -> dict[str, int]:
        """Seeds per candidate by the sequential rule (`analysis.verdicts`); a fixed study needs `seeds`."""
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
        """One line per finished trial with an ETA scaled by how fast the estimate has proven so far (a job that ran
        several trials fused counts each of them; the jobs whose trials it took then find nothing to pop)."""
        spent = est_done = 0.0
        total = sum(j.estimate_s for j in jobs)
        for i, job in enumerate(jobs, 1):
            t0 = time.perf_counter()
            msg = self.do(job, None)
            spent += time.perf_counter() - t0
            est_done = min(est_done + job.estimate_s * (msg.count("\n") + 1 if msg else 0), total)
            left = (total - est_done) * (spent / est_done if est_done else 1.0)
            if msg:
                self.say(f"[{i}/{len(jobs)}] {msg}" + (f"; ETA {fmt_seconds(left)}" if est_done else ""))

    def finish_remaining(self) -> None:
        """Until the whole study is finished: run what became poppable (confirms after tuning, retries of lost
        trials), else sleep `poll_s` while other workers run theirs."""
        idle = 0
        while todo := self.pending():
            ran = False
            for job in todo:
                if msg := self.do(job, None):
                    ran = True
                    self.say(msg)
            if ran:
                idle = 0
                continue
            idle = 0 if self._note_waiting() else idle + 1
            if idle > STUCK_POLLS:  # nothing runs anywhere, yet work is missing: queue it again, or it never ends
                if not self._refill(todo):
                    left = ", ".join(map(str, todo))
                    raise StudyError(
                        f"study {self.spec.name!r} is stuck: {left} cannot be claimed and no worker runs them"
                    )
                idle = 0
            time.sleep(self.poll_s)

    def _refill(self, todo: list[Job]) -> bool:
        """Queue the work that nothing stands for (its filler or a retry's closer died mid-way); True if any."""
        added = False
        for name in {j.candidate for j in todo if j.stage == "tune"}:
            study = self.studies.study(name, "tune")
            if missing := workqueue.refill_slots(study, self.budget.trials):
                self.say(f"queued {name}'s tune slots {missing} again: nothing stood for them")
                added = True
        for job in {j.candidate: j for j in todo if j.stage == "confirm"}.values():
            best, study = self.studies.best_params(job.candidate), self.studies.study(job.candidate, "confirm")
            if best and (missing := workqueue.refill_seeds(study, best, job.round or [])):
                self.say(f"queued {job.candidate}'s confirm seeds {missing} again: nothing stood for them")
                added = True
        return added

    def _note_waiting(self) -> bool:
        """Say (once per change) which workers this one waits for: a stuck wait names its culprit. True if any."""
        held = self.studies.held_by()
        if held and held != self._waiting_on:
            self.say(f"waiting for trials running on {', '.join(sorted(held))}")
        self._waiting_on = held
        return bool(held)


def say_to(log: Callable[[str], None], progress: bool) -> Callable[[str], None]:
    """`log`, flushed, when progress output is on; silent otherwise."""

    def say(msg: str) -> None:
        if progress:
            log(msg)
            sys.stdout.flush()

    return say
