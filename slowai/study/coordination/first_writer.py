"""Agreeing without a lock: the first writer of a record wins, and every worker reads the same winner.

Used for the study's one plan (`planning.stored_plan`) and for who queues a batch of work
(`first_claim`: a candidate's tune slots, a confirm round's seeds; see `workqueue`), so each is decided once.

How, through public Optuna API only: the Optuna study `<study>/plan` gets one COMPLETE trial per proposal, the whole
record in its user attrs, added by one `Study.add_trial` call, which is one `create_new_trial(template_trial=...)`
storage operation. The winner is the trial with the lowest number. That is atomic and agreed on by every reader:

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
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.trial import FrozenTrial, TrialState

from slowai.study.coordination.lease import worker_id
from slowai.study.coordination.storage import load_if_exists

KIND = "plan"
CREATE_TRIES = 5


def records_name(study: str) -> str:
    """`<study>/plan`: never a candidate's study, whose names always end in a stage (`<study>/<candidate>/tune`)."""
    return f"{study}/{KIND}"


def records(storage: Any, study: str) -> optuna.Study:
    """Create or load `<study>/plan`; a concurrent creator may win the name (then it is loaded)."""
    name = records_name(study)
    for attempt in range(1, CREATE_TRIES):
        try:
            return optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
        except (DuplicatedStudyError, KeyError):
            time.sleep(0.05 * attempt)
    return optuna.load_study(study_name=name, storage=storage)


def existing_records(storage: Any, study: str) -> optuna.Study | None:
    """`<study>/plan` if anything was ever recorded (reading never creates it)."""
    return load_if_exists(storage, records_name(study))


def propose(records_study: optuna.Study, attrs: dict[str, Any]) -> None:
    """Append one proposal, whole, in one storage operation."""
    records_study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs=attrs))


def first(records_study: optuna.Study, which: Callable[[FrozenTrial], bool]) -> FrozenTrial | None:
    """The lowest-numbered proposal that `which` accepts (ties, impossible by the storages' numbering, by token)."""
    done = [t for t in records_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if which(t)]
    return min(done, key=lambda t: (t.number, t.user_attrs.get("token", ""))) if done else None


def first_claim(storage: Any, study: str, what: str) -> bool:
    """Is this worker the first to claim `what` in the study (e.g. queueing a batch of work)? One proposal per claim;
    the lowest-numbered claim of `what` wins, exactly as for the plan itself."""
    plans, token = records(storage, study), uuid.uuid4().hex
    propose(plans, {"claim": what, "token": token, "writer": worker_id()})
    won = first(plans, lambda t: t.user_attrs.get("claim") == what)
    return won is not None and won.user_attrs["token"] == token
