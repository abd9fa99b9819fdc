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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from slowai.study.spec import StudyError

JOURNAL_NAME = "optuna.journal"
STAGES = ("tune", "confirm")
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
URL_SCHEMES = (*RDB_SCHEMES, "redis", "rediss")
CONNECT_TIMEOUT_S = 5  # a dead or firewalled database server fails the command in seconds, never hangs it
SCHEMA_RACE_TRIES = 5  # workers starting together on a fresh database all try to create Optuna's tables


@dataclass(frozen=True)
class Liveness:
    """How lost workers are found (`slowai.study.lease`): a heartbeat every `heartbeat_interval` s, lost once it has
    not changed for `grace_period` s (default twice the interval); a lost trial is retried up to `max_retry` times."""

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

    @property
    def grace(self) -> float:
        return self.grace_period if self.grace_period is not None else 2 * self.heartbeat_interval


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


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for a URL or journal file path; connection problems become one StudyError line, quickly."""
    url = normalize_url(url)
    check_storage_url(url)
    try:
        if _scheme(url) in ("redis", "rediss"):
            return JournalStorage(JournalRedisBackend(url))
        if "://" in url:
            return _rdb(url)
        path = Path(url).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as e:  # sqlalchemy/redis errors: one line, not a stack of driver frames
        raise StudyError(f"cannot open storage {display_url(url)!r}: {_first_line(e)}") from None


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
