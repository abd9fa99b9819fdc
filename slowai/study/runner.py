"""Running a study: tune every candidate with Optuna (pruned per epoch), confirm the winners over seeds on test.

Every unit of work is claimed from the storage right before it runs (tune: "fewer than N finished or running
trials"; confirm: "(hyperparameters, seed) not yet done"), so rerunning resumes, adding trials adds only the missing
ones, and several workers can share one study.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from slowai.callbacks import MetricsCB, _use_bars
from slowai.data import DataLoaders, cifar10, fashion_mnist
from slowai.learner import Callback, DeviceCB, Learner
from slowai.study import plan as planning
from slowai.study import report
from slowai.study import storage as st
from slowai.study.report import StudyResult
from slowai.study.spec import Budget, Candidate, StudyError, StudySpec, split_hyperparams
from slowai.study.tracking import TrackedRun, Tracker, WandbCB
from slowai.summary import Summary, summarize
from slowai.train import evaluate, recipe
from slowai.utils import default_device, set_seed

TUNE_SEED_BASE, CONFIRM_SEED_BASE = 10_000, 0
DEFAULT_TARGET_S = 50 * 60  # leaves headroom under the hour for data loading, probes and the report


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
    """Stop a diverged trial at the end of the epoch where its mean loss became NaN/inf."""

    order = MetricsCB.order + 1

    def after_epoch(self) -> None:
        loss = self.learn.cb(MetricsCB).last["loss"]
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"non-finite {'train' if self.learn.training else 'valid'} loss at epoch {self.learn.epoch}"
            )


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

    def __post_init__(self) -> None:
        self.device = torch.device(self.spec.device) if self.spec.device else default_device()
        self.out = self.spec.out_dir
        self.storage_url = self.spec.storage or str(st.default_storage_path(self.out))
        self.summaries: dict[str, Summary] = {}
        self.logged_tables: set[str] = set()
        self.commit = git_commit()
        self.plan: Plan | None = None

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
        self.storage = st.open_storage(self.storage_url) if storage_exists else None
        stored = self._stored_budget()
        full = self.load_data(Budget(tune_subset=None), "confirm")
        sizes_of = partial(planning.sizes_for, full_train=full.train.n, full_valid=full.valid.n, full_test=full.test.n)
        bs = self.budget.bs if self.budget else (planning.QUICK.bs if self.quick else Budget().bs)
        probe_dls = self.load_data(Budget(bs=bs, tune_subset=2 * bs), "tune")
        speed = {c.name: planning.probe(c, probe_dls) for c in self.spec.candidates}
        budget, fits = self._choose(stored, speed, sizes_of)
        if stored is not None:
            self._check_fingerprint(stored, budget)
        done = self._done_counts(budget)
        todo = {k: (max(budget.trials - t, 0), max(budget.seeds - c, 0)) for k, (t, c) in done.items()}
        est = planning.estimate(budget, sizes_of(budget), speed, self.spec.pruner, todo)
        self.plan = Plan(
            budget, sizes_of(budget), speed, est, done, fits, self.time_budget_s, self.device, self.storage_url
        )
        self.tune_dls, self.confirm_dls = self.load_data(budget, "tune"), self.load_data(budget, "confirm")
        return self.plan

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
        """Create or load the Optuna study of (candidate, stage), sampler seeded by its current size (resume-safe)."""
        name = st.optuna_name(self.spec.name, candidate, stage)
        n = 0
        if name in st.existing_names(self.storage):
            n = len(optuna.load_study(study_name=name, storage=self.storage).get_trials(deepcopy=False))
        seed = _seed_of(self.spec.seed, candidate, stage, n)
        b = self.plan.budget
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, b.trials // 2)))
        study = optuna.create_study(
            study_name=name,
            storage=self.storage,
            direction="maximize",
            sampler=sampler,
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
            "storage": self.storage_url,
        }
        for k, v in attrs.items():
            if study.user_attrs.get(k) != v:
                study.set_user_attr(k, v)
        if failed := st.fail_dead_local_trials(study):
            self.log(f"  marked trials {failed} of {name} FAIL: their worker process died")
        return study

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

    def _attrs(self, cand: Candidate, stage: str, seed: int, s: Summary) -> dict[str, Any]:
        return {
            "candidate": cand.name,
            "stage": stage,
            "seed": seed,
            "dataset": self.spec.dataset,
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
        attrs = self._attrs(cand, stage, seed, self.summary(cand, dls))
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        run = self._start_run(cand, stage, trial, hp, attrs, dls, epochs)
        trial.set_user_attr("wandb_run_id", run.id)
        try:
            out = self.train(cand, hp, dls, epochs, seed, run, trial if stage == "tune" else None, bar)
        except BaseException as e:
            reason = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            st.mark_failed(study, trial, reason)
            run.summary({"state": "failed", "fail_reason": reason})
            run.finish(1)
            raise
        self._log_summary_table(cand.name, run)
        self._record(study, trial, run, out, stage)
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
        if out.test is not None:
            trial.set_user_attr("test_accuracy", out.test["accuracy"])
            trial.set_user_attr("test_loss", out.test["loss"])
            summary |= {"test_accuracy": out.test["accuracy"], "test_loss": out.test["loss"]}
        run.summary(summary)
        run.finish(0)
        if out.state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif stage == "tune":
            study.tell(trial, valid[-1] if valid else float("nan"))
        else:
            study.tell(trial, out.test["accuracy"])

    # ------------------------------------------------------------------------------------ stages
    def tune_one(self, cand: Candidate, bar: Any) -> str | None:
        """Claim and run one tune trial if the candidate still needs one (counted from the storage)."""
        study = self.optuna_study(cand.name, "tune")
        if st.tune_slots_left(study, self.plan.budget.trials) == 0:
            return None
        trial = study.ask()
        if st.is_surplus(study, trial, self.plan.budget.trials):
            st.mark_failed(study, trial, "surplus: another worker claimed the last trial")
            return None
        trial.set_user_attr("worker", st.WORKER)
        hp = self.spec.space_of(cand)(trial)
        out = self.run_trial(cand, "tune", study, trial, hp, TUNE_SEED_BASE + trial.number, bar)
        acc = out.history[-1].get("valid_accuracy", float("nan")) if out.history else float("nan")
        return f"{cand.name} tune t{trial.number}: valid acc {acc:.4f} ({out.state}) in {out.wall_s:.1f} s"

    def confirm_one(self, cand: Candidate, seed: int, bar: Any) -> str | None:
        """Claim and run the confirm run (best params, `seed`) unless it is done or running elsewhere."""
        best = self._best_params(cand.name)
        if best is None:
            raise StudyError(f"{cand.name}: no completed tune trial to confirm (all pruned or failed)")
        key = st.confirm_key(best)
        study = self.optuna_study(cand.name, "confirm")
        if seed in st.confirm_claimed(study, key):
            return None
        study.enqueue_trial(best, user_attrs={"seed": seed, "params_key": key, "worker": st.WORKER})
        trial = study.ask()  # pops the oldest waiting trial: ours, or one a killed worker enqueued
        seed = trial.user_attrs.get("seed", seed)
        if trial.user_attrs.get("params_key") != key or st.confirm_duplicate(study, trial, key, seed):
            st.mark_failed(study, trial, "surplus: claimed by another worker")
            return None
        trial.set_user_attr("worker", st.WORKER)
        hp = self.spec.space_of(cand)(trial)
        out = self.run_trial(cand, "confirm", study, trial, hp, seed, bar)
        return f"{cand.name} confirm seed {seed}: test acc {out.test['accuracy']:.4f} in {out.wall_s:.1f} s"

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

    def run(self) -> None:
        """Do all remaining work (prepare() first); writes the storage and W&B runs under the output dir."""
        if self.plan is None:
            self.prepare()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our per-trial lines say it better
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage = st.open_storage(self.storage_url)
        self.tracker = Tracker(self.spec.wandb, self.spec.wandb_project, self.spec.name, self.out)
        jobs = self.jobs()
        bars = self.spec.progress and _use_bars()
        if bars:
            from fastprogress.fastprogress import master_bar

            mb = master_bar(jobs)
            for job in mb:
                if msg := self._do(job, mb):
                    mb.write(msg)
        else:
            self._run_logged(jobs)

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
            if msg and self.spec.progress:
                self.log(f"[{i}/{len(jobs)}] {msg}; ETA {planning.fmt_seconds(left)}")
            sys.stdout.flush()


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
    **overrides: Any,
) -> StudyResult:
    """Plan (printed), tune, confirm, then write report.md/results/plots and print the comparison table.

    `budget` fixes the budget; otherwise a resumed study keeps its stored one, `quick` uses the smoke-test budget
    and a new study takes the biggest preset that fits `time_budget_s`. `overrides` (trials, seeds, tune_epochs,
    confirm_epochs, tune_subset, confirm_subset, bs) replace single budget fields.
    """
    runner = Runner(spec, budget, quick, time_budget_s, {k: v for k, v in overrides.items() if v is not None}, log)
    plan = runner.prepare()
    log(plan.describe(spec))
    if plan_only:
        return report.collect(
            runner.storage or optuna.storages.InMemoryStorage(),
            spec.name,
            [c.name for c in spec.candidates],
            spec.reference,
            spec.dataset,
            runner.storage_url,
        )
    runner.run()
    res = report.collect(
        runner.storage, spec.name, [c.name for c in spec.candidates], spec.reference, spec.dataset, runner.storage_url
    )
    sync = runner.tracker.sync_command()
    path = report.write_report(
        res,
        runner.out,
        spec.candidates,
        plan.describe(spec),
        sync,
        spec.wandb_project if runner.tracker.enabled else None,
    )
    log("\n" + report.text_table(res))
    log(f"\nreport: {path}\nstorage: {runner.storage_url}  (optuna studies --storage {runner.storage_url})")
    if sync:
        log(f"W&B runs were written offline; upload them with:\n  {sync}")
    return res
