"""What to do when a trial fails, by class: no single failure stops a study.

- lost worker (killed, machine gone, silent past the grace period): retried with the same hyperparameters and
  seed (`trials.fail_lost_trials`);
- an exception from the training itself (a bug in a model, a space, a callback): failed with its reason, final;
- out of memory: retried once (memory is freed first), then final;
- the storage unreachable (a database restarting): every storage call waits it out (`patience`); one
  that outlasts the patience stops the worker, and the held trial comes back through its lease;
- past its deadline (`--trial-timeout`): failed and retried like a lost trial;
- Ctrl-C / SystemExit: the trial is failed, a retry is queued, and the worker stops; the next run pops it.

A lost, timed-out, out-of-memory or interrupted trial counts as one attempt at its tune slot or confirm seed; after
`max_retry` retries the slot or seed is failed for good, so a trial that kills its own process cannot loop forever.
"""

from __future__ import annotations

import gc
import re

import torch

from slowai import utils

ERROR, OOM, STORAGE, INTERRUPTED, LOST, DEADLINE = "error", "oom", "storage", "interrupted", "lost", "deadline"
OOM_RETRIES = 1
_OOM_TEXT = ("out of memory", "can't allocate memory", "failed to allocate memory")


class TrialFailed(Exception):
    """A trial closed as failed (its record says why); the worker goes on with the next job."""


class Dropped(Exception):
    """This worker's trial was declared lost and closed by another worker meanwhile: its late result is dropped."""


class TrialDeadline(Exception):
    """Raised in the worker's main thread when its trial outlives `--trial-timeout`."""


def reason(e: BaseException) -> str:
    """The one line a failed trial records."""
    if isinstance(e, TrialDeadline):
        return str(e)
    ctrl_c = any(isinstance(x, KeyboardInterrupt) for x in _chain(e))
    return "interrupted (Ctrl-C)" if ctrl_c else f"{type(e).__name__}: {e}"


def interrupted(e: BaseException) -> bool:
    """Ctrl-C or SystemExit anywhere in the chain. An error raised while one was handled is still the interruption:
    Ctrl-C landing inside Optuna's journal-lock release makes it unlink a file its interrupted rename never made
    (FileNotFoundError), and that error must not fail the trial for good."""
    return any(isinstance(x, (KeyboardInterrupt, SystemExit)) for x in _chain(e))


def kind(e: BaseException) -> str:
    """The failure class of an exception raised while a trial ran."""
    if interrupted(e):
        return INTERRUPTED
    if isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and any(s in str(e) for s in _OOM_TEXT)):
        return OOM
    if isinstance(e, TrialDeadline):
        return DEADLINE
    if storage_error(e):
        return STORAGE
    return ERROR


def storage_error(e: BaseException) -> bool:
    """A lost or refused connection to the storage, anywhere in the exception's chain (Optuna wraps SQLAlchemy's
    connection errors in its own StorageInternalError), transient or not."""
    return any(_is_connection_error(x) for x in _chain(e))


def transient_storage_error(e: BaseException) -> bool:
    """An outage worth waiting out (refused, missing socket, server closed the connection, timeouts, a server
    starting up; Redis' equivalents), not a permanent mistake (bad credentials, unknown database or host)."""
    return storage_error(e) and not any(p in str(x).lower() for x in _chain(e) for p in _PERMANENT_TEXT)


_PERMANENT_TEXT = (
    "authentication failed",
    "does not exist",  # unknown database or role
    "no pg_hba.conf entry",
    "could not translate host name",
    "name or service not known",
    "invalid password",
    "username-password",  # Redis: AUTH refused
    "authentication required",
    "wrongpass",
    "noauth",
    "access denied",
    "unknown database",
)


def _chain(e: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while e is not None and all(e is not s for s in seen):
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _is_connection_error(e: BaseException) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(e, (OperationalError, InterfaceError, ConnectionError, TimeoutError)):
        return True
    try:
        from redis.exceptions import BusyLoadingError
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # no redis client installed: no redis storage either
        return False
    return isinstance(e, (RedisConnectionError, RedisTimeoutError, BusyLoadingError))


def first_line(e: BaseException) -> str:
    """'FATAL: password authentication failed ...' out of '(psycopg2.OperationalError) connection ... failed: ...':
    a storage driver's error as one line, its exception class prefix dropped."""
    return re.sub(r"^\([\w.]+\)\s*", "", utils.first_line(e))


def free_memory() -> None:
    """Give back what a failed run held before the retry (its tensors are unreachable once the frame is gone)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
