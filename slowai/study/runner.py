"""Running a study: tune every candidate with Optuna (pruned per epoch), confirm the winners over seeds on test.

Every unit of work is claimed from the storage right before it runs (tune: "fewer than N finished or running
trials"; confirm: "(hyperparameters, seed) not yet done"), so rerunning resumes, adding trials adds only the missing
ones, and several workers (processes, GPUs, machines) can share one study: each keeps claiming until nothing is
left, then waits for what others still run (taking over trials of workers that died) before writing the report.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from slowai.callbacks import MetricsCB, _use_bars
from slowai.data import DataLoaders, cifar10, fashion_mnist
from slowai.learner import Callback, DeviceCB, Learner
from slowai.study import plan as planning
from slowai.study import report
from slowai.study import storage as st
from slowai.study.report import StudyResult
from slowai.study.spec import Budget, Candidate, StudyError, StudySpec, json_safe, split_hyperparams
from slowai.study.tracking import TrackedRun, Tracker, WandbCB, offline_runs, resolve_mode
from slowai.summary import Summary, summarize
from slowai.train import evaluate, recipe
from slowai.utils import default_device, set_seed

TUNE_SEED_BASE, CONFIRM_SEED_BASE = 10_000, 0
DEFAULT_TARGET_S = 50 * 60  # leaves headroom under the hour for data loading, probes and the report
POLL_S = 2.0  # how often an idle worker re-reads the storage while others finish their trials
STUCK_POLLS = 5  # idle polls with no trial held anywhere before pending work counts as stuck (a bug, not a wait)
NAN_CHECK_EVERY_GPU = 8  # batches between loss checks on an accelerator (each check is a host sync)


class NonFiniteLoss(Exception):
    """Training diverged (NaN/inf loss): stop the trial now, there is nothing left to learn from it."""


class PruningCB(Callback):
    """Report valid accuracy to Optuna after every epoch and raise `optuna.TrialPruned` when the pruner says so.

    Never prunes after the last epoch: that trial's value is complete and should count as such.
    """

    order = MetricsCB.order + 3  # after WandbCB, so the pruned epoch is still logged

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def after_epoch(self) -> None:
        if self.learn.training:
            return
        epoch = self.learn.epoch
        self.trial.report(self.learn.cb(MetricsCB).last["accuracy"], epoch)
        if epoch < self.learn.n_epochs - 1 and self.trial.should_prune():
            self.trial.set_user_attr("stop_reason", f"pruned after epoch {epoch + 1}/{self.learn.n_epochs}")
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")


class FiniteLossCB(Callback):
    """Stop a diverged trial as soon as its loss is NaN/inf, with the epoch and batch in the reason.

    The batch loss is checked every batch on CPU (free) and every `every` batches on an accelerator (each check is a
    host sync), and the epoch mean always: a diverged trial stops within a few batches instead of running on.
    """

    order = MetricsCB.order + 1

    def __init__(self, every: int | None = None) -> None:
        self.every = every

    def after_loss(self) -> None:
        loss, i = self.learn.loss, self.learn.iter
        k = self.every or (1 if loss.device.type == "cpu" else NAN_CHECK_EVERY_GPU)
        if (i + 1) % k == 0 and not bool(torch.isfinite(loss.detach()).all()):
            self._stop(float(loss.detach().float().mean()), f", batch {i + 1}/{_n_batches(self.learn)}")

    def after_epoch(self) -> None:
        loss = self.learn.cb(MetricsCB).last["loss"]
        if not math.isfinite(loss):
            self._stop(loss, " (epoch mean)")

    def _stop(self, value: float, where: str) -> None:
        kind = "train" if self.learn.training else "valid"
        raise NonFiniteLoss(
            f"non-finite {kind} loss ({value}) at epoch {self.learn.epoch + 1}/{self.learn.n_epochs}{where}"
        )


def _n_batches(learn: Learner) -> int | str:
    dl = learn.dls.train if learn.training else learn.dls.valid  # learn.dl may be wrapped in a progress bar
    return len(dl) if hasattr(dl, "__len__") else "?"


class TrialBarCB(Callback):
    """A batch progress bar per epoch nested under the study's master bar."""

    order = MetricsCB.order + 4

    def __init__(self, parent: Any) -> None:
        self.parent = parent

    def before_epoch(self) -> None:
        from fastprogress.fastprogress import progress_bar

        self.learn.dl = progress_bar(self.learn.dl, leave=False, parent=self.parent)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """'none' | 'median' (prunes below the median after 2 finished trials) | 'hyperband' (over epochs)."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1), reduction_factor=3)


def _seed_of(*parts: Any) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def git_commit() -> str | None:
    """HEAD of the current git checkout, if any (recorded on every trial for provenance)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Job:
    """One unit of work: a tune trial slot or a confirm seed of a candidate."""

    stage: str
    candidate: str
    seed: int | None = None
    estimate_s: float = 0.0

    def __str__(self) -> str:
        return f"{self.candidate} {self.stage}" + (f" seed {self.seed}" if self.seed is not None else "")


@dataclass
class Plan:
    """What will run and how long it should take; printed before any work starts."""

    budget: Budget
    sizes: planning.DataSizes
    speed: dict[str, planning.Throughput]
    estimate: planning.Estimate
    done: dict[str, tuple[int, int]]
    fits: bool
    target_s: float | None
    device: torch.device
    storage: str

    def describe(self, spec: StudySpec) -> str:
        b, s, n = self.budget, self.sizes, len(spec.candidates)
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        speed = " · ".join(f"{k} {v.train_ips:,.0f}" for k, v in self.speed.items())
        done_t = sum(d[0] for d in self.done.values())
        done_c = sum(d[1] for d in self.done.values())
        lines = [
            f"Study {spec.name}: {', '.join(c.name for c in spec.candidates)} on {spec.dataset} "
            f"({self.device.type}{threads}); reference: {spec.reference}",
            f"  tune:    {n} candidates × {b.trials} trials × {b.tune_epochs} epochs × {s.tune_train:,} train / "
            f"{s.tune_valid:,} valid images, TPE + {spec.pruner} pruning",
            f"  confirm: {n} candidates × {b.seeds} seeds × {b.confirm_epochs} epochs × {s.confirm_train:,} train / "
            f"{s.confirm_valid:,} valid, then {s.confirm_test:,} test images",
            f"  measured train throughput (img/s): {speed}",
            f"  already done: {done_t}/{n * b.trials} tune trials, {done_c}/{n * b.seeds} confirm runs",
            f"  estimated time: {planning.fmt_seconds(self.estimate.total)} "
            f"(tune {planning.fmt_seconds(sum(self.estimate.tune.values()))}, "
            f"confirm {planning.fmt_seconds(sum(self.estimate.confirm.values()))})",
            f"  storage: {self.storage}",
        ]
        if self.target_s is not None and not self.fits:
            lines.append(
                f"  note: even the smallest preset exceeds the {planning.fmt_seconds(self.target_s)} target here"
            )
        return "\n".join(lines)


@dataclass
class Outcome:
    """What one trained trial produced."""

    history: list[dict[str, float]]
    seconds_per_epoch: float
    wall_s: float
    test: dict[str, float] | None = None
    state: str = "complete"
    reason: str | None = None


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
    poll_s: float = POLL_S

    def __post_init__(self) -> None:
        self.device = torch.device(self.spec.device) if self.spec.device else default_device()
        self.out = self.spec.out_dir
        self.storage_url = st.normalize_url(self.spec.storage or str(st.default_storage_path(self.out)))
        self.shown_url = st.display_url(self.storage_url)
        self.summaries: dict[str, Summary] = {}
        self.logged_tables: set[str] = set()
        self.studies: dict[tuple[str, str], optuna.Study] = {}
        self.commit = git_commit()
        self.plan: Plan | None = None
        self.storage: Any = None
        self.tracker: Tracker | None = None
        self._waiting_on: set[str] = set()

    # ------------------------------------------------------------------------------------ setup
    def load_data(self, budget: Budget, stage: str) -> DataLoaders:
        """The stage's loaders (decoded once per process; later calls only re-split)."""
        subset = budget.tune_subset if stage == "tune" else budget.confirm_subset
        fn = fashion_mnist if self.spec.dataset == "fashion_mnist" else cifar10
        return fn(bs=budget.bs, root=self.spec.data_root, device=self.device, subset=subset)

    def prepare(self) -> Plan:
        """Validate storage, data and the resume state, probe throughput and choose the budget; creates no files."""
        st.check_storage_url(self.storage_url)
        storage_exists = self.spec.storage is not None or Path(self.storage_url).exists()
        self.storage = st.open_storage(self.storage_url, self.liveness) if storage_exists else None
        stored = self._stored_budget()
        full = self.load_data(Budget(tune_subset=None), "confirm")
        sizes_of = partial(planning.sizes_for, full_train=full.train.n, full_valid=full.valid.n, full_test=full.test.n)
        speed = self._probe() if self._needs_probe(stored) else {}
        budget, fits = self._choose(stored, speed, sizes_of)
        if stored is not None:
            self._check_fingerprint(stored, budget)
        done = self._done_counts(budget)
        todo = {k: (max(budget.trials - t, 0), max(budget.seeds - c, 0)) for k, (t, c) in done.items()}
        est = planning.estimate(budget, sizes_of(budget), speed, self.spec.pruner, todo)
        self.plan = Plan(
            budget, sizes_of(budget), speed, est, done, fits, self.time_budget_s, self.device, self.shown_url
        )
        self.tune_dls, self.confirm_dls = self.load_data(budget, "tune"), self.load_data(budget, "confirm")
        return self.plan

    def _needs_probe(self, stored: dict | None) -> bool:
        """A `--workers` child skips the probe (the parent printed the plan) unless it must choose the budget."""
        return self.worker_id is None or (self.budget is None and stored is None and not self.quick)

    def _probe(self) -> dict[str, planning.Throughput]:
        bs = self.budget.bs if self.budget else (planning.QUICK.bs if self.quick else Budget().bs)
        probe_dls = self.load_data(Budget(bs=bs, tune_subset=2 * bs), "tune")
        return {c.name: planning.probe(c, probe_dls) for c in self.spec.candidates}

    def _choose(self, stored: dict | None, speed: dict, sizes_of: Callable) -> tuple[Budget, bool]:
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
            return planning.estimate(b, sizes_of(b), speed, self.spec.pruner).total

        return planning.choose_budget(presets, seconds, target)

    def _stored_budget(self) -> dict | None:
        """The budget a previous run of this study used (a resumed study must keep dataset, epochs and subsets)."""
        if self.storage is None:
            return None
        names = st.existing_names(self.storage)
        for c in self.spec.candidates:
            name = st.optuna_name(self.spec.name, c.name, "tune")
            if name in names:
                attrs = optuna.load_study(study_name=name, storage=self.storage).user_attrs
                if attrs.get("dataset") not in (None, self.spec.dataset):
                    raise StudyError(
                        f"study {self.spec.name!r} was run on {attrs['dataset']}, not {self.spec.dataset}; "
                        "use another --study-name"
                    )
                return attrs.get("budget")
        return None

    def _check_fingerprint(self, stored: dict, budget: Budget) -> None:
        """Refuse to mix results from different epochs or data sizes into one study (trials and seeds may grow)."""
        have, want = Budget(**stored).fingerprint(), budget.fingerprint()
        if have != want:
            diff = ", ".join(f"{k} {have[k]!r} → {want[k]!r}" for k in want if have[k] != want[k])
            raise StudyError(
                f"study {self.spec.name!r} was run with other settings ({diff}); only --trials and --seeds may "
                "change on resume, or use a new --study-name"
            )

    def _done_counts(self, budget: Budget) -> dict[str, tuple[int, int]]:
        done = {c.name: (0, 0) for c in self.spec.candidates}
        if self.storage is None:
            return done
        names = st.existing_names(self.storage)
        for c in self.spec.candidates:
            tn, cn = (st.optuna_name(self.spec.name, c.name, s) for s in st.STAGES)
            t = (
                st.count(optuna.load_study(study_name=tn, storage=self.storage).get_trials(deepcopy=False), st.FINISHED)
                if tn in names
                else 0
            )
            k = 0
            if cn in names and tn in names:
                best = self._best_params(c.name)
                if best is not None:
                    conf = optuna.load_study(study_name=cn, storage=self.storage)
                    k = len(st.confirm_claimed(conf, st.confirm_key(best)) & set(self._confirm_seeds(budget)))
            done[c.name] = (min(t, budget.trials), k)
        return done

    # ------------------------------------------------------------------------------------ studies
    def optuna_study(self, candidate: str, stage: str) -> optuna.Study:
        """The Optuna study of (candidate, stage), created once per process; every call first fails (and queues a
        retry of) trials whose worker is gone, so a waiting worker takes over a killed one's work."""
        key = (candidate, stage)
        if key not in self.studies:
            self.studies[key] = self._create_study(candidate, stage)
        study = self.studies[key]
        if failed := st.fail_lost_trials(study, self.liveness.max_retry):
            self.log(f"  trials {failed} of {study.study_name} lost their worker: marked FAIL, queued for retry")
        return study

    def _create_study(self, candidate: str, stage: str) -> optuna.Study:
        b = self.plan.budget
        study = optuna.create_study(
            study_name=st.optuna_name(self.spec.name, candidate, stage),
            storage=self.storage,
            direction="maximize",
            sampler=self._sampler(candidate, stage, 0),
            pruner=make_pruner(self.spec.pruner, b.tune_epochs),
            load_if_exists=True,
        )
        attrs = {
            "candidate": candidate,
            "stage": stage,
            "dataset": self.spec.dataset,
            "study": self.spec.name,
            "reference": self.spec.reference,
            "budget": asdict(b),
            "storage": self.shown_url,
        }
        for k, v in attrs.items():
            if study.user_attrs.get(k) != v:
                study.set_user_attr(k, v)
        return study

    def _sampler(self, candidate: str, stage: str, number: int) -> optuna.samplers.BaseSampler:
        """TPE seeded by the trial number: reproducible for one worker, and distinct draws for concurrent workers."""
        n_startup = max(2, min(10, self.plan.budget.trials // 2))
        return optuna.samplers.TPESampler(
            seed=_seed_of(self.spec.seed, candidate, stage, number), n_startup_trials=n_startup
        )

    def init_studies(self) -> None:
        """Create every (candidate, stage) study with the budget attrs, so workers started later resume this plan."""
        for c in self.spec.candidates:
            for stage in st.STAGES:
                self.optuna_study(c.name, stage)

    def _best_params(self, candidate: str) -> dict[str, Any] | None:
        name = st.optuna_name(self.spec.name, candidate, "tune")
        study = optuna.load_study(study_name=name, storage=self.storage)
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return dict(max(done, key=lambda t: t.value).params) if done else None

    def _confirm_seeds(self, budget: Budget) -> list[int]:
        return [CONFIRM_SEED_BASE + self.spec.seed * 1000 + i for i in range(budget.seeds)]

    # ------------------------------------------------------------------------------------ training
    def summary(self, cand: Candidate, dls: DataLoaders) -> Summary:
        """Per-layer summary of the candidate (params and MFLOPs per sample), computed once per process."""
        if cand.name not in self.summaries:
            self.summaries[cand.name] = summarize(cand.build(dls.input_shape[0], dls.n_classes).to(dls.device), dls=dls)
        return self.summaries[cand.name]

    def train(
        self,
        cand: Candidate,
        hp: dict[str, Any],
        dls: DataLoaders,
        epochs: int,
        seed: int,
        run: TrackedRun,
        trial: optuna.Trial | None,
        bar: Any,
    ) -> Outcome:
        """Seeded training of a fresh model with the candidate's recipe; tune trials get the pruning callback."""
        opt_kw, model_kw = split_hyperparams(hp)
        set_seed(seed)
        model = cand.build(dls.input_shape[0], dls.n_classes, **model_kw)
        opt_func, schedule = recipe(cand.recipe, opt_kw.get("weight_decay"))
        metrics = MetricsCB()
        cbs: list[Callback] = [DeviceCB(dls.device), metrics, schedule, WandbCB(run)]
        if trial is not None:
            cbs += [FiniteLossCB(), PruningCB(trial)]
        if bar is not None:
            cbs.append(TrialBarCB(bar))
        learn = Learner(model, dls, lr=opt_kw["lr"], cbs=cbs, opt_func=opt_func)
        t0 = time.perf_counter()
        state, reason = "complete", None
        try:
            learn.fit(epochs)
        except optuna.TrialPruned:
            state, reason = "pruned", trial.user_attrs.get("stop_reason", "pruned")
        except NonFiniteLoss as e:
            state, reason = "pruned", str(e)
        test = evaluate(model, dls.test) if trial is None else None
        wall = time.perf_counter() - t0
        hist = _history(metrics)
        train_s = [r["seconds"] for r in metrics.train_history]
        return Outcome(hist, sum(train_s) / max(len(train_s), 1), wall, test, state, reason)

    def _attrs(self, cand: Candidate, stage: str, seed: int, s: Summary, dls: DataLoaders) -> dict[str, Any]:
        return {
            "candidate": cand.name,
            "stage": stage,
            "seed": seed,
            "dataset": self.spec.dataset,
            "data_source": dls.source,
            "data_note": dls.note,
            "model": cand.describe(),
            "params": s.total_params,
            "mflops": s.total_mflops,
            "git_commit": self.commit,
            "worker": st.WORKER,
        }

    def _start_run(
        self, cand: Candidate, stage: str, trial: optuna.Trial, hp: dict, attrs: dict, dls: DataLoaders, epochs: int
    ) -> TrackedRun:
        config = {
            **hp,
            "candidate": cand.name,
            "dataset": self.spec.dataset,
            "seed": attrs["seed"],
            "trial": trial.number,
            "study": self.spec.name,
            "stage": stage,
            "params": attrs["params"],
            "mflops": attrs["mflops"],
            "epochs": epochs,
            "train_size": dls.train.n,
            "data_source": attrs["data_source"],
            "bs": dls.train.bs,
            "model": cand.describe(),
        }
        return self.tracker.start(f"{cand.name}-{stage}-t{trial.number}", stage, [cand.name, self.spec.dataset], config)

    def _log_summary_table(self, cand: str, run: TrackedRun) -> None:
        """The model summary as a wandb.Table, once per candidate and process (after the per-epoch steps)."""
        if run.id is not None and cand not in self.logged_tables:
            s = self.summaries[cand]
            run.table("model_summary", s.columns, s.data)
            self.logged_tables.add(cand)

    def run_trial(
        self, cand: Candidate, stage: str, study: optuna.Study, trial: optuna.Trial, hp: dict, seed: int, bar: Any
    ) -> Outcome:
        """Train, record attrs + W&B, tell Optuna the result; FAIL with a reason on errors and Ctrl-C (re-raised)."""
        dls = self.tune_dls if stage == "tune" else self.confirm_dls
        epochs = self.plan.budget.tune_epochs if stage == "tune" else self.plan.budget.confirm_epochs
        attrs = self._attrs(cand, stage, seed, self.summary(cand, dls), dls)
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        trial.set_user_attr("hyperparams", {k: json_safe(v) for k, v in hp.items()})  # incl. ones not drawn
        run = self._start_run(cand, stage, trial, hp, attrs, dls, epochs)
        trial.set_user_attr("wandb_run_id", run.id)
        try:
            out = self.train(cand, hp, dls, epochs, seed, run, trial if stage == "tune" else None, bar)
        except BaseException as e:  # the trial itself is closed FAIL by `_claim`
            run.summary({"state": "failed", "fail_reason": _reason(e)})
            run.finish(1)
            raise
        self._log_summary_table(cand.name, run)
        try:
            self._record(study, trial, run, out, stage)
        except UpdateFinishedTrialError:  # this worker was silent past the grace period: its retry counts instead
            run.finish(1)
            out.state, out.reason = "dropped", "declared lost by another worker meanwhile"
        return out

    def _record(self, study: optuna.Study, trial: optuna.Trial, run: TrackedRun, out: Outcome, stage: str) -> None:
        valid = [r["valid_accuracy"] for r in out.history if "valid_accuracy" in r]
        best_valid = max(valid) if valid else float("nan")
        trial.set_user_attr("history", out.history)
        trial.set_user_attr("seconds_per_epoch", out.seconds_per_epoch)
        trial.set_user_attr("wall_time_s", out.wall_s)
        trial.set_user_attr("best_valid_accuracy", best_valid)
        if out.reason:
            trial.set_user_attr("stop_reason", out.reason)
        summary = {"best_valid_accuracy": best_valid, "wall_time_s": out.wall_s, "state": out.state}
        if out.reason:
            summary["stop_reason"] = out.reason
        if out.test is not None:
            trial.set_user_attr("test_accuracy", out.test["accuracy"])
            trial.set_user_attr("test_loss", out.test["loss"])
            summary |= {"test_accuracy": out.test["accuracy"], "test_loss": out.test["loss"]}
        if out.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif stage == "tune":
            study.tell(trial, valid[-1] if valid else float("nan"))
        else:
            study.tell(trial, out.test["accuracy"])
        run.summary(summary)
        run.finish(0)

    # ------------------------------------------------------------------------------------ stages
    def tune_one(self, cand: Candidate, bar: Any) -> str | None:
        """Claim and run one tune trial if the candidate still needs one (counted from the storage, all workers)."""
        study = self.optuna_study(cand.name, "tune")
        wanted = self.plan.budget.trials
        if not st.tune_open(study, wanted):
            return None
        trial = st.ask(study)  # a queued retry of a lost trial first, else a new one
        with _claim(study, trial):
            if st.is_surplus(study, trial, wanted):
                st.mark_failed(study, trial, "surplus: another worker claimed the last trial")
                return None
            trial.set_user_attr("worker", st.WORKER)
            study.sampler = self._sampler(cand.name, "tune", trial.number)
            hp = self.spec.space_of(cand)(trial)
            out = self.run_trial(cand, "tune", study, trial, hp, TUNE_SEED_BASE + trial.number, bar)
        acc = out.history[-1].get("valid_accuracy", float("nan")) if out.history else float("nan")
        return f"{cand.name} tune t{trial.number}: valid acc {_fmt(acc)} ({out.state}) in {out.wall_s:.1f} s"

    def confirm_one(self, cand: Candidate, seed: int, bar: Any) -> str | None:
        """Claim and run a confirm run (best params, `seed`, or a queued one) once tuning has finished everywhere."""
        if not st.tune_done(self.optuna_study(cand.name, "tune"), self.plan.budget.trials):
            return None  # another worker still tunes this candidate: its best params are not final yet
        best = self._best_params(cand.name)
        if best is None:
            raise StudyError(f"{cand.name}: no completed tune trial to confirm (all pruned or failed)")
        key = st.confirm_key(best)
        study = self.optuna_study(cand.name, "confirm")
        if seed in st.confirm_claimed(study, key):
            return None
        if not st.confirm_queued(study, key, seed):
            study.enqueue_trial(best, user_attrs={"seed": seed, "params_key": key})
        trial = st.ask(study)  # pops the oldest waiting trial: ours, a retry, or another worker's claim
        with _claim(study, trial):
            seed = trial.user_attrs.get("seed", seed)
            if trial.user_attrs.get("params_key") != key or st.confirm_duplicate(study, trial, key, seed):
                st.mark_failed(study, trial, "surplus: claimed by another worker")
                return None
            trial.set_user_attr("worker", st.WORKER)
            hp = self.spec.space_of(cand)(trial)
            out = self.run_trial(cand, "confirm", study, trial, hp, seed, bar)
        acc = out.test["accuracy"] if out.test else float("nan")
        return f"{cand.name} confirm seed {seed}: test acc {_fmt(acc)} ({out.state}) in {out.wall_s:.1f} s"

    def jobs(self) -> list[Job]:
        """Remaining work in order: all tune slots, then all confirm seeds (re-checked against storage when run)."""
        b, est = self.plan.budget, self.plan.estimate
        jobs = []
        for c in self.spec.candidates:
            n = b.trials - self.plan.done[c.name][0]
            jobs += [Job("tune", c.name, estimate_s=est.per_trial("tune", c.name, n)) for _ in range(n)]
        for c in self.spec.candidates:
            n = b.seeds - self.plan.done[c.name][1]
            per = est.per_trial("confirm", c.name, n)
            jobs += [Job("confirm", c.name, seed=s, estimate_s=per) for s in self._confirm_seeds(b)]
        return jobs

    def pending(self) -> list[Job]:
        """Work not finished by any worker, read from the storage: one tune job per candidate still tuning, else its
        confirm seeds without a completed run."""
        jobs = []
        for c in self.spec.candidates:
            if not st.tune_done(self.optuna_study(c.name, "tune"), self.plan.budget.trials):
                jobs.append(Job("tune", c.name))
                continue
            best = self._best_params(c.name)
            done = (
                st.confirm_done(self.optuna_study(c.name, "confirm"), st.confirm_key(best))
                if best is not None
                else set()
            )
            jobs += [Job("confirm", c.name, seed=s) for s in self._confirm_seeds(self.plan.budget) if s not in done]
        return jobs

    def open(self) -> None:
        """The first writes of a run: output dir, storage (if new) and the W&B tracker."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial lines say it better
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage = st.open_storage(self.storage_url, self.liveness)
        self.tracker = Tracker(self.spec.wandb, self.spec.wandb_project, self.spec.name, self.out)

    def run(self) -> None:
        """Do all remaining work (prepare() first), then wait for and take over what other workers still hold."""
        if self.plan is None:
            self.prepare()
        self.open()
        jobs = self.jobs()
        if self.spec.progress and _use_bars() and self.worker_id is None:
            from fastprogress.fastprogress import master_bar

            mb = master_bar(jobs)
            for job in mb:
                if msg := self._do(job, mb):
                    mb.write(msg)
        else:
            self._run_logged(jobs)
        self.finish_remaining()

    def finish_remaining(self) -> None:
        """Until the whole study is finished: run what became claimable (confirms after tuning, retries of lost
        trials), else sleep `poll_s` while other workers run theirs."""
        idle = 0
        while todo := self.pending():
            ran = False
            for job in todo:
                if msg := self._do(job, None):
                    ran = True
                    self._say(msg)
            if ran:
                idle = 0
                continue
            idle = 0 if self._note_waiting() else idle + 1
            if idle > STUCK_POLLS:  # nobody holds a trial, yet the work stays undone: waiting would never end
                left = ", ".join(map(str, todo))
                raise StudyError(f"study {self.spec.name!r} is stuck: {left} cannot be claimed and no worker runs them")
            time.sleep(self.poll_s)

    def _note_waiting(self) -> bool:
        """Say (once per change) which workers this one waits for: a stuck wait names its culprit. True if any."""
        busy = (TrialState.RUNNING, TrialState.WAITING)
        held = {t.user_attrs.get("worker", "?") for s in self.studies.values() for t in s.get_trials(states=busy)}
        if held and held != self._waiting_on:
            self._say(f"waiting for trials running on {', '.join(sorted(held))}")
        self._waiting_on = held
        return bool(held)

    def _say(self, msg: str) -> None:
        if self.spec.progress:
            self.log(msg)
            sys.stdout.flush()

    def _do(self, job: Job, bar: Any) -> str | None:
        cand = self.spec.candidate(job.candidate)
        return self.tune_one(cand, bar) if job.stage == "tune" else self.confirm_one(cand, job.seed, bar)

    def _run_logged(self, jobs: list[Job]) -> None:
        """One line per finished trial with an ETA scaled by how fast the estimate has proven so far."""
        spent = est_done = 0.0
        for i, job in enumerate(jobs, 1):
            t0 = time.perf_counter()
            msg = self._do(job, None)
            spent += time.perf_counter() - t0
            est_done += job.estimate_s
            left = sum(j.estimate_s for j in jobs[i:]) * (spent / est_done if est_done else 1.0)
            if msg:
                self._say(f"[{i}/{len(jobs)}] {msg}" + (f"; ETA {planning.fmt_seconds(left)}" if est_done else ""))

    # ------------------------------------------------------------------------------------ results
    def collect(self) -> StudyResult:
        """Everything finished so far, from the storage."""
        names = [c.name for c in self.spec.candidates]
        published = {c.name: c.published for c in self.spec.candidates if c.published}
        return report.collect(
            self.storage, self.spec.name, names, self.spec.reference, self.spec.dataset, self.shown_url, published
        )

    def write_results(self, plan_text: str) -> StudyResult:
        """report.md, results.csv/json and plots from the storage; prints the comparison table."""
        res = self.collect()
        runs = offline_runs(self.out / "wandb")
        sync = f"wandb sync {self.out / 'wandb'}/offline-run-*" if runs else None
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
        if not any(_finished_tune(c) for c in self.collect().candidates):
            raise StudyError(f"nothing to report: study {self.spec.name!r} has no finished trials in {self.shown_url}")
        stored = self._stored_budget()
        return self.write_results(f"rebuilt from {self.shown_url} with --report-only; budget: {stored}")


def _finished_tune(c: report.CandidateResult) -> int:
    return c.tune_counts.get("complete", 0) + c.tune_counts.get("pruned", 0)


def _fmt(acc: float) -> str:
    return f"{acc:.4f}" if acc is not None and math.isfinite(acc) else "n/a"


def _reason(e: BaseException) -> str:
    return "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"


@contextmanager
def _claim(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """While this worker holds a trial: its heartbeat runs, and any error or Ctrl-C, wherever it strikes (W&B start,
    training, storage writes), closes the trial FAIL with the reason before it propagates; never left RUNNING."""
    with st.heartbeat(study, trial):
        try:
            yield
        except BaseException as e:
            try:
                st.mark_failed(study, trial, _reason(e))
            except UpdateFinishedTrialError:  # already closed (e.g. declared lost by another worker)
                pass
            raise


def _history(metrics: MetricsCB) -> list[dict[str, float]]:
    """Per-epoch rows {epoch, train_loss, train_accuracy, valid_loss, valid_accuracy} (JSON-safe floats)."""
    rows: dict[int, dict[str, float]] = {}
    for r in metrics.history:
        kind = "train" if r["train"] == "train" else "valid"
        row = rows.setdefault(r["epoch"], {"epoch": r["epoch"]})
        row[f"{kind}_loss"], row[f"{kind}_accuracy"] = _finite(r["loss"]), _finite(r["accuracy"])
    return [rows[k] for k in sorted(rows)]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


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
        names = [c.name for c in spec.candidates]
        storage = runner.storage or optuna.storages.InMemoryStorage()
        return report.collect(storage, spec.name, names, spec.reference, spec.dataset, runner.shown_url)
    if workers > 1:
        if not worker_command:
            raise StudyError("several workers need the command that starts one (worker_command)")
        run_local_workers(runner, worker_command, workers)
    else:
        runner.run()
    if worker_id is not None:
        return runner.collect()
    text = plan.describe(spec) + (f"\n  workers: {workers} local processes" if workers > 1 else "")
    return runner.write_results(text)


# ------------------------------------------------------------------------------------------- local workers
def run_local_workers(runner: Runner, command: Sequence[str], n: int) -> None:
    """Store the plan, start `n` worker processes on it, wait (forwarding Ctrl-C), and check the study finished."""
    runner.open()
    runner.init_studies()
    assign_gpus = runner.device.type == "cuda" and runner.spec.device in (None, "cuda")
    procs = [  # own sessions: a terminal Ctrl-C reaches only this parent, which forwards it exactly once
        subprocess.Popen(
            [*command, "--workers", "1", "--worker-id", str(i)],
            env=worker_env(i, n, assign_gpus),
            start_new_session=True,
        )
        for i in range(n)
    ]
    codes = wait_workers(procs)
    left = runner.pending()
    if left:
        bad = ", ".join(f"worker {i} exited with status {c}" for i, c in enumerate(codes) if c) or "workers exited"
        raise StudyError(f"{len(left)} jobs unfinished ({bad}); rerun the same command to resume")


def worker_env(i: int, n: int, assign_gpus: bool) -> dict[str, str]:
    """Worker i's environment: one GPU each (round-robin over the visible ones), or an equal share of CPU threads."""
    env = dict(os.environ)
    if assign_gpus:
        visible = env.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(torch.cuda.device_count())))
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        if ids:
            env["CUDA_VISIBLE_DEVICES"] = ids[i % len(ids)]
    elif "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // n))
    return env


def wait_workers(procs: list[subprocess.Popen]) -> list[int]:
    """Exit codes of all workers; on Ctrl-C each still running one gets SIGINT (it fails its trial cleanly) first."""
    try:
        return [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
