"""Running a study: validate and plan (nothing written), then tune and confirm every candidate, then report.

The parts live in their own modules: `plan` (budget and estimate), `plan_record` (one plan per study, first writer
wins), `plan_cache` (this machine's last choice), `planner` (the planning steps), `resume` (what a resumed study must
keep), `knobs` (search-space routing), `ledger` (the Optuna studies), `scheduler` (claiming and waiting), `trial` (one
training run), `launch` (local worker processes) and `report` (the answer).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from slowai.accel import accel_cbs
from slowai.callbacks import _use_bars
from slowai.core import Callback
from slowai.study import launch, plan_record, report, resume, speed
from slowai.study import plan as planning
from slowai.study import storage as st
from slowai.study.analysis import analyze, design_of
from slowai.study.data import StudyData
from slowai.study.ledger import Ledger
from slowai.study.patience import Patience
from slowai.study.planner import Planning
from slowai.study.report import StudyResult
from slowai.study.scheduler import Scheduler, say_to
from slowai.study.spec import Budget, StudyError, StudySpec
from slowai.study.tracking import Tracker, offline_runs, resolve_mode
from slowai.study.trial import TrialRunner
from slowai.utils import resolve_device


def git_commit() -> str | None:
    """HEAD of the current git checkout, if any (recorded on every trial for provenance)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Runner(Planning):
    """Executes a StudySpec: `prepare()` validates, loads data and plans (writes nothing, see `Planning`); `run()`
    does the work."""

    spec: StudySpec
    budget: Budget | None = None
    quick: bool = False
    time_budget_s: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    log: Callable[[str], None] = print
    liveness: st.Liveness = field(default_factory=st.Liveness)
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
        self.plan: planning.Plan | None = None
        self.storage: Any = None
        self.ledger: Ledger | None = None
        self.stored: dict[str, dict[str, Any]] = {}  # the candidates' tune-study attrs, when resuming
        self.record: plan_record.PlanRecord | None = None  # the study's stored plan
        self.throughput: dict[str, planning.Throughput] = {}
        self.draws: dict[str, list[optuna.Trial]] = {}
        self.source = "chosen"  # where the budget came from: explicit, stored, or chosen here (presets, quick)

    # ------------------------------------------------------------------------------------ work
    def open(self) -> None:
        """The first writes of a run: output dir, storage (if new), W&B tracker, the Optuna studies' ledger."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial lines say it better
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage = st.open_storage(self.storage_url, self.patience)
        self._claim_plan()
        self.liveness = self.liveness.with_default_timeout(max(self.plan.per_run.values(), default=0.0))
        attrs = {
            "dataset": self.spec.dataset_name,
            "study": self.spec.name,
            "reference": self.spec.reference,
            "storage": self.shown_url,
            "accel": self.plan.accel,
        }
        self.ledger = Ledger(
            self.spec, self.storage, self.plan.budget, attrs, self.fingerprints, self.liveness, self.log
        )
        speed.prepare_compile(self.plan.accel, self.log)

    def accel(self, cand: Any) -> list[Callback]:
        """The speed-up callbacks the plan chose for this candidate."""
        names = self.plan.accel.get(cand.name, [])
        return accel_cbs(amp="amp" in names, channels_last="channels_last" in names, compile="compile" in names)

    def scheduler(self) -> Scheduler:
        tracker = Tracker(self.spec.wandb, self.spec.wandb_project, self.spec.name, self.out)
        trials = TrialRunner(self.spec, tracker, self.accel, git_commit())
        say = say_to(self.log, self.spec.progress)
        kw = {"poll_s": self.poll_s} if self.poll_s is not None else {}
        return Scheduler(self.spec, self.plan, self.ledger, self.data, trials, say, **kw)

    def run(self) -> None:
        """Do all remaining work (prepare() first), then wait for and take over what other workers still hold."""
        if self.plan is None:
            self.prepare()
        self.open()
        bars = self.spec.progress and _use_bars() and self.worker_id is None
        self.scheduler().run(bars)

    def run_workers(self, command: Sequence[str], n: int) -> None:
        """Store the plan, start `n` worker processes on it, wait (forwarding Ctrl-C), check the study finished."""
        self.open()
        self.ledger.init_all()
        assign_gpus = self.device.type == "cuda" and self.spec.device in (None, "cuda")
        codes = launch.wait_workers(launch.start_workers(command, n, assign_gpus))
        if left := self.scheduler().pending():
            bad = ", ".join(f"worker {i} exited with status {c}" for i, c in enumerate(codes) if c) or "workers exited"
            raise StudyError(f"{len(left)} jobs unfinished ({bad}); rerun the same command to resume")

    # ------------------------------------------------------------------------------------ results
    def confirm_runs(self) -> dict[str, int]:
        """Completed confirm runs per candidate in the storage (by any worker), to count a run's extra rounds."""
        names = st.existing_names(self.storage) if self.storage is not None else set()
        out = {}
        for c in self.spec.candidates:
            name = st.optuna_name(self.spec.name, c.name, "confirm")
            study = optuna.load_study(study_name=name, storage=self.storage) if name in names else None
            out[c.name] = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) if study else 0
        return out

    def collect(self, budget: Budget | None = None) -> StudyResult:
        """Everything finished so far, from the storage, with its verdicts (see `slowai.study.analysis`)."""
        names = [c.name for c in self.spec.candidates]
        published = {c.name: c.published for c in self.spec.candidates if c.published}
        storage = self.storage or optuna.storages.InMemoryStorage()
        res = report.collect(
            storage, self.spec.name, names, self.spec.reference, self.spec.dataset_name, self.shown_url, published
        )
        budget = budget or (self.plan.budget if self.plan else Budget())
        return analyze(res, design_of(self.spec, budget), self.spec.candidates)

    def write_results(self, plan_text: str, budget: Budget | None = None) -> StudyResult:
        """report.md, results.csv/json and plots from the storage; prints the comparison table; one W&B summary
        run holding the verdict table."""
        res = self.collect(budget)
        report.log_wandb(Tracker(self.spec.wandb, self.spec.wandb_project, self.spec.name, self.out), res)
        sync = f"wandb sync {self.out / 'wandb'}/offline-run-*" if offline_runs(self.out / "wandb") else None
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
        if not any(c.finished_tune for c in self.collect().candidates):
            raise StudyError(f"nothing to report: study {self.spec.name!r} has no finished trials in {self.shown_url}")
        budget = resume.stored_budget(resume.stored_attrs(self.storage, self.spec))
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
    liveness: st.Liveness | None = None,
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
    runner = Runner(spec, budget, quick, time_budget_s, kw, log, liveness or st.Liveness(), worker_id)
    if report_only:
        return runner.report_only()
    plan = runner.prepare()
    if worker_id is None:
        log(plan.describe(spec))
    if plan_only:
        return runner.collect()
    before, t0 = runner.confirm_runs(), time.perf_counter()
    if workers > 1:
        if not worker_command:
            raise StudyError("several workers need the command that starts one (worker_command)")
        runner.run_workers(worker_command, workers)
    else:
        runner.run()
    if worker_id is not None:
        return runner.collect()
    ran = {k: n - before.get(k, 0) for k, n in runner.confirm_runs().items()}
    took = took_line(time.perf_counter() - t0, runner.plan.work_estimate(ran), workers)
    log(took)
    text = runner.plan.describe(spec) + (f"\n  workers: {workers} local processes" if workers > 1 else "")
    origin = f"\n  plan {runner.record.origin()}" if runner.record else ""
    return runner.write_results(f"{text}{origin}\n  {took}")


def took_line(took_s: float, estimated_s: float, workers: int = 1) -> str:
    """'took 56 min (estimated 48 min for the work run, +17% off)': how far off the plan was, to trust it or not."""
    share = estimated_s / max(workers, 1)
    off = f"{100 * (took_s / share - 1):+.0f}% off" if share > 0 else "no estimate"
    run = f"the work run shared by {workers} workers" if workers > 1 else "the work run"
    return f"took {planning.fmt_seconds(took_s)} (estimated {planning.fmt_seconds(share)} for {run}, {off})"
