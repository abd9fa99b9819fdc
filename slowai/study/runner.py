"""Running a study: validate and plan (nothing written), then tune and confirm every candidate, then report.

The parts live in their own modules: `plan` (budget and estimate), `resume` (what a resumed study must keep),
`knobs` (search-space routing), `ledger` (the Optuna studies), `scheduler` (claiming and waiting), `trial` (one
training run), `launch` (local worker processes) and `report` (the answer).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from slowai.accel import accel_cbs
from slowai.callbacks import _use_bars
from slowai.core import Callback
from slowai.study import launch, report, resume, speed
from slowai.study import plan as planning
from slowai.study import storage as st
from slowai.study.analysis import analyze, design_of
from slowai.study.data import StudyData
from slowai.study.knobs import check_config, dry_draws, route
from slowai.study.ledger import Ledger, done_counts
from slowai.study.report import StudyResult
from slowai.study.scheduler import Scheduler, say_to
from slowai.study.spec import Budget, StudyError, StudySpec
from slowai.study.tracking import Tracker, offline_runs, resolve_mode
from slowai.study.trial import TrialRunner
from slowai.utils import resolve_device

DEFAULT_TARGET_S = 50 * 60  # leaves headroom under the hour for data loading, probes and the report


def git_commit() -> str | None:
    """HEAD of the current git checkout, if any (recorded on every trial for provenance)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Runner:
    """Executes a StudySpec: `prepare()` validates, loads data and plans (writes nothing); `run()` does the work."""

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
        self.data = StudyData(self.spec, self.device)
        self.plan: planning.Plan | None = None
        self.storage: Any = None
        self.ledger: Ledger | None = None

    # ------------------------------------------------------------------------------------ plan (writes nothing)
    def prepare(self) -> planning.Plan:
        """Validate storage, data, spaces and the resume state, probe throughput, choose the budget."""
        st.check_storage_url(self.storage_url)
        if self.spec.storage is not None or Path(self.storage_url).exists():
            self.storage = st.open_storage(self.storage_url, self.liveness)
        stored = resume.stored_attrs(self.storage, self.spec)
        budget_attrs = resume.stored_budget(stored)
        throughput = self._probe() if self._needs_probe(budget_attrs) else {}
        budget, fits = self._choose(budget_attrs, throughput)
        draws = {c.name: self._draws(c) for c in self.spec.candidates}
        data_fp = self.data.fingerprint()
        self.fingerprints = {
            c.name: resume.fingerprint(self.spec, c, budget, data_fp, draws[c.name]) for c in self.spec.candidates
        }
        resume.check(self.spec, stored, self.fingerprints)
        self._check_spaces(budget, draws)
        sizes = planning.sizes_for(budget, self.data.sizes)
        accel = speed.decide(self.spec, budget, sizes, throughput, self.device, stored, self.log)
        done = done_counts(self.spec, self.storage, budget)
        todo = {k: (max(budget.trials - t, 0), max(budget.seeds - c, 0)) for k, (t, c) in done.items()}
        est = planning.estimate(budget, sizes, throughput, self.spec.pruner, todo, speed.speedups(self.spec, accel))
        self.plan = planning.Plan(
            budget, sizes, throughput, est, done, fits, self.time_budget_s, self.device, self.shown_url, accel
        )
        return self.plan

    def _needs_probe(self, stored_budget: dict | None) -> bool:
        """A `--workers` child skips the probe (the parent printed the plan) unless it must choose the budget."""
        return self.worker_id is None or (self.budget is None and stored_budget is None and not self.quick)

    def _probe(self) -> dict[str, planning.Throughput]:
        bs = self.budget.bs if self.budget else (planning.QUICK.bs if self.quick else Budget().bs)
        probe_dls = self.data.load(2 * bs, bs)
        return {c.name: planning.probe(c, probe_dls) for c in self.spec.candidates}

    def _choose(self, stored: dict | None, throughput: dict) -> tuple[Budget, bool]:
        """Explicit budget > the resumed study's stored one > quick > the biggest preset that fits; then overrides."""
        if self.budget is not None:
            return self.budget.with_(**self.overrides), True
        if stored is not None:
            return Budget(**stored).with_(**self.overrides), True
        if self.quick:
            return planning.QUICK.with_(**self.overrides), True
        presets = (planning.GPU_PRESETS if self.device.type == "cuda" else ()) + planning.CPU_PRESETS
        presets = tuple(p.with_(**self.overrides) for p in presets)
        target = self.time_budget_s if self.time_budget_s is not None else DEFAULT_TARGET_S

        def seconds(b: Budget) -> float:
            return planning.estimate(b, planning.sizes_for(b, self.data.sizes), throughput, self.spec.pruner).total

        cap = self.overrides.get("max_seeds", planning.MAX_SEEDS)
        return planning.choose_budget(presets, seconds, target, cap)

    def _draws(self, cand: Any) -> list[optuna.Trial]:
        try:
            return dry_draws(self.spec.space_of(cand), self.spec.seed)
        except StudyError:
            raise
        except Exception as e:  # a bug in the user's space: say which, before any trial is spent on it
            raise StudyError(
                f"the search space of {cand.name!r} failed on a dry draw: {type(e).__name__}: {e}"
            ) from None

    def _check_spaces(self, budget: Budget, draws: dict[str, list[optuna.Trial]]) -> None:
        """Route every dry draw and build its model, optimizer and schedule: bad spaces fail before any trial."""
        dls = self.data.for_stage(budget, "tune")
        for cand in self.spec.candidates:
            for t in draws[cand.name]:
                cfg = route(t.user_attrs["hp"], cand.recipe, f"the search space of {cand.name!r}")
                check_config(cfg, cand, dls.input_shape[0], dls.n_classes, self.data.options())

    # ------------------------------------------------------------------------------------ work
    def open(self) -> None:
        """The first writes of a run: output dir, storage (if new), W&B tracker, the Optuna studies' ledger."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial lines say it better
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage = st.open_storage(self.storage_url, self.liveness)
        attrs = {
            "dataset": self.spec.dataset_name,
            "study": self.spec.name,
            "reference": self.spec.reference,
            "storage": self.shown_url,
            "accel": self.plan.accel,
        }
        self.ledger = Ledger(
            self.spec, self.storage, self.plan.budget, attrs, self.fingerprints, self.liveness.max_retry, self.log
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
        self.storage = st.open_storage(self.storage_url, self.liveness)
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
    if workers > 1:
        if not worker_command:
            raise StudyError("several workers need the command that starts one (worker_command)")
        runner.run_workers(worker_command, workers)
    else:
        runner.run()
    if worker_id is not None:
        return runner.collect()
    text = plan.describe(spec) + (f"\n  workers: {workers} local processes" if workers > 1 else "")
    return runner.write_results(text)
