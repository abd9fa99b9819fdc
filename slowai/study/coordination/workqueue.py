"""The work queue: every tune slot and confirm seed is one WAITING trial, queued once, that workers pop.

Why a queue and not counting: Optuna's `ask()` moves one WAITING trial to RUNNING atomically in every storage, so
exactly one worker gets each queued slot or seed, whatever the timing; counting finished and running trials from a
snapshot let two workers take the same slot. Each batch of work (a candidate's tune slots for a budget, a confirm
round's seeds for the current best hyperparameters) is queued by the one worker that claims it first
(`first_writer.first_claim`); the others only pop. A retry is queued by whoever closed the lost
trial (the FAIL transition has one winner), so it needs no claim.

The only counting left is a safety net for a queue its filler never finished (killed between its claim and its
last enqueue) or that a retry's closer left empty (killed between closing a lost trial and queueing its retry):
when nothing of a batch is queued or running anywhere, any worker queues what is missing (`refill_slots`,
`refill_seeds`: the retry a failed try is owed, with its params and `retry_of`, else a fresh slot or seed), and a
pop whose slot or seed an earlier live trial already holds steps back (`holds_earlier`), so a race there costs one
surplus trial, never a lost or doubled run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from slowai.study.coordination.first_writer import first_claim
from slowai.study.coordination.readback import confirm_key
from slowai.study.coordination.trials import FINISHED, QUEUED_PARAMS, is_final, retry, unit_of

LIVE = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
SURPLUS = "surplus"  # fail_reason prefix of a popped trial that stood for no work (never counted, never reported)


def occupies(t: FrozenTrial) -> bool:
    """Queued, running, finished or failed for good: its slot or seed is taken. (A FAIL that is not final has a
    retry queued by whoever closed it.)"""
    return t.state in LIVE or is_final(t)


# ------------------------------------------------------------------------------------------- tune slots
def missing_slots(study: optuna.Study, wanted: int) -> list[int]:
    """Tune slots of `range(wanted)` that no trial stands for."""
    taken = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False) if occupies(t)}
    return [s for s in range(wanted) if s not in taken]


def queue_tune_slots(storage: Any, study_name: str, study: optuna.Study, candidate: str, wanted: int) -> list[int]:
    """Queue the candidate's missing tune slots, if this worker is the first to claim this budget's batch."""
    missing = missing_slots(study, wanted)
    if missing and first_claim(storage, study_name, f"{candidate}/tune/{wanted}"):
        enqueue_slots(study, missing)
        return missing
    return []


def enqueue_slots(study: optuna.Study, slots: Iterable[int]) -> None:
    for slot in slots:
        study.enqueue_trial({}, user_attrs={"slot": slot})


def refill_slots(study: optuna.Study, wanted: int) -> list[int]:
    """Queue the tune slots nothing stands for (no claim: called only when nothing runs or waits anywhere)."""
    return _refill(study, missing_slots(study, wanted), lambda s: ("slot", s), lambda s: enqueue_slots(study, [s]))


def tune_done(study: optuna.Study, wanted: int) -> bool:
    """Has every tune slot finished (complete, pruned or failed for good), so the best params are final?"""
    done = {t.user_attrs.get("slot") for t in study.get_trials(deepcopy=False) if t.state in FINISHED or is_final(t)}
    return all(s in done for s in range(wanted))


def has_waiting(study: optuna.Study) -> bool:
    """Is anything queued? (`ask()` on an empty queue would create a trial that stands for no work.)"""
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def holds_earlier(
    study: optuna.Study, trial: optuna.Trial, key: str, value: Any, params_key: str | None = None
) -> bool:
    """Does an earlier live trial stand for the same slot (key 'slot') or seed (key 'seed', same params)? Only a
    refill race can cause it; the later trial steps back."""
    return any(
        t.number < trial.number
        and t.user_attrs.get(key) == value
        and t.user_attrs.get("params_key") == params_key
        and occupies(t)
        for t in study.get_trials(deepcopy=False)
    )


# ------------------------------------------------------------------------------------------- confirm seeds
def _runs_of(study: optuna.Study, key: str, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=states)
        if t.user_attrs.get("params_key") == key and "seed" in t.user_attrs
    ]


def missing_seeds(study: optuna.Study, key: str, seeds: Iterable[int]) -> list[int]:
    """Seeds of `seeds` that no run with these hyperparameters stands for."""
    taken = {int(t.user_attrs["seed"]) for t in _runs_of(study, key) if occupies(t)}
    return [s for s in seeds if s not in taken]


def queue_seeds(
    storage: Any, study_name: str, study: optuna.Study, candidate: str, best: dict[str, Any], seeds: list[int]
) -> list[int]:
    """Queue a confirm round's missing seeds with the best params, if this worker claims the round first."""
    key = confirm_key(best)
    missing = missing_seeds(study, key, seeds)
    if missing and first_claim(storage, study_name, f"{candidate}/confirm/{key}/{len(seeds)}"):
        enqueue_seeds(study, best, missing)
        return missing
    return []


def enqueue_seeds(study: optuna.Study, best: dict[str, Any], seeds: Iterable[int]) -> None:
    key = confirm_key(best)
    for seed in seeds:
        study.enqueue_trial(best, user_attrs={"seed": seed, "params_key": key, QUEUED_PARAMS: best})


def refill_seeds(study: optuna.Study, best: dict[str, Any], seeds: Iterable[int]) -> list[int]:
    """Queue the confirm seeds nothing stands for (no claim: called only when nothing runs or waits anywhere)."""
    key = confirm_key(best)
    return _refill(
        study, missing_seeds(study, key, seeds), lambda s: ("seed", key, s), lambda s: enqueue_seeds(study, best, [s])
    )


def owed_retries(study: optuna.Study) -> dict[tuple, FrozenTrial]:
    """unit → the latest failed try (lost, timed out, out of memory, interrupted: not final) that no trial names as
    its retry: whoever closed it died before queueing one."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    owed = [t for t in trials if t.state == TrialState.FAIL and "failure" in t.user_attrs and not is_final(t)]
    return {unit_of(t): t for t in sorted(owed, key=lambda t: t.number) if t.number not in retried}


def _refill(
    study: optuna.Study, missing: list[int], unit: Callable[[int], tuple], fresh: Callable[[int], None]
) -> list[int]:
    """Each missing slot or seed gets the retry its failed try is owed (same params, `retry_of`), else a fresh one."""
    owed = owed_retries(study) if missing else {}
    for m in missing:
        if (t := owed.get(unit(m))) is not None:
            retry(study, t)
        else:
            fresh(m)
    return missing


def mark_surplus(study: optuna.Study, trial: optuna.Trial, why: str) -> None:
    """Close a popped trial that stands for no work: FAIL with a `surplus:` reason (not a failure of anything)."""
    trial.set_user_attr("fail_reason", f"{SURPLUS}: {why}")
    study.tell(trial, state=TrialState.FAIL)
