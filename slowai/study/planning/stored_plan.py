"""One plan per study, stored once with its trials: the first worker to propose one wins, and every worker adopts it.

Why: workers started independently on one storage each measure their own machine and would each choose a budget
and speed-ups; one study must not mix epochs, data sizes or compile settings. `--plan-only` stores nothing; the
record is written when work starts (`Planner.adopt`), before any candidate's Optuna study. The first-writer-wins
record itself, and why it is atomic on every storage, is `coordination.first_writer`.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import optuna

from slowai.study.coordination import first_writer
from slowai.study.coordination.lease import worker_id
from slowai.study.planning.plan import Plan
from slowai.study.spec import Budget
from slowai.utils import fmt_seconds


@dataclass(frozen=True)
class PlanRecord:
    """A study's plan as stored: the budget and speed-ups every worker uses, and what it was based on."""

    budget: dict[str, Any]
    accel: dict[str, list[str]]
    throughput: dict[str, dict[str, float]]  # candidate -> train_ips, eval_ips (eager) on the writer's machine
    estimate_s: float  # the first look's work, as planned
    per_round_s: float  # each further sequential round
    fuse: dict[str, int] = field(default_factory=dict)  # confirm seeds trained as one model, per candidate
    writer: str = field(default_factory=worker_id)  # the proposing worker's id
    written_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells a proposer its own trial apart
    number: int = -1  # the trial holding it (lowest wins)

    @classmethod
    def of(cls, plan: Plan) -> PlanRecord:
        """The record proposing `plan`."""
        speed = {k: asdict(v) for k, v in plan.speed.items()}
        return cls(asdict(plan.budget), plan.accel, speed, plan.estimate.total, plan.per_round, plan.fuse)

    def describe(self) -> str:
        """'6 trials × 2 epochs on 5,000 images, 3–6 seeds × 2 epochs on 20,000 images'."""
        b = Budget(**self.budget)
        seeds = f"{b.seeds}–{b.last_seeds}" if b.last_seeds > b.seeds else str(b.seeds)
        return (
            f"{b.trials} trials × {b.tune_epochs} epochs on {_images(b.tune_subset)}, {seeds} seeds × "
            f"{b.confirm_epochs} epochs on {_images(b.confirm_subset)}"
        )

    def origin(self) -> str:
        """Who stored it, when, and what it expected: a resume's report can compare against the first plan."""
        return f"stored by {self.writer} at {self.written_at}, estimated {fmt_seconds(self.estimate_s)} there"

    def attrs(self) -> dict[str, Any]:
        """The whole record as one trial's user attrs: written in one storage call, so never half a plan."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "number"}


def _images(subset: int | None) -> str:
    """'5,000 images' or 'all images' (a None subset is the full split)."""
    return "all images" if subset is None else f"{subset:,} images"


def read(storage: Any, study: str) -> PlanRecord | None:
    """The study's plan, if one was stored (None for a new study or one from before plan records)."""
    plans = first_writer.existing_records(storage, study) if storage is not None else None
    return _winner(plans) if plans is not None else None


def claim(storage: Any, study: str, proposal: PlanRecord) -> PlanRecord:
    """Store `proposal` unless the study has a plan already; the stored plan (the first proposal) either way."""
    plans = first_writer.records(storage, study)
    if (won := _winner(plans)) is None:
        first_writer.propose(plans, proposal.attrs())
        won = _winner(plans)
    assert won is not None, "a proposal just added must be readable"
    return won


def _winner(plans: optuna.Study) -> PlanRecord | None:
    """The first plan proposed, if any."""
    t = first_writer.first(plans, lambda t: "budget" in t.user_attrs)
    if t is None:
        return None
    known = {f.name for f in fields(PlanRecord)} - {"number"}
    return PlanRecord(**{k: v for k, v in t.user_attrs.items() if k in known}, number=t.number)
