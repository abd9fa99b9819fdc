"""What to do when a trial fails, by class: no single failure stops a study.

- lost worker (killed, machine gone, silent past the grace period): retried with the same hyperparameters and
  seed (`slowai.study.claims.fail_lost_trials`);
- an exception from the training itself (a bug in a model, a space, a callback): failed with its reason, final;
- out of memory: retried once (memory is freed first), then final;
- the storage unreachable (a database restarting): nothing can be recorded, so the worker waits and retries the
  job, and the held trial comes back through its lease;
- Ctrl-C / SystemExit: the trial is failed and the worker stops; the next run retries it.
"""

from __future__ import annotations

import gc

import torch

ERROR, OOM, STORAGE, INTERRUPTED, LOST = "error", "oom", "storage", "interrupted", "lost"
OOM_RETRIES = 1
_OOM_TEXT = ("out of memory", "can't allocate memory", "failed to allocate memory")


class TrialFailed(Exception):
    """A trial closed as failed (its record says why); the worker goes on with the next job."""


class Dropped(Exception):
    """This worker's trial was declared lost and closed by another worker meanwhile: its late result is dropped."""


class StorageDown(Exception):
    """The storage could not be reached; the job is tried again after a pause."""


def reason(e: BaseException) -> str:
    """The one line a failed trial records."""
    return "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"


def kind(e: BaseException) -> str:
    """The failure class of an exception raised while a trial ran."""
    if isinstance(e, (KeyboardInterrupt, SystemExit)):
        return INTERRUPTED
    if isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and any(s in str(e) for s in _OOM_TEXT)):
        return OOM
    if storage_error(e):
        return STORAGE
    return ERROR


def storage_error(e: BaseException) -> bool:
    """A lost or refused connection to the storage, anywhere in the exception's chain (Optuna wraps SQLAlchemy's
    connection errors in its own StorageInternalError)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (OperationalError, InterfaceError, ConnectionError)):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def free_memory() -> None:
    """Give back what a failed run held before the retry (its tensors are unreachable once the frame is gone)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
