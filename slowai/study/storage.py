"""Where trials live: Optuna storages, one Optuna study per (candidate, stage), and claiming work from them.

The embedded default is a JournalStorage over a journal file: appends under a file lock, so several local worker
processes can share it safely (SQLite is not built for that), and both `optuna` CLI and optuna-dashboard read it
from its plain path. Any Optuna URL (postgresql://, mysql://, sqlite:///, redis://) or journal path also works.
Counting finished trials from the storage (never a local counter) is what lets several workers share one budget.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend
from optuna.trial import FrozenTrial, TrialState

from slowai.study.spec import StudyError

JOURNAL_NAME = "optuna.journal"
STAGES = ("tune", "confirm")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def default_storage_path(out_dir: Path) -> Path:
    return Path(out_dir) / JOURNAL_NAME


def check_storage_url(url: str) -> None:
    """Fail fast (StudyError) on a URL Optuna cannot open, without creating anything for a journal path."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme == "redis":
        return
    if scheme in RDB_SCHEMES:
        if scheme == "sqlite":
            target = url.split(":///", 1)[-1]
            if target and target != ":memory:" and not Path(target).expanduser().parent.is_dir():
                raise StudyError(f"cannot open storage {url!r}: directory {Path(target).parent} does not exist")
        return
    if "://" in url:
        raise StudyError(f"unreadable storage URL {url!r}: use a journal file path or {', '.join(RDB_SCHEMES)}://")
    path = Path(url).expanduser()
    if path.is_dir():
        raise StudyError(f"storage {url!r} is a directory; give a journal file path such as {path / JOURNAL_NAME}")
    if path.exists() and path.stat().st_size and not _looks_like_journal(path):
        raise StudyError(f"storage {url!r} exists but is not an Optuna journal file")


def _looks_like_journal(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"{"


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for a URL or journal file path; connection problems become one StudyError line."""
    check_storage_url(url)
    try:
        if url.startswith("redis://") or url.startswith("rediss://"):
            return JournalStorage(JournalRedisBackend(url))
        if "://" in url:
            return RDBStorage(url, engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
        path = Path(url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:  # sqlalchemy/redis errors: one line, not a stack of driver frames
        raise StudyError(f"cannot open storage {url!r}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def cli_hint(url: str) -> str:
    """The exact `optuna` CLI and dashboard commands that read this storage."""
    return f"optuna studies --storage {url}\noptuna-dashboard {url}"


def optuna_name(study: str, candidate: str, stage: str) -> str:
    """`<study>/<candidate>/<stage>`: one Optuna study per candidate and stage (claimable, comparable panels)."""
    return f"{study}/{candidate}/{stage}"


def existing_names(storage: BaseStorage) -> set[str]:
    return {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


# ------------------------------------------------------------------------------------------- claiming work
WORKER = f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_dead_local_trials(study: optuna.Study) -> list[int]:
    """Mark RUNNING trials whose worker process on THIS host is gone as FAIL (a killed run), so they are redone."""
    host = socket.gethostname()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker", ""))
        w_host, _, pid = worker.rpartition(":")
        if w_host == host and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker process died")
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            failed.append(t.number)
    return failed


def count(trials: Iterable[FrozenTrial], states: Iterable[TrialState]) -> int:
    states = tuple(states)
    return sum(t.state in states for t in trials)


def tune_slots_left(study: optuna.Study, wanted: int) -> int:
    """Trials still to start: `wanted` minus finished (complete or pruned) minus running (claimed by a worker)."""
    trials = study.get_trials(deepcopy=False)
    return max(0, wanted - count(trials, (*FINISHED, TrialState.RUNNING)))


def is_surplus(study: optuna.Study, trial: optuna.Trial, wanted: int) -> bool:
    """After `ask`: did other workers claim the budget first? (Counting then asking is not atomic across workers.)"""
    earlier = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
    return count(earlier, (*FINISHED, TrialState.RUNNING)) >= wanted


def mark_failed(study: optuna.Study, trial: optuna.Trial, reason: str) -> None:
    """Close a claimed trial as FAIL with a readable reason (kept in the storage for the post-mortem)."""
    trial.set_user_attr("fail_reason", reason)
    study.tell(trial, state=TrialState.FAIL)


def confirm_key(params: dict[str, Any]) -> str:
    """Identifies the hyperparameters a confirm run used: results of an older best trial are never mixed in."""
    return ";".join(f"{k}={params[k]!r}" for k in sorted(params))


def confirm_claimed(study: optuna.Study, key: str) -> set[int]:
    """Seeds already done or running for these hyperparameters."""
    return {
        int(t.user_attrs["seed"])
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if t.user_attrs.get("params_key") == key and "seed" in t.user_attrs
    }


def confirm_duplicate(study: optuna.Study, trial: optuna.Trial, key: str, seed: int) -> bool:
    """Did another worker claim (key, seed) with an earlier trial while this one was being created?"""
    return any(
        t.number < trial.number and t.user_attrs.get("params_key") == key and t.user_attrs.get("seed") == seed
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    )
