"""Who runs a trial, and whether they still do: unique worker ids, a heartbeat written through the storage, and a
watch that declares a trial lost when its heartbeat stops changing.

Why our own lease and not Optuna's heartbeat: Optuna's exists only on RDB storages (not on the journal a local or
NFS study uses), its public stale check cannot record why a trial failed, and a trial whose worker died between
`ask()` and its first heartbeat is never found stale. This lease is one code path on every storage, through public
API only (`set_trial_user_attr`): the heartbeat is a counter the owner bumps every `interval` seconds, and each
watcher times how long it has seen the same value on its *own* monotonic clock, so hosts need no synchronized
clocks. A RUNNING trial with no owner and no beat (the `ask()` window) ages the same way, so nobody waits on it
forever. A process of this host that is gone is known lost at once, without waiting.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from types import TracebackType

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

BEAT = "heartbeat"  # user attr: the owner's counter, bumped every interval while it holds the trial
OWNER = "worker"  # user attr: the owner's worker id

_ids: dict[int, str] = {}


def worker_id() -> str:
    """`host:pid:random` — unique even where pids repeat (a restarted container) or hosts share a name (host
    networking); per process, so a forked child gets its own."""
    pid = os.getpid()
    if pid not in _ids:
        _ids[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return _ids[pid]


def _process_gone(owner: str) -> bool:
    """Is `owner` a worker of this host whose process no longer exists? (Fast path; the beat covers the rest.)"""
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Heartbeat:
    """Context manager: bumps the trial's beat every `interval` s in a daemon thread while the owner holds it.

    A beat that fails (database restarting, journal briefly locked) is retried at the next interval; a trial another
    worker has meanwhile closed stops the beat (the owner's next write to it then drops its late result)."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slowai-heartbeat-{trial_id}", daemon=True)
        self._n = 0

    def beat(self) -> None:
        self._n += 1
        self.storage.set_trial_user_attr(self.trial_id, BEAT, self._n)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except UpdateFinishedTrialError:
                return
            except Exception:  # noqa: BLE001 - a storage hiccup: the next beat tries again
                continue

    def __enter__(self) -> Heartbeat:
        self.storage.set_trial_user_attr(self.trial_id, OWNER, worker_id())
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


@dataclass
class Watch:
    """Remembers, per RUNNING trial, the (owner, beat) last seen and since when (this process's monotonic clock)."""

    grace: float
    seen: dict[tuple[str, int], tuple[tuple, float]] = field(default_factory=dict)

    def lost(self, study_name: str, running: list[FrozenTrial]) -> dict[int, str]:
        """trial number → why its worker counts as lost: process gone on this host, or no beat for `grace` s."""
        now, out = time.monotonic(), {}
        numbers = {t.number for t in running}
        for key in [k for k in self.seen if k[0] == study_name and k[1] not in numbers]:
            del self.seen[key]  # finished meanwhile: forget it
        for t in running:
            owner = t.user_attrs.get(OWNER)
            if owner == worker_id():
                continue
            if owner and _process_gone(owner):
                out[t.number] = f"worker {owner} died (process gone)"
                continue
            key, state = (study_name, t.number), (owner, t.user_attrs.get(BEAT))
            last = self.seen.get(key)
            if last is None or last[0] != state:
                self.seen[key] = (state, now)
            elif now - last[1] > self.grace:
                who = f"worker {owner}" if owner else "a worker that died before recording itself"
                out[t.number] = f"{who} lost: no heartbeat for {self.grace:g} s"
        return out
