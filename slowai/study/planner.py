"""The planning half of `Runner`: validate, probe, choose or read the budget (writing nothing), and when work
starts, claim the study's one plan (`plan_record`) or adopt the one another worker stored first."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

import optuna
import torch

from slowai.study import plan as planning
from slowai.study import plan_cache, plan_record, resume, speed
from slowai.study import storage as st
from slowai.study.args import storage_file
from slowai.study.knobs import check_config, dry_draws, route
from slowai.study.ledger import done_counts
from slowai.study.spec import Budget, StudyError

DEFAULT_TARGET_S = 50 * 60  # leaves headroom under the hour for data loading, probes and the report


class Planning:
    """Mixed into `Runner`, whose fields (spec, budget, quick, overrides, device, data, storage, ...) it reads."""

    def prepare(self) -> planning.Plan:
        """Validate, probe, and choose the budget or read the stored one; writes nothing, so --plan-only stops here."""
        st.check_storage_url(self.storage_url)
        if self._storage_exists():  # never create one here: --plan-only leaves no file behind
            self.storage = st.open_storage(self.storage_url, self.patience)
        self.stored = resume.stored_attrs(self.storage, self.spec)
        self.record = plan_record.read(self.storage, self.spec.name)
        settled = resume.stored_budget(self.stored) or (self.record.budget if self.record else None)
        choosing = settled is None and self.budget is None and not self.quick
        self.draws = {c.name: self._draws(c) for c in self.spec.candidates}
        self.throughput = self._probe(steady=choosing) if self._needs_probe(settled) else {}
        budget, fits = self._choose(settled)
        return self._plan(budget, fits)

    def _plan(self, budget: Budget, fits: bool) -> planning.Plan:
        """Everything that follows from the budget: fingerprints, checks, data sizes, speed-ups, work left, estimate."""
        self.draws = self.draws or {c.name: self._draws(c) for c in self.spec.candidates}
        data_fp = self.data.fingerprint()
        self.fingerprints = {
            c.name: resume.fingerprint(self.spec, c, budget, data_fp, self.draws[c.name]) for c in self.spec.candidates
        }
        resume.check(self.spec, self.stored, self.fingerprints)
        self._check_record(budget)
        self._check_spaces(budget, self.draws)
        sizes = planning.sizes_for(budget, self.data.sizes)
        before = self.stored or ({"plan": {"accel": self.record.accel}} if self.record else {})
        accel = speed.decide(self.spec, budget, sizes, self.throughput, self.device, before, self.log)
        done = done_counts(self.spec, self.storage, budget)
        todo = {k: (max(budget.trials - t, 0), max(budget.seeds - c, 0)) for k, (t, c) in done.items()}
        ups = speed.speedups(self.spec, accel, self.device)
        est = planning.estimate(budget, sizes, self.throughput, self.spec.pruner, todo, ups)
        self.plan = planning.Plan(
            budget, sizes, self.throughput, est, done, fits, self.time_budget_s, self.device, self.shown_url, accel
        )
        self.plan.per_run = planning.confirm_run_seconds(budget, sizes, self.throughput, ups)
        return self.plan

    def _storage_exists(self) -> bool:
        """A server URL, or a journal/SQLite file that is already there."""
        path = storage_file(self.storage_url)
        return path is None or path.exists()

    def _check_record(self, budget: Budget) -> None:
        """A study whose candidates have no stored attrs yet is held to its plan record (the same rule as resume)."""
        if self.stored or self.record is None:
            return
        if changes := resume.diff(Budget(**self.record.budget).fingerprint(), budget.fingerprint(), "budget"):
            raise StudyError(resume.refusal(f"study {self.spec.name!r} was planned", changes))

    def _needs_probe(self, settled: dict | None) -> bool:
        """A `--workers` child skips the probe (the parent printed the plan) unless it must choose the budget."""
        return self.worker_id is None or (self.budget is None and settled is None and not self.quick)

    def _probe(self, steady: bool) -> dict[str, planning.Throughput]:
        """Throughput at the batch size trials use (at most CPU_PROBE_BS on a CPU); steady where it picks the budget."""
        default = self.budget.bs if self.budget else (planning.QUICK.bs if self.quick else Budget().bs)
        min_s = planning.MIN_PROBE_S if steady else 0.0  # otherwise it only feeds the estimate: 10 steps will do
        out = {}
        for c in self.spec.candidates:
            bs = self._space_bs(c) or self.overrides.get("bs") or default
            bs = min(bs, planning.CPU_PROBE_BS) if self.device.type == "cpu" else bs
            out[c.name] = planning.probe(c, self.data.load(2 * bs, bs), min_s=min_s)
        return out

    def _space_bs(self, cand: Any) -> int | None:
        """The space's usual `train.bs`: 8x8 digits train at 2,266 img/s at batch 64 but 5,262 at 512 (2-core CPU)."""
        where = f"the search space of {cand.name!r}"
        sizes = [b for t in self.draws[cand.name] if (b := route(t.user_attrs["hp"], cand.recipe, where).bs)]
        return statistics.median_low(sizes) if sizes else None

    def _choose(self, settled: dict | None) -> tuple[Budget, bool]:
        """Explicit > the study's stored budget (attrs, else plan record) > quick > the biggest preset that fits."""
        self.source = "explicit" if self.budget is not None else "stored" if settled is not None else "chosen"
        if self.budget is not None:
            return self.budget.with_(**self.overrides), True
        if settled is not None:
            return Budget(**settled).with_(**self.overrides), True
        if self.quick:
            return planning.QUICK.with_(**self.overrides), True
        presets = (planning.GPU_PRESETS if self.device.type == "cuda" else ()) + planning.CPU_PRESETS
        presets = tuple(p.with_(**self.overrides) for p in presets)
        target = self.time_budget_s if self.time_budget_s is not None else DEFAULT_TARGET_S

        def seconds(b: Budget) -> float:
            return planning.estimate(b, planning.sizes_for(b, self.data.sizes), self.throughput, self.spec.pruner).total

        cap = self.overrides.get("max_seeds", planning.MAX_SEEDS)
        machine = {"device": self.device.type, "threads": torch.get_num_threads(), "data": self.data.fingerprint()}
        probe_key = plan_cache.question_key(probe={c.name: c.describe() for c in self.spec.candidates}, **machine)
        self.throughput = plan_cache.smoothed(probe_key, self.throughput)
        key = plan_cache.question_key(
            study=self.spec.name,
            candidates={c.name: c.describe() for c in self.spec.candidates},
            data=self.data.fingerprint(),
            device=self.device.type,
            threads=torch.get_num_threads(),
            target=target,
            overrides=self.overrides,
            pruner=self.spec.pruner,
            presets=[asdict(p) for p in presets],
        )
        chosen, fits = planning.choose_budget(presets, seconds, target, cap, plan_cache.previous(key))
        plan_cache.remember(key, chosen)
        return chosen, fits

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

    def _claim_plan(self) -> None:
        """Store this plan as the study's unless one is stored; a plan chosen here yields to the stored one."""
        mine = plan_record.PlanRecord.of(self.plan)
        self.record = won = plan_record.claim(self.storage, self.spec.name, mine)
        if won.token == mine.token or self.source != "chosen":
            self._check_record(self.plan.budget)  # an explicit budget must still agree with a racing plan
            return
        budget = Budget(**won.budget).with_(**self.overrides)
        if budget == self.plan.budget and won.accel == self.plan.accel:
            return
        self.stored = resume.stored_attrs(self.storage, self.spec)  # the winner may have started its studies
        self._plan(budget, True)
        self.log(
            f"another worker planned this study first: using its plan ({won.describe()}, {won.origin()}); "
            f"estimated {planning.fmt_seconds(self.plan.estimate.total)} here"
        )
