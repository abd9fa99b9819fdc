"""One plan per study, stored once with its trials: the first worker to propose one wins, and every worker adopts it.

Why: workers started independently on one storage each measure their own machine and would each choose a budget
and speed-ups; one study must not mix epochs, data sizes or compile settings. `--plan-only` stores nothing; the
record is written when work starts (`Runner.open`), before any candidate's Optuna study.

How, through public Optuna API only: the Optuna study `<study>/plan` gets one COMPLETE trial per proposal, the whole
plan in its user attrs, added by one `Study.add_trial` call, which is one `create_new_trial(template_trial=...)`
storage operation. The plan is the trial with the lowest number. That is atomic and agreed on by every reader:

- JournalStorage: the trial, its value and all its user attrs are one CREATE_TRIAL log entry, appended in one write
  under the journal file's lock (`JournalFileBackend.append_logs`; Redis numbers and stores it in one script). Every
  process replays the same log in the same order and numbers a study's trials by their position in it: a proposal
  appears whole or not at all, and after appending its own, a proposer has replayed every entry before it.
- RDBStorage (PostgreSQL, MySQL, SQLite): `_create_new_trial` runs one transaction that locks the study's row
  (SELECT ... FOR UPDATE; SQLite takes its database write lock instead), inserts the trial with its value and attrs,
  numbers it by counting the trials before it, and commits. Proposals are serialized by that lock, so numbers are
  distinct and in commit order, no reader sees a trial without its attrs, and a proposer reading back after its
  commit sees every lower-numbered trial.

Creating `<study>/plan` itself can race (two creators: DuplicatedStudyError for one), so the loser loads it.

The same first-writer-wins record decides who queues a batch of work (`first_claim`: a candidate's tune slots, a
confirm round's seeds; see `slowai.study.workqueue`), so each batch is queued once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.trial import TrialState

from slowai.study import plan as planning
from slowai.study import storage as st
from slowai.study.lease import worker_id
from slowai.study.spec import Budget

KIND = "plan"
CREATE_TRIES = 5


def plan_study_name(study: str) -> str:
    """`<study>/plan`: never a candidate's study, whose names always end in a stage (`<study>/<candidate>/tune`)."""
    return f"{study}/{KIND}"


@dataclass(frozen=True)
class PlanRecord:
    """A study's plan as stored: the budget and speed-ups every worker uses, and what it was based on."""

    budget: dict[str, Any]
    accel: dict[str, list[str]]
    throughput: dict[str, dict[str, float]]  # candidate -> train_ips, eval_ips (eager) on the writer's machine
    estimate_s: float  # the first look's work, as planned
    per_round_s: float  # each further sequential round
    writer: str = field(default_factory=worker_id)  # the proposing worker's id
    written_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells a proposer its own trial apart
    number: int = -1  # the trial holding it (lowest wins)

    @classmethod
    def of(cls, plan: planning.Plan) -> PlanRecord:
        """The record proposing `plan`."""
        speed = {k: asdict(v) for k, v in plan.speed.items()}
        return cls(asdict(plan.budget), plan.accel, speed, plan.estimate.total, plan.per_round)

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
        return f"stored by {self.writer} at {self.written_at}, estimated {planning.fmt_seconds(self.estimate_s)} there"

    def attrs(self) -> dict[str, Any]:
        """The whole record as one trial's user attrs: written in one storage call, so never half a plan."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "number"}


def _images(subset: int | None) -> str:
    """'5,000 images' or 'all images' (a None subset is the full split)."""
    return "all images" if subset is None else f"{subset:,} images"


def read(storage: Any, study: str) -> PlanRecord | None:
    """The study's plan, if one was stored (None for a new study or one from before plan records)."""
    if storage is None or plan_study_name(study) not in st.existing_names(storage):
        return None
    return _winner(optuna.load_study(study_name=plan_study_name(study), storage=storage))


def claim(storage: Any, study: str, proposal: PlanRecord) -> PlanRecord:
    """Store `proposal` unless the study has a plan already; the stored plan (the first proposal) either way."""
    plans = _plan_study(storage, plan_study_name(study))
    if (won := _winner(plans)) is not None:
        return won
    plans.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs=proposal.attrs()))
    won = _winner(plans)
    assert won is not None, "a proposal just added must be readable"
    return won


def first_claim(storage: Any, study: str, what: str) -> bool:
    """Is this worker the first to claim `what` in the study (e.g. queueing a batch of work)? One trial per claim in
    `<study>/plan`; the lowest-numbered claim of `what` wins, exactly as for the plan itself."""
    plans, token = _plan_study(storage, plan_study_name(study)), uuid.uuid4().hex
    attrs = {"claim": what, "token": token, "writer": worker_id()}
    plans.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs=attrs))
    done = plans.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return (
        min((t for t in done if t.user_attrs.get("claim") == what), key=lambda t: t.number).user_attrs["token"] == token
    )


def _plan_study(storage: Any, name: str) -> optuna.Study:
    """Create or load `<study>/plan`; a concurrent creator may win the name (then it is loaded)."""
    for attempt in range(1, CREATE_TRIES):
        try:
            return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
        except (DuplicatedStudyError, KeyError):
            time.sleep(0.05 * attempt)
    return optuna.load_study(study_name=name, storage=storage)


def _winner(plans: optuna.Study) -> PlanRecord | None:
    """The proposal on the lowest-numbered complete trial (ties, impossible by the storages' numbering, by token)."""
    done = [t for t in plans.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "budget" in t.user_attrs]
    if not done:
        return None
    first = min(done, key=lambda t: (t.number, t.user_attrs.get("token", "")))
    known = {f.name for f in fields(PlanRecord)} - {"number"}
    return PlanRecord(**{k: v for k, v in first.user_attrs.items() if k in known}, number=first.number)
