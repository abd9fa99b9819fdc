"""Where trials live: Optuna storages, one Optuna study per (candidate, stage), and claiming work from them.

The embedded default is a JournalStorage over a journal file: appends under a file lock, so several local worker
processes can share it safely (SQLite is not built for that), and both `optuna` CLI and optuna-dashboard read it
from its plain path. Any Optuna URL (postgresql://, mysql://, sqlite:///, redis://) or journal path also works.
Counting finished trials from the storage (never a local counter) is what lets several workers share one budget.

Lost workers: on RDB storages (PostgreSQL, MySQL, SQLite) every running trial records a heartbeat (Optuna's
heartbeat thread); a trial whose heartbeat is older than the grace period belongs to a dead or cut-off worker. The
journal storage has no heartbeats in this Optuna version, so there a RUNNING trial counts as lost when its worker
process on this host is gone. Either way the trial is marked FAIL with a reason and re-queued once as a WAITING copy
(Optuna's `RetryHeartbeatStaleTrialCallback`) that the next `ask` of any worker pops.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import socket
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeatThread, get_heartbeat_thread, is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend
from optuna.trial import FrozenTrial, TrialState

from slowai.study.spec import StudyError

JOURNAL_NAME = "optuna.journal"
STAGES = ("tune", "confirm")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
CLAIMED = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
URL_SCHEMES = (*RDB_SCHEMES, "redis", "rediss")
CONNECT_TIMEOUT_S = 5  # a dead or firewalled database server fails the command in seconds, never hangs it
SCHEMA_RACE_TRIES = 5  # workers starting together on a fresh database all try to create Optuna's tables
RETRY_ATTRS = ("seed", "params_key")  # what a retried trial must keep: the confirm run it stands for


@dataclass(frozen=True)
class Liveness:
    """How lost workers are found: RDB heartbeats every `heartbeat_interval` s, stale after `grace_period` s
    (default twice the interval); a lost trial is retried up to `max_retry` times."""

    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1 or (self.grace_period is not None and self.grace_period <= 0):
            raise StudyError("heartbeat interval and grace period must be positive seconds")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise StudyError(
                f"grace period ({self.grace_period} s) must exceed the heartbeat interval ({self.heartbeat_interval} s)"
            )


def default_storage_path(out_dir: Path) -> Path:
    return Path(out_dir) / JOURNAL_NAME


def _scheme(url: str) -> str:
    """'postgresql' for 'postgresql+psycopg2://...'; '' for a journal path."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", url)
    scheme = m.group(1).split("+", 1)[0].lower() if m else ""
    return scheme if "://" in url or scheme in URL_SCHEMES else ""


def normalize_url(url: str) -> str:
    """`postgres://` and a driverless `postgresql://` → the installed driver (SQLAlchemy 2.1 defaults to psycopg 3)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None:
        if importlib.util.find_spec("psycopg2") is not None:
            url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def display_url(url: str) -> str:
    """The URL with its password masked: what logs, reports and storage attrs show."""
    if "://" not in url or "@" not in url:
        return url
    return re.sub(r"^([^:/]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def check_storage_url(url: str) -> None:
    """Fail fast (StudyError) on a URL Optuna cannot open, without creating anything for a journal path."""
    scheme = _scheme(url)
    if scheme and "://" not in url:
        raise StudyError(f"malformed storage URL {url!r}: expected {scheme}://[user[:password]@]host[:port]/database")
    if scheme in ("redis", "rediss"):
        return
    if scheme in RDB_SCHEMES:
        if scheme == "sqlite":
            target = url.split(":///", 1)[-1]
            if target and target != ":memory:" and not Path(target).expanduser().parent.is_dir():
                raise StudyError(f"cannot open storage {url!r}: directory {Path(target).parent} does not exist")
        return
    if "://" in url:
        raise StudyError(
            f"unreadable storage URL {display_url(url)!r}: use a journal file path or {', '.join(RDB_SCHEMES)}://"
        )
    path = Path(url).expanduser()
    if path.is_dir():
        raise StudyError(f"storage {url!r} is a directory; give a journal file path such as {path / JOURNAL_NAME}")
    if path.exists() and path.stat().st_size and not _looks_like_journal(path):
        raise StudyError(f"storage {url!r} exists but is not an Optuna journal file")


def _looks_like_journal(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == b"{"


def open_storage(url: str, liveness: Liveness | None = None) -> BaseStorage:
    """An Optuna storage for a URL or journal file path; connection problems become one StudyError line, quickly."""
    url = normalize_url(url)
    check_storage_url(url)
    try:
        if _scheme(url) in ("redis", "rediss"):
            return JournalStorage(JournalRedisBackend(url))
        if "://" in url:
            return _rdb(url, liveness or Liveness())
        path = Path(url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:  # sqlalchemy/redis errors: one line, not a stack of driver frames
        raise StudyError(f"cannot open storage {display_url(url)!r}: {_first_line(e)}") from None


def _rdb(url: str, live: Liveness) -> RDBStorage:
    """RDBStorage with heartbeats and a bounded connect time (pre-ping: a dropped connection is reopened)."""
    kwargs: dict[str, Any] = {}
    if _scheme(url) in ("postgresql", "mysql", "mariadb"):
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    for attempt in range(1, SCHEMA_RACE_TRIES):
        try:
            return _new_rdb(url, kwargs, live)
        except Exception as e:
            if not _lost_schema_race(e):
                raise
            time.sleep(0.1 * attempt)  # another worker created the tables meanwhile: the next try finds them
    return _new_rdb(url, kwargs, live)


def _new_rdb(url: str, engine_kwargs: dict[str, Any], live: Liveness) -> RDBStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        beats = {"heartbeat_interval": live.heartbeat_interval, "grace_period": live.grace_period}
        return RDBStorage(url, engine_kwargs=engine_kwargs, **beats)


def _lost_schema_race(e: BaseException) -> bool:
    """Concurrent CREATE TABLE on PostgreSQL fails with a duplicate pg_type key or 'already exists'."""
    text = str(e)
    return "duplicate key value" in text or "already exists" in text


def _first_line(e: BaseException) -> str:
    """'FATAL: password authentication failed ...' out of '(psycopg2.OperationalError) connection ... failed: ...'."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"^\([\w.]+\)\s*", "", text)


def cli_hint(url: str) -> str:
    """The exact `optuna` CLI and dashboard commands that read this storage."""
    return f"optuna studies --storage {url}\noptuna-dashboard {url}"


def optuna_name(study: str, candidate: str, stage: str) -> str:
    """`<study>/<candidate>/<stage>`: one Optuna study per candidate and stage (claimable, comparable panels)."""
    return f"{study}/{candidate}/{stage}"


def existing_names(storage: BaseStorage) -> set[str]:
    return {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


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
