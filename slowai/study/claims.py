"""Sharing one study between workers: claiming trials from the storage, finding trials whose worker is gone, and
closing failed ones by class.

Counting finished trials from the storage (never a local counter) is what lets several workers share one budget.
Lost workers are found by the lease of `slowai.study.lease` (a heartbeat through the storage, on every storage
kind): such a trial is marked FAIL with a reason and re-queued as a WAITING copy with the same hyperparameters and
seed (Optuna's `RetryHeartbeatStaleTrialCallback`), which the next `ask` of any worker pops. A trial that fails by
itself is closed by class (`slowai.study.failures`): an error is final (it uses up its tune slot or confirm seed
and the report names it), out-of-memory is retried once, an interrupt is left to the next run.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from slowai.study import failures
from slowai.study.lease import Heartbeat, Watch
from slowai.study.spec import StudyError
from slowai.study.storage import Liveness, existing_names, optuna_name

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMED = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
RETRY_ATTRS = ("slot", "seed", "params_key", "oom_retries")  # what a retried trial keeps: the run it stands for


# ------------------------------------------------------------------------------------------- trial ids
def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    """The storage's id of trial `number`, by public API (Optuna keeps it in private attributes only)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def is_final(t: FrozenTrial) -> bool:
    """A FAIL that will not be retried (an error, or out-of-memory twice): it uses up its slot or seed."""
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("final"))


# ------------------------------------------------------------------------------------------- lost workers
def fail_lost_trials(storage: BaseStorage, study: optuna.Study, watch: Watch, max_retry: int) -> list[int]:
    """Mark trials of lost workers FAIL with a reason and queue one retry of each; returns their numbers.

    Several workers may find the same lost trial: the storage lets one FAIL transition win, and only the winner
    queues the retry, so each lost trial is retried once.
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    failed = []
    for number, why in watch.lost(study.study_name, running).items():
        tid = trial_id(storage, study.study_name, number)
        if close(storage, tid, why, "lost"):
            retry(study, storage.get_trial(tid), max_retry)
            failed.append(number)
    return failed


def close(storage: BaseStorage, tid: int, why: str, failure: str, final: bool = False) -> bool:
    """RUNNING → FAIL with its reason and class; False when another worker finished or failed it first."""
    try:
        for k, v in {"fail_reason": why, "failure": failure, "final": final}.items():
            storage.set_trial_user_attr(tid, k, v)
        return bool(storage.set_trial_state_values(tid, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def retry(study: optuna.Study, trial: FrozenTrial, max_retry: int, **extra: Any) -> None:
    """Queue a WAITING copy of a failed trial (same params; its seed) via Optuna's retry callback.

    Only the claim attrs are copied: the new run gets its own worker, W&B run and timings.
    """
    clean = copy.deepcopy(trial)
    keep = {k: v for k, v in trial.user_attrs.items() if k in RETRY_ATTRS}
    clean.user_attrs = keep | extra | {"retry_of": trial.number}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, clean)


# ------------------------------------------------------------------------------------------- holding a trial
@contextmanager
def hold(
    storage: BaseStorage, live: Liveness, study: optuna.Study, trial: optuna.Trial, label: str
) -> Iterator[Heartbeat]:
    """While this worker holds a trial its lease beats; an error, wherever it strikes (W&B start, training, storage
    writes), closes the trial by its class (`slowai.study.failures`), so it is never left RUNNING by a live worker."""
    tid = trial_id(storage, study.study_name, trial.number)
    try:
        with Heartbeat(storage, tid, live.heartbeat_interval) as beat:
            yield beat
    except UpdateFinishedTrialError:
        raise failures.Dropped(f"{label}: declared lost meanwhile; its late result is dropped") from None
    except (failures.TrialFailed, failures.Dropped):
        raise
    except BaseException as e:
        _close_failed(storage, live, study, tid, trial, e, label)
        raise


def _close_failed(
    storage: BaseStorage,
    live: Liveness,
    study: optuna.Study,
    tid: int,
    trial: optuna.Trial,
    e: BaseException,
    label: str,
) -> None:
    """Close a trial that raised `e` by class, then raise what the worker should do next (see `failures`)."""
    k, why = failures.kind(e), failures.reason(e)
    if k == failures.STORAGE:
        raise failures.StorageDown(f"{label}: storage unreachable ({why})") from e
    oom_retries = int(trial.user_attrs.get("oom_retries", 0))
    final = k == failures.ERROR and not isinstance(e, StudyError) or (k == failures.OOM and oom_retries >= 1)
    try:
        closed = close(storage, tid, why, k, final)
    except Exception as store_e:  # noqa: BLE001 - the storage went away too: the lease brings the trial back
        if failures.storage_error(store_e):
            raise failures.StorageDown(f"{label}: storage unreachable ({failures.reason(store_e)})") from e
        raise
    if k == failures.INTERRUPTED or isinstance(e, StudyError):
        return  # the caller re-raises: the worker stops, the next run retries the trial
    if not closed:
        raise failures.Dropped(f"{label}: declared lost meanwhile; its late result is dropped") from e
    if final:
        raise failures.TrialFailed(f"{label}: failed for good ({why})") from e
    failures.free_memory()
    retry(study, storage.get_trial(tid), live.max_retry, oom_retries=oom_retries + 1)
    raise failures.TrialFailed(f"{label}: out of memory ({why}); retrying it once") from e


# ------------------------------------------------------------------------------------------- claiming work
def count(trials: Iterable[FrozenTrial], states: Iterable[TrialState]) -> int:
    states = tuple(states)
    return sum(t.state in states for t in trials)


def slots(trials: Iterable[FrozenTrial], states: Iterable[TrialState]) -> int:
    """Tune slots used: trials in `states` plus final failures (a trial that errors is not drawn again)."""
    states = tuple(states)
    return sum(t.state in states or is_final(t) for t in trials)


def tune_open(study: optuna.Study, wanted: int) -> bool:
    """Should a worker ask for a tune trial? Fewer than `wanted` are finished or running (ask pops retries first)."""
    return slots(study.get_trials(deepcopy=False), (*FINISHED, TrialState.RUNNING)) < wanted


def tune_done(study: optuna.Study, wanted: int) -> bool:
    """Has the candidate's tuning finished everywhere (so its best params are final)?"""
    return slots(study.get_trials(deepcopy=False), FINISHED) >= wanted


def tune_slot(study: optuna.Study, trial: optuna.Trial, wanted: int) -> int | None:
    """After `ask`: the tune slot this trial fills (a retry keeps its own), or None if earlier trials (finished,
    running, queued retries) already fill the budget.

    Counting then asking is not atomic across workers; trial numbers are, so the later trial steps back. Earlier
    trials that hold no slot yet (asked the same moment by another worker) take the free slots first, in number
    order, so two trials asked together never pick the same one. The slot, not the trial number, seeds the run and
    its sampler: a study whose workers were killed and restarted draws the same trials as one that ran undisturbed.
    """
    if "slot" in trial.user_attrs:
        return int(trial.user_attrs["slot"])
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    if slots(earlier, CLAIMED) >= wanted:
        return None
    claimed = [t for t in earlier if _occupies(t)]
    free = sorted(set(range(wanted)) - {t.user_attrs.get("slot") for t in claimed})
    choosing = sum("slot" not in t.user_attrs for t in claimed)
    return free[choosing] if choosing < len(free) else None


def slot_duplicate(study: optuna.Study, trial: optuna.Trial, slot: int) -> bool:
    """Does an earlier live trial hold this slot? (A new trial can take a lost one's slot in the moment between its
    FAIL and its queued retry; the retry, numbered later, then steps back.)"""
    return any(
        t.number < trial.number and t.user_attrs.get("slot") == slot and _occupies(t)
        for t in study.get_trials(deepcopy=False)
    )


def _occupies(t: FrozenTrial) -> bool:
    """Running, queued, finished or failed for good: the trial's slot is not free for another."""
    return t.state in CLAIMED or is_final(t)


def mark_failed(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Close a claimed trial as FAIL with a readable reason (kept in the storage for the post-mortem)."""
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)


def confirm_key(params: dict[str, Any]) -> str:
    """Identifies the hyperparameters a confirm run used: results of an older best trial are never mixed in."""
    return ";".join(f"{k}={params[k]!r}" for k in sorted(params))


def _runs_of(study: optuna.Study, key: str, states: tuple[TrialState, ...]) -> list[FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False, states=states)
        if t.user_attrs.get("params_key") == key and "seed" in t.user_attrs
    ]


def confirm_claimed(study: optuna.Study, key: str) -> set[int]:
    """Seeds already done, running or failed for good for these hyperparameters."""
    live = {int(t.user_attrs["seed"]) for t in _runs_of(study, key, (TrialState.COMPLETE, TrialState.RUNNING))}
    return live | confirm_failed(study, key)


def confirm_failed(study: optuna.Study, key: str) -> set[int]:
    """Seeds whose run failed for good (an error, or out of memory twice): not run again."""
    return {int(t.user_attrs["seed"]) for t in _runs_of(study, key, (TrialState.FAIL,)) if is_final(t)}


def confirm_done(study: optuna.Study, key: str) -> set[int]:
    """Seeds finished for these hyperparameters."""
    return {int(t.user_attrs["seed"]) for t in _runs_of(study, key, (TrialState.COMPLETE,))}


def confirm_queued(study: optuna.Study, key: str, seed: int) -> bool:
    """Is a WAITING trial for (key, seed) already queued (a retry or another worker's claim)? Then pop, don't add."""
    return any(t.user_attrs["seed"] == seed for t in _runs_of(study, key, (TrialState.WAITING,)))


def confirm_duplicate(study: optuna.Study, trial: optuna.Trial, key: str, seed: int) -> bool:
    """Did another worker claim (key, seed) with an earlier trial while this one was being created?"""
    return any(
        t.number < trial.number and t.user_attrs.get("seed") == seed
        for t in _runs_of(study, key, (TrialState.COMPLETE, TrialState.RUNNING))
    )


def best_trial(trials: Iterable[FrozenTrial]) -> FrozenTrial | None:
    """The completed tune trial with the highest value: the hyperparameters a candidate is confirmed with."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return max(done, key=lambda t: t.value) if done else None


def confirmed_runs(storage: BaseStorage, study: str, candidate: str) -> tuple[FrozenTrial | None, list[FrozenTrial]]:
    """(best tune trial, its completed confirm runs by seed): confirm runs count only if they used the current best
    hyperparameters, so results of an older best trial are never mixed in."""
    names = existing_names(storage)
    tn, cn = (optuna_name(study, candidate, s) for s in ("tune", "confirm"))
    if tn not in names:
        return None, []
    best = best_trial(optuna.load_study(study_name=tn, storage=storage).get_trials(deepcopy=False))
    if best is None or cn not in names:
        return best, []
    key = confirm_key(best.params)
    conf = optuna.load_study(study_name=cn, storage=storage).get_trials(states=(TrialState.COMPLETE,))
    by_seed = {t.user_attrs["seed"]: t for t in conf if t.user_attrs.get("params_key") == key}
    return best, [by_seed[s] for s in sorted(by_seed)]
