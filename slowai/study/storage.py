"""Where trials live: Optuna storages, one Optuna study per (candidate, stage), and claiming work from them.

The embedded default is a JournalStorage over a journal file: appends under a file lock, so several local worker
processes can share it safely (SQLite is not built for that), and both `optuna` CLI and optuna-dashboard read it
from its plain path. Any Optuna URL (postgresql://, mysql://, sqlite:///, redis://) or journal path also works.
Claiming trials and finding lost workers is `slowai.study.claims`.
"""

from __future__ import annotations

import importlib.util
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from slowai.study.failures import first_line
from slowai.study.patience import DEFAULT_PATIENCE_S, Patience, PatientStorage
from slowai.study.spec import StudyError

JOURNAL_NAME = "optuna.journal"
STAGES = ("tune", "confirm")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
URL_SCHEMES = (*RDB_SCHEMES, "redis", "rediss")
CONNECT_TIMEOUT_S = 5  # one connection attempt to a dead or firewalled server ends in seconds, never hangs
SCHEMA_RACE_TRIES = 5  # workers starting together on a fresh database all try to create Optuna's tables
JOURNAL_LOCK_GRACE_S = 30  # Optuna breaks a dead writer's journal file lock after this long (JournalFileOpenLock)
TIMEOUT_RUNS, TIMEOUT_FLOOR_S = 5, 900  # default --trial-timeout: 5 estimated runs, never under 15 min (compiles)


@dataclass(frozen=True)
class Liveness:
    """How workers ride out trouble: a heartbeat every `heartbeat_interval` s, a trial lost once its beat has not
    changed for `grace_period` s (default: twice the interval, plus the journal lock's grace on a journal file), each
    tune slot or confirm seed retried at most `max_retry` times, a trial failed past `trial_timeout` s (default:
    from the plan's estimate), and every storage call patient for `storage_patience` s."""

    heartbeat_interval: int = 60
    grace_period: int | None = None
    max_retry: int = 3
    storage_patience: float = DEFAULT_PATIENCE_S
    trial_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.heartbeat_interval < 1 or (self.grace_period is not None and self.grace_period <= 0):
            raise StudyError("heartbeat interval and grace period must be positive seconds")
        if self.grace_period is not None and self.grace_period <= self.heartbeat_interval:
            raise StudyError(
                f"grace period ({self.grace_period} s) must exceed the heartbeat interval ({self.heartbeat_interval} s)"
            )
        if self.max_retry < 0 or not self.storage_patience >= 0 or (self.trial_timeout or 1) <= 0:
            raise StudyError("max retries and storage patience must be >= 0, a trial timeout > 0 seconds")

    @property
    def grace(self) -> float:
        return self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval

    def for_storage(self, url: str) -> Liveness:
        """This liveness on `url`: on a journal file every worker stalls while Optuna breaks a killed writer's lock
        (30 s), so a grace shorter than that plus two beats would declare every live trial lost; refused, with the
        minimum named, or (by default) raised to it."""
        if not is_journal_file(url):
            return self
        least = JOURNAL_LOCK_GRACE_S + 2 * self.heartbeat_interval
        if self.grace_period is None:
            return replace(self, grace_period=least)
        if self.grace_period < least:
            raise StudyError(
                f"--grace-period {self.grace_period} is too short for a journal file storage: a worker killed while "
                f"it holds the journal's lock stalls every worker for {JOURNAL_LOCK_GRACE_S} s, so use at least "
                f"{least} s (30 s + 2 x --heartbeat-interval), or a database storage"
            )
        return self

    def with_default_timeout(self, run_s: float) -> Liveness:
        """A trial timeout derived from the plan's estimate of one run, unless one was given: generous (estimates are
        off by tens of percent on a busy machine), yet finite, so a hung worker cannot hold a trial forever."""
        if self.trial_timeout is not None:
            return self
        return replace(self, trial_timeout=float(max(TIMEOUT_FLOOR_S, round(TIMEOUT_RUNS * run_s))))


def is_journal_file(url: str) -> bool:
    """A journal file path (not a URL): the storage whose file lock has a grace period of its own."""
    return _scheme(url) == ""


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


def open_storage(url: str, patience: Patience | None = None) -> BaseStorage:
    """An Optuna storage for a URL or journal file path whose every call, opening included, waits out an outage for
    `patience` (`slowai.study.patience`; default: fail at once); any other problem is one StudyError line."""
    url = normalize_url(url)
    check_storage_url(url)
    patience = patience or Patience(0, what=repr(display_url(url)))
    patience.what = patience.what or repr(display_url(url))
    try:
        return PatientStorage(patience.call(lambda: _open(url)), patience)
    except StudyError:
        raise
    except Exception as e:  # sqlalchemy/redis errors: one line, not a stack of driver frames
        raise StudyError(f"cannot open storage {display_url(url)!r}: {first_line(e)}") from None


def _open(url: str) -> BaseStorage:
    """The storage itself; an RDB one behind Optuna's own trial cache, as when Optuna is given the URL."""
    if _scheme(url) in ("redis", "rediss"):
        return JournalStorage(JournalRedisBackend(url))  # replays the log: an unreachable server shows here
    if "://" in url:
        return optuna.storages.get_storage(_rdb(url))
    path = Path(url).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _rdb(url: str) -> RDBStorage:
    """RDBStorage with a bounded connect time (pre-ping: a dropped connection is reopened)."""
    kwargs: dict[str, Any] = {}
    if _scheme(url) in ("postgresql", "mysql", "mariadb"):
        kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
    for attempt in range(1, SCHEMA_RACE_TRIES):
        try:
            return RDBStorage(url, engine_kwargs=kwargs)
        except Exception as e:
            if not _lost_schema_race(e):
                raise
            time.sleep(0.1 * attempt)  # another worker created the tables meanwhile: the next try finds them
    return RDBStorage(url, engine_kwargs=kwargs)


def _lost_schema_race(e: BaseException) -> bool:
    """Concurrent CREATE TABLE on PostgreSQL fails with a duplicate pg_type key or 'already exists'."""
    text = str(e)
    return "duplicate key value" in text or "already exists" in text


def cli_hint(url: str) -> str:
    """The exact `optuna` CLI and dashboard commands that read this storage."""
    return f"optuna studies --storage {url}\noptuna-dashboard {url}"


def optuna_name(study: str, candidate: str, stage: str) -> str:
    """`<study>/<candidate>/<stage>`: one Optuna study per candidate and stage (claimable, comparable panels)."""
    return f"{study}/{candidate}/{stage}"


def existing_names(storage: BaseStorage) -> set[str]:
    return {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
