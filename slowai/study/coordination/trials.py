"""One trial between workers: holding it, finding trials whose worker is gone, closing failed ones by class, and
queueing their retries.

Lost workers are found by the lease of `lease` (a heartbeat through the storage, on every storage
kind): such a trial is marked FAIL with a reason and re-queued as a WAITING copy with the same hyperparameters,
slot and seed (Optuna's `RetryHeartbeatStaleTrialCallback`), which the next `ask` of any worker pops. A trial that
fails by itself is closed by class (`failures`): an error is final (it uses up its tune slot or confirm
seed and the report names it), out-of-memory is retried once, an interrupt is queued for the next run. Attempts
belong to the slot or seed, counted from the storage: after `max_retry` retries it is failed for good. What is
queued and popped is `workqueue`.
"""

from __future__ import annotations

import copy
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from slowai.study.coordination import failures
from slowai.study.coordination.lease import Heartbeat, Liveness, Watch
from slowai.study.coordination.patience import StorageUnreachable
from slowai.study.spec import StudyError

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
DRAWN = "drawn"  # user attr: a tune trial's space was drawn to the end (its retries keep those params)
RETRY_ATTRS = ("slot", "seed", "params_key", "oom_retries", DRAWN)  # what a retry keeps: the run it stands for
QUEUED_PARAMS = "queued_params"  # user attr: the params a queued trial must run (its retries run them too)
ATTEMPTS = (failures.LOST, failures.DEADLINE, failures.OOM)  # failures that use up one of a slot's or seed's tries


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
    queues the retry, so each lost trial is retried once (or, past `max_retry`, failed for good).
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    since = getattr(getattr(storage, "patience", None), "recovered_at", 0.0)  # an outage is nobody's silence
    failed = []
    for number, why in watch.lost(study.study_name, running, since).items():
        kind = failures.DEADLINE if why.startswith("deadline") else failures.LOST
        if fail_and_requeue(storage, study, trial_id(storage, study.study_name, number), why, kind, max_retry):
            failed.append(number)
    return failed


def fail_and_requeue(
    storage: BaseStorage, study: optuna.Study, tid: int, why: str, kind: str, max_retry: int, **extra: Any
) -> bool:
    """Close a RUNNING trial as FAIL and queue its retry, or fail it for good once its slot or seed has had
    `max_retry` retries; False when another worker finished or failed it first."""
    trial = storage.get_trial(tid)
    tries = attempts(study, trial) + 1 if kind in ATTEMPTS else 0
    final = tries > max_retry
    if final:
        why = f"{why}; failed for good after {tries} attempts"
    if not close(storage, tid, why, kind, final, attempt=tries):
        return False
    if not final:
        retry(study, storage.get_trial(tid), **extra)
    return True


def attempts(study: optuna.Study, trial: FrozenTrial) -> int:
    """Failed tries so far at the run `trial` stands for (its tune slot, or its confirm seed and hyperparameters)."""
    unit = unit_of(trial)
    if unit is None:
        return 0
    done = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return sum(unit_of(t) == unit and t.user_attrs.get("failure") in ATTEMPTS for t in done)


def unit_of(t: FrozenTrial) -> tuple | None:
    """What a trial stands for: ('slot', s) for a tune trial, ('seed', params key, s) for a confirm run."""
    a = t.user_attrs
    if "slot" in a:
        return ("slot", a["slot"])
    return ("seed", a.get("params_key"), a["seed"]) if "seed" in a else None


def close(storage: BaseStorage, tid: int, why: str, failure: str, final: bool = False, **attrs: Any) -> bool:
    """RUNNING → FAIL with its reason and class; False when another worker finished or failed it first. (The attrs go
    first: a finished trial takes no writes. They mean something only on a FAIL trial.)"""
    try:
        for k, v in {"fail_reason": why, "failure": failure, "final": final, **attrs}.items():
            storage.set_trial_user_attr(tid, k, v)
        return bool(storage.set_trial_state_values(tid, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def retry(study: optuna.Study, trial: FrozenTrial, **extra: Any) -> None:
    """Queue a WAITING copy of a failed trial (same params; its slot or seed) via Optuna's retry callback.

    Only the claim attrs are copied: the new run gets its own worker, W&B run and timings. The params it must use go
    along as `queued_params` too: a retry killed before its space was drawn has no params of its own, and its retry
    must still run the same ones. A tune trial killed mid-draw is queued as its slot again, with nothing fixed: kept,
    its drawn prefix would shift the seeded sampler's stream, so the rest would not be what the slot draws. How often
    a slot or seed may be retried is counted by `fail_and_requeue`, not by the callback (whose count a fresh trial
    would reset).
    """
    cut_short = "slot" in trial.user_attrs and not trial.user_attrs.get(DRAWN)
    params = {} if cut_short else dict(trial.params) or dict(trial.user_attrs.get(QUEUED_PARAMS, {}))
    keep = {k: v for k, v in trial.user_attrs.items() if k in RETRY_ATTRS}
    attrs = keep | extra | {"retry_of": trial.number, QUEUED_PARAMS: params}
    if cut_short or not trial.params:  # nothing (or not all) drawn yet: queue the params it was given
        study.enqueue_trial(params, user_attrs=attrs)
        return
    clean = copy.deepcopy(trial)
    clean.user_attrs = attrs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, clean)


# ------------------------------------------------------------------------------------------- holding a trial
@contextmanager
def hold(storage: BaseStorage, live: Liveness, study: optuna.Study, trial: optuna.Trial, label: str) -> Iterator[None]:
    """While this worker holds a trial its lease beats and its deadline runs; an error, wherever it strikes (W&B
    start, training, storage writes), closes the trial by its class (`failures`), so it is never left
    RUNNING by a live worker."""
    with hold_all(storage, live, study, [trial], label):
        yield


@contextmanager
def hold_all(
    storage: BaseStorage, live: Liveness, study: optuna.Study, trials: Sequence[optuna.Trial], label: str
) -> Iterator[None]:
    """`hold` for trials trained together (a fused batch): each beats, one deadline of `len(trials)` runs covers them
    all, and an error closes every one of them by its class before the worker hears of it once."""
    tids = [trial_id(storage, study.study_name, t.number) for t in trials]
    deadline = live.trial_timeout * len(trials) if live.trial_timeout is not None else None
    try:
        with ExitStack() as beats:
            for tid, t in zip(tids, trials):
                key = (study.study_name, t.number)
                beats.enter_context(Heartbeat(storage, tid, live.heartbeat_interval, key, deadline))
            with _deadline(deadline):
                yield
    except UpdateFinishedTrialError:
        raise failures.Dropped(f"{label}: declared lost meanwhile; its late result is dropped") from None
    except (failures.TrialFailed, failures.Dropped):
        raise
    except BaseException as e:
        said = []
        for tid, t in zip(tids, trials):
            try:
                _close_failed(storage, live, study, tid, t, e, label)
            except (failures.TrialFailed, failures.Dropped, StorageUnreachable) as signal_:
                said.append(signal_)
        if said:  # an outage first (it stops the worker), else what the first trial's class says
            raise next((x for x in said if isinstance(x, StorageUnreachable)), said[0]) from e
        if failures.interrupted(e) and not isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise KeyboardInterrupt from e  # the worker stops as on Ctrl-C, whatever error the interruption caused
        raise


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise TrialDeadline in this (main) thread after `seconds`; off the main thread, or where the caller's own
    alarm is already set (never clobbered), the other workers' watch enforces it."""
    main = threading.current_thread() is threading.main_thread()
    if seconds is None or not main or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return

    def expire(*_: Any) -> None:
        raise failures.TrialDeadline(f"deadline: running for over {seconds:g} s (--trial-timeout)")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


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
    if k == failures.STORAGE:  # patience ran out: nothing can be recorded; the others' watch takes the trial over
        raise StorageUnreachable(f"{label}: {failures.first_line(e)}") from e
    oom_retries = int(trial.user_attrs.get("oom_retries", 0))
    if k == failures.ERROR and not isinstance(e, StudyError) or (k == failures.OOM and oom_retries >= 1):
        if close(storage, tid, why, k, True):
            raise failures.TrialFailed(f"{label}: failed for good ({why})") from e
        raise failures.Dropped(f"{label}: declared lost meanwhile; its late result is dropped") from e
    extra = {"oom_retries": oom_retries + 1} if k == failures.OOM else {}
    failures.free_memory()
    if not fail_and_requeue(storage, study, tid, why, k, live.max_retry, **extra):
        raise failures.Dropped(f"{label}: declared lost meanwhile; its late result is dropped") from e
    if k == failures.INTERRUPTED or isinstance(e, StudyError):
        return  # the caller re-raises: the worker stops, the next run pops the queued retry
    raise failures.TrialFailed(f"{label}: {why}; queued again") from e
