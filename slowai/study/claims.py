"""Sharing one study between workers: claiming trials from the storage, and finding trials whose worker is gone.

Counting finished trials from the storage (never a local counter) is what lets several workers share one budget.
Lost workers: on RDB storages (PostgreSQL, MySQL, SQLite) every running trial records a heartbeat (Optuna's
heartbeat thread); a trial whose heartbeat is older than the grace period belongs to a dead or cut-off worker. The
journal storage has no heartbeats in this Optuna version, so there a RUNNING trial counts as lost when its worker
process on this host is gone. Either way the trial is marked FAIL with a reason and re-queued once as a WAITING copy
(Optuna's `RetryHeartbeatStaleTrialCallback`) that the next `ask` of any worker pops.
"""

from __future__ import annotations

import copy
import os
import socket
import warnings
from collections.abc import Iterable
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeatThread, get_heartbeat_thread, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

from slowai.study.storage import Liveness, existing_names, optuna_name

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMED = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
RETRY_ATTRS = ("seed", "params_key")  # what a retried trial must keep: the confirm run it stands for


# ------------------------------------------------------------------------------------------- lost workers
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dead_local(t: FrozenTrial) -> bool:
    """Was this RUNNING trial claimed by a process on this host that no longer exists?"""
    w_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
    return w_host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))


def lost_trials(study: optuna.Study) -> dict[int, str]:
    """RUNNING trials whose worker is gone → the reason: heartbeat stale (RDB) or process dead on this host."""
    running = {t._trial_id: t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    lost = {tid: f"worker {t.user_attrs['worker']} died (process gone)" for tid, t in running.items() if _dead_local(t)}
    storage = study._storage
    if is_heartbeat_enabled(storage):
        for tid in storage._get_stale_trial_ids(study._study_id):
            worker = running[tid].user_attrs.get("worker", "?") if tid in running else "?"
            lost[tid] = f"worker {worker} lost: no heartbeat within the grace period"
    return lost


def fail_lost_trials(study: optuna.Study, max_retry: int = Liveness.max_retry) -> list[int]:
    """Mark trials of dead workers FAIL with a reason and queue one retry of each; returns their numbers.

    Several workers may find the same lost trial: the storage lets one FAIL transition win, and only the winner
    queues the retry, so each lost trial is retried once.
    """
    failed = []
    for trial_id, reason in lost_trials(study).items():
        if _fail(study._storage, trial_id, reason):
            frozen = study._storage.get_trial(trial_id)
            retry(study, frozen, max_retry)
            failed.append(frozen.number)
    return failed


def _fail(storage: BaseStorage, trial_id: int, reason: str) -> bool:
    """RUNNING → FAIL with `fail_reason`; False when another worker finished or failed it first."""
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def retry(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> None:
    """Queue a WAITING copy of a lost trial (same params; a confirm run keeps its seed) via Optuna's retry callback.

    Only the claim attrs are copied: the new run gets its own worker, W&B run and timings.
    """
    clean = copy.deepcopy(trial)
    clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k in RETRY_ATTRS} | {"retry_of": trial.number}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, clean)


def ask(study: optuna.Study) -> optuna.Trial:
    """`study.ask()` without Optuna's warning that heartbeats expect `optimize` (`heartbeat` below runs them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        return study.ask()


def heartbeat(study: optuna.Study, trial: optuna.Trial) -> BaseHeartbeatThread:
    """Context manager: Optuna's heartbeat thread for this trial while it runs (a no-op on journal storages)."""
    return get_heartbeat_thread(trial._trial_id, study._storage)


# ------------------------------------------------------------------------------------------- claiming work
def count(trials: Iterable[FrozenTrial], states: Iterable[TrialState]) -> int:
    states = tuple(states)
    return sum(t.state in states for t in trials)


def tune_open(study: optuna.Study, wanted: int) -> bool:
    """Should a worker ask for a tune trial? Fewer than `wanted` are finished or running (ask pops retries first)."""
    return count(study.get_trials(deepcopy=False), (*FINISHED, TrialState.RUNNING)) < wanted


def tune_done(study: optuna.Study, wanted: int) -> bool:
    """Has the candidate's tuning finished everywhere (so its best params are final)?"""
    return count(study.get_trials(deepcopy=False), FINISHED) >= wanted


def is_surplus(study: optuna.Study, trial: optuna.Trial, wanted: int) -> bool:
    """After `ask`: did earlier trials (finished, running or queued retries) already fill the budget?

    Counting then asking is not atomic across workers; trial numbers are, so the later trial steps back.
    """
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    return count(earlier, CLAIMED) >= wanted


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
    """Seeds already done or running for these hyperparameters."""
    return {int(t.user_attrs["seed"]) for t in _runs_of(study, key, (TrialState.COMPLETE, TrialState.RUNNING))}


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
