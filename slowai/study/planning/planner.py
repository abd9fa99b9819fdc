"""Planning a study: validate, probe, choose or read the budget, and check it against what the study stored
(writing nothing), then, when work starts, store the plan as the study's or adopt the one another worker stored
first (`stored_plan`)."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import optuna
import torch

from slowai.study.coordination.studies import done_counts, epochs_trained
from slowai.study.data import StudyData
from slowai.study.planning import budget as budgets
from slowai.study.planning import fingerprint, fusion, remembered, speedups, stored_plan
from slowai.study.planning.estimate import DataSizes, Estimate, confirm_run_seconds, estimate, sizes_for
from slowai.study.planning.plan import Plan
from slowai.study.planning.probe import CPU_PROBE_BS, MIN_PROBE_S, Throughput, probe
from slowai.study.space import check_config, dry_draws, route
from slowai.study.spec import Budget, StudyError, StudySpec
from slowai.utils import fmt_seconds

DEFAULT_TARGET_S = 50 * 60  # leaves headroom under the hour for data loading, probes and the report


@dataclass
class Planner:
    """Turns a StudySpec and this machine into a `Plan`: `plan()` reads the storage (if any) and writes nothing, so
    --plan-only stops there; `adopt()` stores it as the study's plan, or returns the plan another worker stored."""

    spec: StudySpec
    data: StudyData
    device: torch.device
    storage_url: str  # as shown (password masked): the plan prints it
    budget: Budget | None = None  # explicit: used as given (overrides still apply)
    quick: bool = False
    time_budget_s: float | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    probe_always: bool = True  # False in a `--workers` child: the parent printed the plan, skip the probe if it can
    log: Callable[[str], None] = print
    _draws: dict[str, list[optuna.Trial]] = field(default_factory=dict, init=False, repr=False)
    _measured: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False)  # fusion, measured once
    _confirm_kw: dict[str, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)  # costliest drawn

    def plan(self, storage: Any) -> Plan:
        """Validate, probe, and choose the budget or read the stored one (from `storage`, None for a new study)."""
        stored = fingerprint.stored_attrs(storage, self.spec)
        record = stored_plan.read(storage, self.spec.name)
        settled = fingerprint.stored_budget(stored) or (record.budget if record else None)
        choosing = settled is None and self.budget is None and not self.quick
        needs_probe = self.probe_always or choosing
        self._check_spaces(self.budget or budgets.QUICK, self.draws())  # the probe builds the models they draw
        speed = self._probe(steady=choosing) if needs_probe else {}
        budget, source, fits, speed = self._choose(settled, speed)
        return self._plan(storage, budget, source, fits, speed, stored, record)

    def adopt(self, storage: Any, plan: Plan) -> Plan:
        """Store `plan` as the study's unless one is stored; a plan chosen here yields to the stored one."""
        proposal = stored_plan.PlanRecord.of(plan)
        won = stored_plan.claim(storage, self.spec.name, proposal)
        mine = replace(plan, record=won)
        if won.token == proposal.token or plan.source != "chosen":  # an explicit budget must agree with a race
            self._check_record(won, plan.budget, stored=bool(fingerprint.stored_attrs(storage, self.spec)))
            return mine
        budget = Budget(**won.budget).with_(**self.overrides)
        if budget == plan.budget and won.accel == plan.accel:
            return mine
        stored = fingerprint.stored_attrs(storage, self.spec)  # the winner may have started its studies
        adopted = self._plan(storage, budget, plan.source, True, plan.speed, stored, won)
        self.log(
            f"another worker planned this study first: using its plan ({won.describe()}, {won.origin()}); "
            f"estimated {fmt_seconds(adopted.estimate.total)} here"
        )
        return adopted

    def _plan(
        self,
        storage: Any,
        budget: Budget,
        source: str,
        fits: bool,
        speed: dict[str, Throughput],
        stored: dict[str, dict[str, Any]],
        record: stored_plan.PlanRecord | None,
    ) -> Plan:
        """Everything that follows from the budget: fingerprints, checks, data sizes, speed-ups, work left, estimate."""
        draws = self.draws()
        data_fp = self.data.fingerprint()
        fps = {c.name: fingerprint.of(self.spec, c, budget, data_fp, draws[c.name]) for c in self.spec.candidates}
        fingerprint.check(self.spec, stored, fps)
        if record is not None:
            self._check_record(record, budget, stored=bool(stored))
        sizes = sizes_for(budget, self.data.sizes)
        before = stored or ({"plan": {"accel": record.accel, "fuse": record.fuse}} if record else {})
        done = done_counts(self.spec, storage, budget)
        todo = {k: (max(budget.trials - t, 0), max(budget.seeds - c, 0)) for k, (t, c) in done.items()}
        accel, fused, est, per_run = self._work(budget, sizes, speed, before, todo, epochs_trained(self.spec, storage))
        return Plan(
            budget, sizes, speed, est, done, fits, self.time_budget_s, self.device, self.storage_url, accel, per_run,
            fps, source, record, fused,
        )  # fmt: skip

    def preset_seconds(self, budget: Budget, speed: dict[str, Throughput]) -> tuple[float, float]:
        """(first look, one more round) of a new study under `budget`, with the speed-ups and fused seeds it would
        get here: what the plan would print, so a preset is judged by the time it will take, not its eager time."""
        _, _, est, per_run = self._work(budget, sizes_for(budget, self.data.sizes), speed, {}, log=lambda _: None)
        return est.total, sum(per_run.values())

    def _work(
        self,
        budget: Budget,
        sizes: DataSizes,
        speed: dict[str, Throughput],
        before: dict[str, dict[str, Any]],
        todo: dict[str, tuple[int, int]] | None = None,
        trained: dict[str, list[int]] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, fusion.Fusion], Estimate, dict[str, float]]:
        """What `budget` gets here: each candidate's speed-ups and fusion, the estimate of the work left with them,
        and one confirm run's seconds (what a sequential round adds)."""
        accel = speedups.decide(self.spec, budget, sizes, speed, self.device, before, log or self.log)
        ups = speedups.speedups(self.spec, accel, self.device)
        full = estimate(budget, sizes, speed, self.spec.pruner, None, ups).confirm
        shapes = self._shapes(budget)
        fused = fusion.decide(self.spec, budget, full, shapes, self.device, before, accel, self._measured)
        est = estimate(budget, sizes, speed, self.spec.pruner, todo, ups, self._fused_gains(fused, accel), trained)
        return accel, fused, est, confirm_run_seconds(budget, sizes, speed, ups)

    def _fused_gains(self, fused: dict[str, fusion.Fusion], accel: dict[str, list[str]]) -> dict[str, float]:
        """Fused confirm throughput over eager runs: the measured ratio (fused vs runs, both channels-last where
        chosen) times channels-last's own gain; a fused model is never compiled."""
        no_compile = {k: [n for n in v if n != "compile"] for k, v in accel.items()}
        layout = speedups.speedups(self.spec, no_compile, self.device)
        return {k: f.speedup * layout.get(k, (1.0, 0.0))[0] for k, f in fused.items() if f.k > 1}

    def _shapes(self, budget: Budget) -> dict[str, fusion.Shape]:
        """Input shape, classes, batch size and model kwargs of each candidate's confirm runs, for measuring fusion:
        at most CPU_PROBE_BS on a CPU, as the throughput probe (the ratio is what counts, and it costs a quarter of
        the time), and the costliest model the space draws, as the estimate (on digits plain fuses at 2× at its
        default width 8 but 1.1× at the width 16 tuning picked)."""
        dls = self.data.for_stage(budget, "confirm")
        cap = CPU_PROBE_BS if self.device.type == "cpu" else None
        return {
            c.name: fusion.Shape(
                tuple(dls.input_shape),
                dls.n_classes,
                min(self._space_bs(c) or budget.bs, cap or 1 << 30),
                self._confirm_kw.get(c.name, {}),
            )
            for c in self.spec.candidates
        }

    def _check_record(self, record: stored_plan.PlanRecord, budget: Budget, stored: bool) -> None:
        """A study whose candidates have no stored attrs yet is held to its plan record (the same rule as resume)."""
        if stored:
            return
        if changes := fingerprint.diff(Budget(**record.budget).fingerprint(), budget.fingerprint(), "budget"):
            raise StudyError(fingerprint.refusal(f"study {self.spec.name!r} was planned", changes))

    def _probe(self, steady: bool) -> dict[str, Throughput]:
        """Throughput at the batch size trials use (at most CPU_PROBE_BS on a CPU); steady where it picks the budget.
        A space that draws model kwargs (a width, a depth) is probed at each distinct draw, weighted by how often
        the dry draws hit it: on digits plain at width 16 trains at half the img/s of its default width."""
        default = self.budget.bs if self.budget else (budgets.QUICK.bs if self.quick else Budget().bs)
        min_s = MIN_PROBE_S if steady else 0.0  # otherwise it only feeds the estimate: 10 steps will do
        out = {}
        for c in self.spec.candidates:
            bs = self._space_bs(c) or self.overrides.get("bs") or default
            bs = min(bs, CPU_PROBE_BS) if self.device.type == "cpu" else bs
            dls, kinds = self.data.load(2 * bs, bs), self._model_kwargs(c)
            each = [(n, kw, probe(c, dls, min_s=min_s / len(kinds), **kw)) for kw, n in kinds.values()]
            out[c.name] = _mixed([(n, tp) for n, _, tp in each])
            self._confirm_kw[c.name] = min(each, key=lambda e: e[2].train_ips)[1]  # fusion is measured on it
        return out

    def _model_kwargs(self, cand: Any) -> dict[str, tuple[dict[str, Any], int]]:
        """Each distinct set of model kwargs the dry draws build (by its repr), and how many draws build it."""
        where = f"the search space of {cand.name!r}"
        kinds: dict[str, tuple[dict[str, Any], int]] = {}
        for t in self.draws()[cand.name]:
            kw = route(t.user_attrs["hp"], cand.recipe, where).model_kw
            key = repr(sorted(kw.items()))
            kinds[key] = (kw, kinds.get(key, (kw, 0))[1] + 1)
        return kinds or {"[]": ({}, 1)}

    def _space_bs(self, cand: Any) -> int | None:
        """The space's usual `train.bs`: 8x8 digits train at 2,266 img/s at batch 64 but 5,262 at 512 (2-core CPU)."""
        where = f"the search space of {cand.name!r}"
        sizes = [b for t in self.draws()[cand.name] if (b := route(t.user_attrs["hp"], cand.recipe, where).bs)]
        return statistics.median_low(sizes) if sizes else None

    def _choose(
        self, settled: dict | None, speed: dict[str, Throughput]
    ) -> tuple[Budget, str, bool, dict[str, Throughput]]:
        """(budget, its source, fits, throughput): explicit > the study's stored budget (attrs, else plan record) >
        quick > the biggest preset that fits (on throughput smoothed with this machine's earlier probes)."""
        if self.budget is not None:
            return self.budget.with_(**self.overrides), "explicit", True, speed
        if settled is not None:
            return Budget(**settled).with_(**self.overrides), "stored", True, speed
        if self.quick:
            return budgets.QUICK.with_(**self.overrides), "chosen", True, speed
        return self._fit_preset(speed)

    def _fit_preset(self, speed: dict[str, Throughput]) -> tuple[Budget, str, bool, dict[str, Throughput]]:
        """The biggest preset whose estimate fits the target, remembered per machine and question (`remembered`)."""
        presets = (budgets.GPU_PRESETS if self.device.type == "cuda" else ()) + budgets.CPU_PRESETS
        presets = tuple(p.with_(**self.overrides) for p in presets)
        target = self.time_budget_s if self.time_budget_s is not None else DEFAULT_TARGET_S
        described = {c.name: c.describe() for c in self.spec.candidates}
        machine = {"device": self.device.type, "threads": torch.get_num_threads(), "data": self.data.fingerprint()}
        speed = remembered.smoothed(remembered.question_key(probe=described, **machine), speed)

        key = remembered.question_key(
            study=self.spec.name,
            candidates=described,
            **machine,
            target=target,
            overrides=self.overrides,
            pruner=self.spec.pruner,
            speedups={k: str(getattr(self.spec, k)) for k in ("amp", "channels_last", "compile", "fuse")},
            presets=[asdict(p) for p in presets],
        )
        cap = self.overrides.get("max_seeds", budgets.MAX_SEEDS)
        seconds = functools.partial(self.preset_seconds, speed=speed)
        chosen, fits = budgets.choose_budget(presets, seconds, target, cap, remembered.previous(key))
        remembered.remember(key, chosen)
        return chosen, "chosen", fits, speed

    def draws(self) -> dict[str, list[optuna.Trial]]:
        """Each candidate's seeded dry draws of its search space (made once)."""
        if not self._draws:
            self._draws = {c.name: self._dry_draws(c) for c in self.spec.candidates}
        return self._draws

    def _dry_draws(self, cand: Any) -> list[optuna.Trial]:
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


def _mixed(each: list[tuple[int, Throughput]]) -> Throughput:
    """Tuning trains a draw-weighted mix of models: seconds per image average, so its img/s is the weighted harmonic
    mean 1 / Σ wᵢ/ipsᵢ (wᵢ the share of draws building model i). Confirm runs train the tuned model, which tends to
    be the biggest, so they are estimated at the costliest: an upper bound (on digits tuning chose width 16 of 4-16
    for plain, 8 for residual)."""
    total = sum(n for n, _ in each)
    train = 1 / sum(n / total / tp.train_ips for n, tp in each)
    valid = 1 / sum(n / total / tp.eval_ips for n, tp in each)
    if len(each) == 1:
        return Throughput(train, valid)
    costliest = min((tp for _, tp in each), key=lambda tp: tp.train_ips)
    return Throughput(train, valid, costliest.train_ips, costliest.eval_ips)
