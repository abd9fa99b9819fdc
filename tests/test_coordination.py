"""Coordination that holds on any machine: one patience rule for the storage, a work queue each slot and seed is
popped from once, retries that end, and liveness that trusts only what it can check.

The end-to-end versions (a database down at start-up, workers killed at random, a Redis restart) are in
tests/test_chaos.py; these pin each rule down in seconds.
"""

import os
import socket
import subprocess
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import optuna
import pytest
import redis.exceptions
import sqlalchemy.exc
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState

from slowai.core import Callback
from slowai.study import Budget, StudySpec, run_study
from slowai.study.coordination.failures import LOST, transient_storage_error
from slowai.study.coordination.lease import BEAT, OWNER, PLACE, Heartbeat, Liveness, Watch, place, worker_id
from slowai.study.coordination.patience import Patience, PatientStorage, StorageUnreachable
from slowai.study.coordination.storage import open_storage
from slowai.study.coordination.trials import DRAWN, fail_and_requeue, fail_lost_trials, trial_id
from slowai.study.coordination.workqueue import enqueue_slots, missing_slots, queue_tune_slots, tune_done
from slowai.study.spec import StudyError

ROOT = Path(__file__).resolve().parents[1]


def operational(text: str) -> sqlalchemy.exc.OperationalError:
    """What SQLAlchemy raises for a PostgreSQL connection problem, with the server's (or libpq's) text."""
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(text))


# ----------------------------------------------------------------------------------------------- patience
@pytest.mark.parametrize(
    "error, transient",
    [
        (operational('connection to server on socket "/tmp/x/.s.PGSQL.5432" failed: No such file or directory'), True),
        (operational("connection to server at 127.0.0.1, port 1 failed: Connection refused"), True),
        (operational("server closed the connection unexpectedly"), True),
        (operational("FATAL:  the database system is starting up"), True),
        (redis.exceptions.ConnectionError("Error 111 connecting to localhost:6379. Connection refused."), True),
        (redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"), True),
        (ConnectionResetError("Connection reset by peer"), True),
        (operational('FATAL:  password authentication failed for user "slowai"'), False),
        (operational('FATAL:  database "nosuch" does not exist'), False),
        (operational('could not translate host name "db-hots" to address: Name or service not known'), False),
        (redis.exceptions.AuthenticationError("invalid username-password pair or user is disabled."), False),
        (ValueError("bad shape in my block"), False),
    ],
)
def test_outages_are_waited_out_and_mistakes_are_not(error, transient):
    assert transient_storage_error(error) is transient


class FlakyStorage(InMemoryStorage):
    """An in-memory storage whose first `down` calls fail as a restarting PostgreSQL server does."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    def get_all_studies(self):
        if self.down > 0:
            self.down -= 1
            raise operational("connection to server on socket failed: No such file or directory")
        return super().get_all_studies()


def test_every_storage_call_waits_out_an_outage_and_says_so():
    lines = []
    storage = PatientStorage(FlakyStorage(down=3), Patience(30, lines.append))
    assert storage.get_all_studies() == []  # 0.5 + 1 + 2 s of backoff, then the server is back
    assert lines[0].startswith("storage unreachable (connection to server on socket failed")
    assert "retrying in 0.5 s, for up to 30 s (--storage-patience)" in lines[0]
    assert lines[-1] == "storage reachable again" and storage.patience.recovered_at > 0


def test_patience_zero_fails_at_once_with_one_line():
    storage = PatientStorage(FlakyStorage(down=1), Patience(0, print, "'db'"))
    t0 = time.monotonic()
    with pytest.raises(
        StorageUnreachable, match=r"^storage 'db' unreachable: .* \(--storage-patience 0: not retried\)"
    ):
        storage.get_all_studies()
    assert time.monotonic() - t0 < 1


def test_patience_runs_out():
    storage = PatientStorage(FlakyStorage(down=100), Patience(2, lambda m: None))
    with pytest.raises(StorageUnreachable, match=r"unreachable for \d s \(--storage-patience 2\)"):
        storage.get_all_studies()


# ----------------------------------------------------------------------------------------------- grace periods
def test_a_journal_file_needs_a_grace_period_longer_than_its_lock_grace(tmp_path):
    """A worker killed inside the journal's lock stalls everyone for 30 s: a shorter grace would lose every trial."""
    journal = str(tmp_path / "optuna.journal")
    with pytest.raises(StudyError, match=r"--grace-period 3 is too short .* use at least 32 s"):
        Liveness(heartbeat_interval=1, grace_period=3).for_storage(journal)
    assert Liveness(heartbeat_interval=1).for_storage(journal).grace == 32  # the default is raised to it
    assert Liveness(heartbeat_interval=1, grace_period=3).for_storage("postgresql://db/x").grace == 3


# ----------------------------------------------------------------------------------------------- the queue
def pop_slots(args):
    """One worker process: pop queued trials until none is left; returns the slots it got."""
    url, name = args
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    got = []
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        got.append(trial.user_attrs.get("slot"))
        study.tell(trial, 0.0)
    return got


def test_each_queued_slot_is_popped_exactly_once_by_concurrent_workers(tmp_path):
    url = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="q/c/tune", storage=open_storage(url), direction="maximize")
    assert queue_tune_slots(open_storage(url), "q", study, "c", 24) == list(range(24))
    assert queue_tune_slots(open_storage(url), "q", study, "c", 24) == []  # queued once, whoever asks again
    with get_context("spawn").Pool(3) as pool:
        popped = [s for got in pool.map(pop_slots, [(url, "q/c/tune")] * 3) for s in got]
    assert sorted(s for s in popped if s is not None) == list(range(24))  # each once; extras stood for no slot
    assert tune_done(study, 24)


def test_only_the_first_claim_queues_a_batch(tmp_path):
    """Two workers opening a fresh study together both see every slot missing; one of them queues them."""
    url = str(tmp_path / "optuna.journal")
    sa, sb = open_storage(url), open_storage(url)  # two workers' connections
    a, b = (optuna.create_study(study_name="q/c/tune", storage=s, load_if_exists=True) for s in (sa, sb))
    assert missing_slots(a, 3) == missing_slots(b, 3) == [0, 1, 2]
    first, second = queue_tune_slots(sa, "q", a, "c", 3), queue_tune_slots(sb, "q", b, "c", 3)
    assert (first, second) == ([0, 1, 2], []) and missing_slots(b, 3) == []
    assert queue_tune_slots(sb, "q", b, "c", 5) == [3, 4]  # a resume with more trials queues the rest


# ----------------------------------------------------------------------------------------------- retries end
def test_a_slot_lost_again_and_again_is_failed_for_good_after_max_retry(tmp_path):
    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="r/c/tune", storage=storage, direction="maximize")
    enqueue_slots(study, [0])
    outcomes = []
    for _ in range(3):
        trial = study.ask()  # the slot, or its retry
        assert trial.user_attrs["slot"] == 0
        tid = trial_id(storage, study.study_name, trial.number)
        assert fail_and_requeue(storage, study, tid, "worker x lost: no heartbeat", LOST, max_retry=2)
        outcomes.append(storage.get_trial(tid).user_attrs["final"])
    assert outcomes == [False, False, True]  # the first try and 2 retries; then failed for good
    assert not study.get_trials(states=(TrialState.WAITING,))  # nothing queued after the last
    assert "failed for good after 3 attempts" in study.trials[2].user_attrs["fail_reason"]
    assert tune_done(study, 1)  # a slot failed for good is done: the study goes on without it


def test_a_retry_killed_before_drawing_its_params_passes_them_on():
    """Lost before its space was drawn, a retry has no params of its own: its own retry still runs the first ones."""
    storage = InMemoryStorage()
    study = optuna.create_study(study_name="p/c/tune", storage=storage)
    enqueue_slots(study, [0])
    first = study.ask()
    lr = first.suggest_float("lr", 1e-4, 1.0, log=True)
    first.set_user_attr(DRAWN, True)  # its whole space is drawn (as the job runner marks it)
    for _ in range(2):  # lost after drawing; then its retry is lost before drawing anything
        trial = first if _ == 0 else study.ask()
        assert fail_and_requeue(storage, study, trial_id(storage, study.study_name, trial.number), "lost", LOST, 3)
    again = study.ask()
    assert again.user_attrs["slot"] == 0 and again.suggest_float("lr", 1e-4, 1.0, log=True) == lr


# ----------------------------------------------------------------------------------------------- liveness
def dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def running_trial(storage, study, owner, where, beat=1):
    trial = study.ask()
    tid = trial_id(storage, study.study_name, trial.number)
    for k, v in {OWNER: owner, PLACE: where, BEAT: beat}.items():
        storage.set_trial_user_attr(tid, k, v)
    return trial


def test_a_dead_pid_counts_only_in_the_same_kernel_and_pid_namespace():
    """Same hostname is no proof (host networking, cloned VMs): another place's pid is judged by its heartbeat."""
    storage = InMemoryStorage()
    study = optuna.create_study(study_name="l/c/tune", storage=storage)
    owner = f"{socket.gethostname()}:{dead_pid()}:abcdef12"
    here = running_trial(storage, study, owner, place())
    elsewhere = running_trial(storage, study, owner, "another-boot/pid:[4026531836]")
    watch = Watch(grace=1.0)
    lost = watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,)))
    assert lost == {here.number: f"worker {owner} died (process gone)"}
    time.sleep(1.2)  # no beat from the other one for longer than the grace period: now it is lost too
    assert elsewhere.number in watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,)))


def test_a_lone_worker_recovers_its_own_abandoned_trial(tmp_path):
    """A trial this process owns but no longer holds (its storage went away mid-trial) is lost, not waited on."""
    storage = open_storage(str(tmp_path / "optuna.journal"))
    study = optuna.create_study(study_name="o/c/tune", storage=storage, direction="maximize")
    enqueue_slots(study, [0, 1])
    abandoned, held = study.ask(), study.ask()
    storage.set_trial_user_attr(trial_id(storage, study.study_name, abandoned.number), OWNER, worker_id())
    tid = trial_id(storage, study.study_name, held.number)
    with Heartbeat(storage, tid, interval=60, key=(study.study_name, held.number), deadline_s=None):
        assert fail_lost_trials(storage, study, Watch(grace=600), max_retry=3) == [abandoned.number]
    why = study.trials[abandoned.number].user_attrs["fail_reason"]
    assert why == f"worker {worker_id()} (this one) lost it to a storage outage mid-trial"
    assert [t.user_attrs["slot"] for t in study.get_trials(states=(TrialState.WAITING,))] == [0]  # queued again


def test_an_outage_is_nobodys_silence():
    """Beats that could not be written while the storage was down do not count against their worker."""
    storage = InMemoryStorage()
    study = optuna.create_study(study_name="s/c/tune", storage=storage)
    running_trial(storage, study, "elsewhere:7:ab", "elsewhere")
    watch = Watch(grace=0.5)
    watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,)))
    time.sleep(0.6)
    back = time.monotonic()  # the storage came back just now
    assert watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,)), since=back) == {}


def test_a_hung_trial_that_still_beats_is_failed_past_its_deadline():
    storage = InMemoryStorage()
    study = optuna.create_study(study_name="d/c/tune", storage=storage)
    trial = running_trial(storage, study, "elsewhere:7:ab", "elsewhere")
    storage.set_trial_user_attr(trial_id(storage, study.study_name, trial.number), "deadline_s", 0.2)
    watch = Watch(grace=0.2)
    for beat in range(2, 6):  # it beats all along, and is still lost once 0.2 s + grace have passed
        storage.set_trial_user_attr(trial_id(storage, study.study_name, trial.number), BEAT, beat)
        lost = watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,)))
        time.sleep(0.15)
    assert lost[trial.number].startswith("deadline: running for over 0.2 s (--trial-timeout)")


# ----------------------------------------------------------------------------------------------- end to end
SELF_KILLING_STUDY = """
import os, signal, sys
from slowai.core import Callback
from slowai.study import main
from studies.digits import space


class KillMyself(Callback):
    def before_batch(self):
        os.kill(os.getpid(), signal.SIGKILL)  # a segfault, the kernel's OOM killer: no exception, no goodbye


def kill_slot_1(ctx):
    return KillMyself() if ctx.stage == "tune" and ctx.trial.user_attrs.get("slot") == 1 else None


sys.exit(main("digits", ["plain"], sys.argv[1:], space=space, dataset="digits", callbacks=[kill_slot_1]))
"""


@pytest.mark.slow
def test_a_trial_that_kills_its_own_process_is_failed_for_good_after_the_retry_limit(tmp_path):
    """Restarted after each death (as a cluster requeues it), the worker retries slot 1 once, then fails it for good
    and finishes the study without it."""
    script = tmp_path / "self_killing.py"
    script.write_text(SELF_KILLING_STUDY)
    argv = [sys.executable, str(script), "--quick", "--trials", "3", "--seeds", "2", "--subset", "300"]
    argv += ["--pruner", "none", "--no-progress", "--wandb", "disabled", "--no-compile", "--no-channels-last"]
    argv += ["--out", str(tmp_path / "out"), "--max-retries", "1"]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    codes = []
    while not codes or codes[-1] != 0:
        assert len(codes) < 4, f"still not finished after {codes}"
        run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode in (0, -9), run.stderr[-3000:]
        codes.append(run.returncode)
    assert codes == [-9, -9, 0]  # the first try and one retry killed it; the third run skips the slot
    storage = open_storage(str(tmp_path / "out" / "optuna.journal"))
    tune = optuna.load_study(study_name="digits-digits-quick/plain/tune", storage=storage).get_trials()
    slot1 = [t for t in tune if t.user_attrs.get("slot") == 1]
    assert [t.user_attrs["final"] for t in slot1] == [False, True]
    assert "died (process gone); failed for good after 2 attempts" in slot1[-1].user_attrs["fail_reason"]
    assert sorted(t.user_attrs["slot"] for t in tune if t.state == TrialState.COMPLETE) == [0, 2]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "`plain` tune t1: worker" in report and "failed for good after 2 attempts" in report


class Hang(Callback):
    def before_batch(self):
        time.sleep(600)  # a deadlocked data loader, as far as anyone can tell


@pytest.mark.slow
def test_a_trial_past_its_deadline_is_failed_by_its_own_worker_and_retried(tmp_path):
    hang_slot_1 = lambda ctx: Hang() if ctx.stage == "tune" and ctx.trial.user_attrs.get("slot") == 1 else None  # noqa: E731
    spec = StudySpec(
        name="hung", candidates=["plain"], dataset="digits", out=tmp_path, progress=False, wandb="disabled",
        pruner="none", callbacks=[hang_slot_1], compile=False,
    )  # fmt: skip
    budget = Budget(trials=2, tune_epochs=1, tune_subset=128, seeds=2, confirm_epochs=1, confirm_subset=128, bs=64)
    t0 = time.monotonic()
    res = run_study(spec, budget=budget, log=lambda m: None, liveness=Liveness(trial_timeout=10, max_retry=1))
    assert time.monotonic() - t0 < 120 and len(res.candidates[0].runs) == 2  # the study went on without slot 1
    tune = optuna.load_study(study_name="hung/plain/tune", storage=open_storage(str(tmp_path / "optuna.journal")))
    slot1 = [t for t in tune.trials if t.user_attrs.get("slot") == 1]
    assert [t.user_attrs["failure"] for t in slot1] == ["deadline", "deadline"]
    assert slot1[0].user_attrs["fail_reason"] == "deadline: running for over 10 s (--trial-timeout)"
    assert slot1[-1].user_attrs["final"] and "failed for good after 2 attempts" in slot1[-1].user_attrs["fail_reason"]


class CtrlCInLockRelease(Callback):
    """Ctrl-C landing inside Optuna's journal-lock release, which then unlinks a file its rename never made."""

    def after_batch(self):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            os.unlink("/nonexistent/optuna.journal.lock-x.rename")


def test_an_error_raised_while_ctrl_c_is_handled_is_still_the_interruption(tmp_path):
    """Seen under load: such a trial was failed for good with a FileNotFoundError, and its worker crashed."""
    spec = StudySpec(
        name="ctrlc", candidates=["plain"], dataset="digits", out=tmp_path, progress=False, wandb="disabled",
        pruner="none", callbacks=[lambda ctx: CtrlCInLockRelease()], compile=False,
    )  # fmt: skip
    budget = Budget(trials=1, tune_epochs=1, tune_subset=128, seeds=2, confirm_epochs=1, confirm_subset=128, bs=64)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, budget=budget, log=lambda m: None)
    tune = optuna.load_study(study_name="ctrlc/plain/tune", storage=open_storage(str(tmp_path / "optuna.journal")))
    failed = [t for t in tune.trials if t.state == TrialState.FAIL]
    assert [t.user_attrs["fail_reason"] for t in failed] == ["interrupted (Ctrl-C)"]
    assert failed[0].user_attrs["failure"] == "interrupted" and not failed[0].user_attrs.get("final")
    assert [t.state for t in tune.trials if t.state != TrialState.FAIL] == [TrialState.WAITING]  # its retry, queued
