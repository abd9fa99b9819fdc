"""One patience rule for every storage call of a run: an outage (a database restarting, a dropped connection) is
waited out with backoff and a printed line; a permanent error (bad credentials, unknown database, malformed URL,
unreadable journal) fails at once.

Why one wrapper and not retries at each call site: start-up, the plan claim, the work queue, heartbeats, confirm
bookkeeping and the final report all reach the storage, and an outage can strike any of them. `PatientStorage`
wraps the Optuna storage itself, so every call of every part of a run obeys the same `--storage-patience`.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from optuna.storages import BaseStorage

from slowai.study.coordination.failures import first_line, transient_storage_error
from slowai.study.spec import StudyError

T = TypeVar("T")
DEFAULT_PATIENCE_S = 300.0  # rides out a server restart of a minute or two with room to spare
FIRST_WAIT_S, MAX_WAIT_S = 0.5, 5.0  # backoff between tries: 0.5, 1, 2, 4, 5, 5, ... s
SAY_EVERY_S = 15.0  # an ongoing outage is reported at most this often (heartbeat and main thread share it)


class StorageUnreachable(StudyError):
    """The storage stayed unreachable for the whole patience: the run stops with one error line."""


class Patience:
    """Retries a storage call while its errors are transient, for at most `seconds` per call; says so as it waits."""

    def __init__(self, seconds: float = DEFAULT_PATIENCE_S, log: Callable[[str], None] = print, what: str = "") -> None:
        if not seconds >= 0:
            raise StudyError(f"storage patience must be >= 0 seconds, got {seconds}")
        self.seconds, self.log, self.what = seconds, log, what
        self.recovered_at = 0.0  # monotonic time the storage last came back after an outage (0: never down)
        self._said, self._down, self._lock = 0.0, False, threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        """`fn()`, retried with backoff while it fails transiently, until `seconds` have passed."""
        start, wait = time.monotonic(), FIRST_WAIT_S
        while True:
            try:
                out = fn()
            except Exception as e:
                if not transient_storage_error(e):
                    raise
                waited = time.monotonic() - start
                if waited + wait > self.seconds:
                    raise StorageUnreachable(self._gave_up(e, waited)) from e
                self._say_down(e, wait)
                time.sleep(wait)
                wait = min(2 * wait, MAX_WAIT_S)
                continue
            self._up()
            return out

    def _gave_up(self, e: BaseException, waited: float) -> str:
        where = f"storage {self.what}" if self.what else "storage"
        if self.seconds == 0:
            return f"{where} unreachable: {first_line(e)} (--storage-patience 0: not retried)"
        return f"{where} unreachable for {waited:.0f} s (--storage-patience {self.seconds:g}): {first_line(e)}"

    def _say_down(self, e: BaseException, wait: float) -> None:
        with self._lock:
            self._down, now = True, time.monotonic()
            if now - self._said < SAY_EVERY_S:
                return
            self._said = now
        self.log(
            f"storage unreachable ({first_line(e)[:160]}); retrying in {wait:g} s, for up to {self.seconds:g} s "
            "(--storage-patience)"
        )

    def _up(self) -> None:
        if not self._down:
            return
        with self._lock:
            if not self._down:
                return
            self._down, self._said, self.recovered_at = False, 0.0, time.monotonic()
        self.log("storage reachable again")


class PatientStorage(BaseStorage):
    """An Optuna storage whose every call obeys one `Patience`; anything outside the storage interface (a journal's
    backend, an RDB's engine) comes from the wrapped storage."""

    def __init__(self, inner: BaseStorage, patience: Patience) -> None:
        self.inner, self.patience = inner, patience

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "patience"):
            raise AttributeError(name)
        return getattr(self.inner, name)


def _patient(name: str) -> Callable[..., Any]:
    def call(self: PatientStorage, *args: Any, **kwargs: Any) -> Any:
        return self.patience.call(lambda: getattr(self.inner, name)(*args, **kwargs))

    call.__name__ = call.__qualname__ = name
    return call


for _name in [n for n in dir(BaseStorage) if not n.startswith("_") and callable(getattr(BaseStorage, n))]:
    setattr(PatientStorage, _name, _patient(_name))  # the whole interface, abstract or not: a backend may override any
abc.update_abstractmethods(PatientStorage)
