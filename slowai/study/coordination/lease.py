"""Who runs a trial, and whether they still do: unique worker ids, a heartbeat written through the storage, and a
watch that declares a trial lost when its heartbeat stops changing.

Why our own lease and not Optuna's heartbeat: Optuna's exists only on RDB storages (not on the journal a local or
NFS study uses), its public stale check cannot record why a trial failed, and a trial whose worker died between
`ask()` and its first heartbeat is never found stale. This lease is one code path on every storage, through public
API only (`set_trial_user_attr`): the heartbeat is a counter the owner bumps every `interval` seconds, and each
watcher times how long it has seen the same value on its *own* monotonic clock, so hosts need no synchronized
clocks. A RUNNING trial with no owner and no beat (the `ask()` window) ages the same way, so nobody waits on it
forever. A process that is gone is known lost at once, without waiting, but only where that can be checked: the
same kernel boot and PID namespace (a shared hostname alone proves nothing: host networking, cloned VMs). A trial
this very process owns but no longer holds (it lost its storage mid-trial) is lost too, so a lone worker never waits
on itself. Time the storage was unreachable does not count against anyone's beat, and a trial running past its
deadline (`--trial-timeout`) is failed even if its worker still beats.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from slowai.study.coordination.patience import DEFAULT_PATIENCE_S
from slowai.study.coordination.storage import is_journal_file
from slowai.study.spec import StudyError

BEAT = "heartbeat"  # user attr: the owner's counter, bumped every interval while it holds the trial
OWNER = "worker"  # user attr: the owner's worker id
PLACE = "worker_place"  # user attr: the owner's kernel boot and PID namespace (where its pid means something)
DEADLINE = "deadline_s"  # user attr: seconds the trial may run before it is failed and retried
JOURNAL_LOCK_GRACE_S = 30  # Optuna breaks a dead writer's journal file lock after this long (JournalFileOpenLock)
TIMEOUT_RUNS, TIMEOUT_FLOOR_S = 5, 900  # default --trial-timeout: 5 estimated runs, never under 15 min (compiles)

_ids: dict[int, str] = {}
_held: set[tuple[str, int]] = set()  # (study name, trial number) of the trials this process holds right now


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


def worker_id() -> str:
    """`host:pid:random` — unique even where pids repeat (a restarted container) or hosts share a name (host
    networking); per process, so a forked child gets its own."""
    pid = os.getpid()
    if pid not in _ids:
        _ids[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return _ids[pid]


def place() -> str:
    """'<boot id>/<pid namespace>' of this process ('' where /proc cannot tell): two processes with the same place
    share one pid space, so one can check whether the other's pid is alive."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _process_gone(owner: str, owner_place: str | None) -> bool:
    """Is `owner` a worker in this very pid space whose process no longer exists? (Fast path; the beat covers the
    rest.) Same host name is not enough: containers on the host network and cloned VMs share it."""
    host, _, rest = owner.partition(":")
    pid = rest.split(":", 1)[0]
    here = place()
    if not here or owner_place != here or host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
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

    def __init__(
        self, storage: BaseStorage, trial_id: int, interval: float, key: tuple[str, int], deadline_s: float | None
    ) -> None:
        self.storage, self.trial_id, self.interval, self.key = storage, trial_id, interval, key
        self.deadline_s = deadline_s
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
        _held.add(self.key)
        self.storage.set_trial_user_attr(self.trial_id, OWNER, worker_id())
        self.storage.set_trial_user_attr(self.trial_id, PLACE, place())
        if self.deadline_s is not None:
            self.storage.set_trial_user_attr(self.trial_id, DEADLINE, self.deadline_s)
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        _held.discard(self.key)
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)


@dataclass
class Watch:
    """Remembers, per RUNNING trial, the (owner, beat) last seen and since when, and when it was first seen running
    (this process's monotonic clock)."""

    grace: float
    seen: dict[tuple[str, int], tuple[tuple, float]] = field(default_factory=dict)
    first: dict[tuple[str, int], float] = field(default_factory=dict)

    def lost(self, study_name: str, running: list[FrozenTrial], since: float = 0.0) -> dict[int, str]:
        """trial number → why it counts as lost: its worker's process is gone, this process abandoned it, no beat for
        `grace` s (not counting time before `since`, when the storage came back from an outage), or it ran past
        its deadline."""
        now, out = time.monotonic(), {}
        self._forget(study_name, {t.number for t in running})
        for t in running:
            key = (study_name, t.number)
            self.first.setdefault(key, now)
            if why := self._why_lost(t, key, now, since):
                out[t.number] = why
        return out

    def _forget(self, study_name: str, running: set[int]) -> None:
        """Trials finished meanwhile are forgotten."""
        for d in (self.seen, self.first):
            for key in [k for k in d if k[0] == study_name and k[1] not in running]:
                del d[key]

    def _why_lost(self, t: FrozenTrial, key: tuple[str, int], now: float, since: float) -> str | None:
        owner = t.user_attrs.get(OWNER)
        if owner == worker_id():
            return None if key in _held else f"worker {owner} (this one) lost it to a storage outage mid-trial"
        if owner and _process_gone(owner, t.user_attrs.get(PLACE)):
            return f"worker {owner} died (process gone)"
        deadline = t.user_attrs.get(DEADLINE)
        if deadline is not None and now - max(self.first[key], since) > deadline + self.grace:
            return f"deadline: running for over {deadline:g} s (--trial-timeout) on worker {owner}"
        state, last = (owner, t.user_attrs.get(BEAT)), self.seen.get(key)
        if last is None or last[0] != state:
            self.seen[key] = (state, now)
        elif now - max(last[1], since) > self.grace:
            who = f"worker {owner}" if owner else "a worker that died before recording itself"
            return f"{who} lost: no heartbeat for {self.grace:g} s"
        return None
