"""Running a study, one room after another: plan (nothing written), schedule and run the work, read it back,
analyse, report.

The rooms: `planning` (budget, probe, estimate, the stored plan), `coordination` (the storage, the work queue,
leases), `execution` (the scheduler loop and one training run), `analysis` (the verdicts) and `report` (the answer).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from slowai.callbacks import live_bars
from slowai.study import report
from slowai.study.analysis.answer import analyze, design_of
from slowai.study.analysis.results import StudyResult
from slowai.study.coordination import readback
from slowai.study.coordination import storage as st
from slowai.study.coordination.lease import Liveness
from slowai.study.coordination.patience import Patience
from slowai.study.coordination.studies import OptunaStudies
from slowai.study.data import StudyData
from slowai.study.execution import workers
from slowai.study.execution.scheduler import Scheduler, say_to
from slowai.study.execution.tracking import Tracker, resolve_mode
from slowai.study.execution.trial import TrialRunner
from slowai.study.planning import fingerprint, speedups
from slowai.study.planning.plan import Plan
from slowai.study.planning.planner import Planner
from slowai.study.spec import Budget, StudyError, StudySpec
from slowai.utils import fmt_seconds, resolve_device


def git_commit() -> str | None:
    """HEAD of the current git checkout, if any (recorded on every trial for provenance)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Runner:
    """Executes a StudySpec: `prepare()` validates and plans (writes nothing); `run()` does the work; `finish()`
    reads it back, analyses it and writes the report."""

    spec: StudySpec
    budget: Budget | None = None
    quick: bool = False
    time_budget_s: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    liveness: Liveness = field(default_factory=Liveness)
    worker_id: int | None = None  # set in a process started by `--workers`: no throughput probe, plan or report
    poll_s: float | None = None

    def __post_init__(self) -> None:
        self.device = resolve_device(self.spec.device)
        self.out = self.spec.out_dir
        self.storage_url = st.normalize_url(self.spec.storage or str(st.default_storage_path(self.out)))
        self.shown_url = st.display_url(self.storage_url)
        self.liveness = self.liveness.for_storage(self.storage_url)
        self.patience = Patience(self.liveness.storage_patience, self.log, repr(self.shown_url))
        self.data = StudyData(self.spec, self.device)
        self.planner = Planner(
            self.spec, self.data, self.device, self.shown_url, self.budget, self.quick, self.time_budget_s,
            self.overrides, probe_always=self.worker_id is None, log=self.log,
        )  # fmt: skip
        self.plan: Plan | None = None
        self.storage: Any = None
        self.studies: OptunaStudies | None = None

    # ------------------------------------------------------------------------------------ plan and work
    def prepare(self) -> Plan:
        """Validate and plan; an existing storage is read, never created (--plan-only leaves no file behind)."""
        st.check_storage_url(self.storage_url)
        if st.storage_exists(self.storage_url):
            self.storage = st.open_storage(self.storage_url, self.patience)
        self.plan = self.planner.plan(self.storage)
        return self.plan

    def open(self) -> None:
        """The first writes of a run: output dir, storage (if new), the study's plan, its Optuna studies."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial lines say it better
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage = st.open_storage(self.storage_url, self.patience)
        self.plan = self.planner.adopt(self.storage, self.plan)
        self.liveness = self.liveness.with_default_timeout(max(self.plan.per_run.values(), default=0.0))
        attrs = {
            "dataset": self.spec.dataset_name,
            "study": self.spec.name,
            "reference": self.spec.reference,
            "storage": self.shown_url,
            "accel": self.plan.accel,
            "fuse": self.plan.fuse,
        }
        self.studies = OptunaStudies(
            self.spec, self.storage, self.plan.budget, attrs, self.plan.fingerprints, self.liveness, self.log
        )
        speedups.prepare_compile(self.plan.accel, self.log)

    def store_plan(self) -> None:
        """Store the plan and create every Optuna study, so workers started elsewhere resume exactly this plan."""
        self.open()
        self.studies.init_all()

    def scheduler(self) -> Scheduler:
        trials = TrialRunner(self.spec, self.tracker(), self.plan.accel, git_commit())
        say = say_to(self.log, self.spec.progress)
        kw = {"poll_s": self.poll_s} if self.poll_s is not None else {}
        return Scheduler(self.spec, self.plan, self.studies, self.data, trials, say, **kw)

    def tracker(self) -> Tracker:
        return Tracker(self.spec.wandb, self.spec.wandb_project, self.spec.name, self.out)

    def run(self) -> None:
        """Do all remaining work (prepare() first), then wait for and take over what other workers still hold."""
        if self.plan is None:
            self.prepare()
        self.open()
        bars = self.spec.progress and live_bars() and self.worker_id is None
        self.scheduler().run(bars)

    def run_workers(self, command: Sequence[str], n: int) -> None:
        """Store the plan, start `n` worker processes on it, wait (forwarding Ctrl-C), check the study finished."""
        self.store_plan()
        assign_gpus = self.device.type == "cuda" and self.spec.device in (None, "cuda")
        codes = workers.wait_workers(workers.start_workers(command, n, assign_gpus))
        if left := self.scheduler().pending():
            bad = ", ".join(f"worker {i} exited with status {c}" for i, c in enumerate(codes) if c) or "workers exited"
            raise StudyError(f"{len(left)} jobs unfinished ({bad}); rerun the same command to resume")

    # ------------------------------------------------------------------------------------ the answer
    def confirm_runs(self) -> dict[str, int]:
        """Completed confirm runs per candidate under its current best hyperparameters (by any worker): counts a
        run's extra rounds."""
        out = {}
        for c in self.spec.candidates:
            studies = readback.candidate_studies(self.storage, self.spec.name, c.name) if self.storage else (None,) * 2
            out[c.name] = len(readback.runs_under_best(*studies)[1])
        return out

    def result(self, budget: Budget | None = None) -> StudyResult:
        """Everything finished so far, read back from the storage, with its verdicts (`analysis.answer`)."""
        published = {c.name: c.published for c in self.spec.candidates if c.published}
        res = readback.collect(
            self.storage or optuna.storages.InMemoryStorage(),
            self.spec.name,
            [c.name for c in self.spec.candidates],
            self.spec.reference,
            self.spec.dataset_name,
            self.shown_url,
            published,
        )
        budget = budget or (self.plan.budget if self.plan else Budget())
        return analyze(res, design_of(self.spec, budget), self.spec.candidates)

    def finish(self, before: dict[str, int], took_s: float, workers_how: str | None = None, n: int = 1) -> StudyResult:
        """The report of a finished run, with how long it took against the plan's estimate of the work it did."""
        ran = {k: k_runs - before.get(k, 0) for k, k_runs in self.confirm_runs().items()}
        took = took_line(took_s, self.plan.work_estimate(ran), n)
        self.log(took)
        text = self.plan.describe(self.spec) + (f"\n  workers: {workers_how}" if workers_how else "")
        origin = f"\n  plan {self.plan.record.origin()}" if self.plan.record else ""
        return self.write_results(f"{text}{origin}\n  {took}")

    def write_results(self, plan_text: str, budget: Budget | None = None) -> StudyResult:
        """report.md, results.csv/json and plots; prints the comparison table; one W&B summary run of the verdicts."""
        res, tracker = self.result(budget), self.tracker()
        report.log_wandb(tracker, res)
        sync = tracker.sync_command()
        project = self.spec.wandb_project if resolve_mode(self.spec.wandb) != "disabled" else None
        path = report.write_report(res, self.out, self.spec.candidates, plan_text, sync, project)
        self.log("\n" + report.text_table(res))
        self.log(f"\nreport: {path}\nstorage: {self.shown_url}  (optuna studies --storage {self.shown_url})")
        if sync:
            self.log(f"W&B runs were written offline; upload them with:\n  {sync}")
        return res

    def report_only(self) -> StudyResult:
        """--report-only: rebuild the report from whatever the storage holds; no data, no training."""
        if self.spec.storage is None and not Path(self.storage_url).exists():
            raise StudyError(f"nothing to report: no storage at {self.storage_url} (run the study first)")
        self.storage = st.open_storage(self.storage_url, self.patience)
        if not any(c.finished_tune for c in self.result().candidates):
            raise StudyError(f"nothing to report: study {self.spec.name!r} has no finished trials in {self.shown_url}")
        budget = fingerprint.stored_budget(fingerprint.stored_attrs(self.storage, self.spec))
        text = f"rebuilt from {self.shown_url} with --report-only; budget: {budget}"
        return self.write_results(text, Budget(**budget) if budget else None)


def run_study(
    spec: StudySpec,
    budget: Budget | None = None,
    quick: bool = False,
    time_budget_s: float | None = None,
    plan_only: bool = False,
    log: Callable[[str], None] = print,
    *,
    report_only: bool = False,
    workers: int = 1,
    worker_command: Sequence[str] | None = None,
    worker_id: int | None = None,
    liveness: Liveness | None = None,
    **overrides: Any,
) -> StudyResult:
    """Plan (printed), tune, confirm, then write report.md/results/plots and print the comparison table.

    `budget` fixes the budget; otherwise a resumed study keeps its stored one, `quick` uses the smoke-test budget
    and a new study takes the biggest preset that fits `time_budget_s`. `overrides` (trials, seeds, tune_epochs,
    confirm_epochs, tune_subset, confirm_subset, bs) replace single budget fields. `workers > 1` runs that many
    processes of `worker_command` (each gets `--worker-id i`) on the same storage and reports once they are done;
    a process with `worker_id` only works (no plan, no report). `report_only` rebuilds the report from the storage.
    """
    kw = {k: v for k, v in overrides.items() if v is not None}
    runner = Runner(spec, budget, quick, time_budget_s, kw, log, liveness or Liveness(), worker_id)
    if report_only:
        return runner.report_only()
    plan = runner.prepare()
    if worker_id is None:
        log(plan.describe(spec))
    if plan_only:
        return runner.result()
    before, t0 = runner.confirm_runs(), time.perf_counter()
    if workers > 1:
        if not worker_command:
            raise StudyError("several workers need the command that starts one (worker_command)")
        runner.run_workers(worker_command, workers)
    else:
        runner.run()
    if worker_id is not None:
        return runner.result()
    how = f"{workers} local processes" if workers > 1 else None
    return runner.finish(before, time.perf_counter() - t0, how, workers)


def took_line(took_s: float, estimated_s: float, workers: int = 1) -> str:
    """'took 56 min (estimated 48 min for the work run, +17% off)': how far off the plan was, to trust it or not."""
    share = estimated_s / max(workers, 1)
    off = f"{100 * (took_s / share - 1):+.0f}% off" if share > 0 else "no estimate"
    run = f"the work run shared by {workers} workers" if workers > 1 else "the work run"
    return f"took {fmt_seconds(took_s)} (estimated {fmt_seconds(share)} for {run}, {off})"
