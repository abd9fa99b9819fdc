"""Where trials live: storage URLs, opening an Optuna storage (patiently), and finding the studies in it.

The embedded default is a JournalStorage over a journal file: appends under a file lock, so several local worker
processes can share it safely (SQLite is not built for that), and both `optuna` CLI and optuna-dashboard read it
from its plain path. Any Optuna URL (postgresql://, mysql://, sqlite:///, redis://) or journal path also works.
A study's Optuna studies are `studies`; holding a trial and finding lost workers is `trials` and `lease`.
"""

from __future__ import annotations

import importlib.util
import re
import time
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

from slowai.study.coordination.failures import first_line
from slowai.study.coordination.patience import Patience, PatientStorage
from slowai.study.spec import StudyError

JOURNAL_NAME = "optuna.journal"
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")
URL_SCHEMES = (*RDB_SCHEMES, "redis", "rediss")
CONNECT_TIMEOUT_S = 5  # one connection attempt to a dead or firewalled server ends in seconds, never hangs
SCHEMA_RACE_TRIES = 5  # workers starting together on a fresh database all try to create Optuna's tables


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


def storage_file(url: str) -> Path | None:
    """The file a journal path or sqlite:/// URL writes; None for a server URL or an in-memory database."""
    scheme = _scheme(url)
    if scheme == "":
        return Path(url).expanduser()
    target = url.split("://", 1)[1].removeprefix("/").split("?", 1)[0]
    return Path(target).expanduser() if scheme == "sqlite" and target not in ("", ":memory:") else None


def storage_exists(url: str) -> bool:
    """A server URL, or a journal/SQLite file that is already there (reading must not create one)."""
    path = storage_file(url)
    return path is None or path.exists()


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
        if (path := storage_file(url)) is not None and not path.parent.is_dir():
            raise StudyError(f"cannot open storage {url!r}: directory {path.parent} does not exist")
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
    `patience` (`patience`; default: fail at once); any other problem is one StudyError line."""
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


def existing_names(storage: BaseStorage) -> set[str]:
    return {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


def load_if_exists(storage: BaseStorage | None, name: str, names: set[str] | None = None) -> optuna.Study | None:
    """The Optuna study `name` if the storage has it (reading never creates one); `names`: a listing already read."""
    if storage is None or name not in (names if names is not None else existing_names(storage)):
        return None
    return optuna.load_study(study_name=name, storage=storage)
