"""No single failure stops a study: each failure class ends the way an operator expects (see coordination.failures).

Lost workers anywhere (not just on this host) are found by the lease; a trial whose worker died right after `ask()`
is not waited on forever; a late result is dropped; errors fail their trial for good; out-of-memory is retried once;
a candidate whose tuning all failed is reported while the others finish.
"""

import math
import signal
import time
from contextlib import contextmanager

import optuna
import pytest
import torch
from optuna.trial import TrialState

from slowai.core import Callback
from slowai.study import Budget, StudySpec, run_study
from slowai.study.coordination.lease import Heartbeat, Liveness, Watch, worker_id
from slowai.study.coordination.storage import open_storage
from slowai.study.coordination.trials import close, retry, trial_id
from slowai.study.coordination.workqueue import enqueue_slots
from slowai.study.execution.trial import Outcome
from slowai.study.spec import optuna_name

TINY = Budget(trials=2, tune_epochs=1, tune_subset=256, seeds=2, confirm_epochs=1, confirm_subset=256, bs=64)
FAST = Liveness(heartbeat_interval=1, grace_period=2)  # a silent worker is lost after 2 s


def spec(tmp_path, name, callbacks=(), candidates=("residual", "plain")):
    return StudySpec(
        name=name,
        candidates=list(candidates),
        dataset="digits",
        out=tmp_path,
        progress=False,
        wandb="disabled",
        reference="plain",
        pruner="none",
        callbacks=callbacks,
        compile=False,
    )


def trials(tmp_path, name, cand, stage):
    storage = open_storage(str(tmp_path / "optuna.journal"))
    return optuna.load_study(study_name=optuna_name(name, cand, stage), storage=storage).get_trials()


@contextmanager
def deadline(seconds):
    """Fail (instead of hanging the suite) if the block waits forever."""

    def expire(*_):
        raise TimeoutError(f"still running after {seconds} s: waiting forever")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


class RaiseCB(Callback):
    """Raises `error()` at the first batch of runs that `when(ctx)` selects."""

    def __init__(self, error):
        self.error = error

    def before_batch(self):
        raise self.error()


def raise_in(when, error):
    return lambda ctx: RaiseCB(error) if when(ctx) else None


# ----------------------------------------------------------------------------------------------- the lease
def test_worker_ids_are_unique_per_process():
    host, pid, tag = worker_id().split(":")
    assert int(pid) > 0 and len(tag) == 8 and worker_id() == f"{host}:{pid}:{tag}"


@pytest.mark.parametrize("backend", ["journal", "postgres"])
def test_a_silent_worker_on_another_host_is_lost_after_the_grace_period(tmp_path, backend, request):
    """No process check can see another host: only the heartbeat can, through the storage, on every storage."""
    url = str(tmp_path / "j.journal") if backend == "journal" else request.getfixturevalue("pg_server_url")
    storage = open_storage(url)
    study = optuna.create_study(study_name=f"lease-{time.time_ns()}", storage=storage)
    beating, silent = study.ask(), study.ask()
    for t in (beating, silent):
        storage.set_trial_user_attr(trial_id(storage, study.study_name, t.number), "worker", "elsewhere:7:ab")
    watch = Watch(grace=1.0)
    tid = trial_id(storage, study.study_name, beating.number)
    with Heartbeat(storage, tid, interval=0.2, key=(study.study_name, beating.number), deadline_s=None):
        assert watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,))) == {}
        time.sleep(1.5)
        lost = watch.lost(study.study_name, study.get_trials(states=(TrialState.RUNNING,)))
    assert list(lost) == [silent.number] and "worker elsewhere:7:ab lost: no heartbeat for 1 s" in lost[silent.number]


def test_a_trial_whose_worker_died_right_after_ask_is_taken_over(tmp_path):
    """The window between `ask()` and recording the owner: a popped slot with no owner ages like a silent one.
    (SQLite: a journal file's 30 s lock grace would set the grace period's floor.)"""
    s = spec(tmp_path, "orphan", candidates=["plain"])
    s.storage = f"sqlite:///{tmp_path / 'orphan.db'}"
    run_study(s, budget=TINY.with_(trials=1, seeds=1), log=lambda m: None)
    tune = optuna.load_study(study_name=optuna_name("orphan", "plain", "tune"), storage=open_storage(s.storage))
    enqueue_slots(tune, [1])
    orphan = tune.ask()  # a worker that popped slot 1 and died before writing anything more
    with deadline(90):
        run_study(s, budget=TINY.with_(trials=2, seeds=1), log=lambda m: None, liveness=FAST)
    after = optuna.load_study(study_name=tune.study_name, storage=open_storage(s.storage)).get_trials()
    dead = after[orphan.number]
    assert dead.state == TrialState.FAIL and "died before recording itself" in dead.user_attrs["fail_reason"]
    assert [t.state for t in after].count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in [
        t.state for t in after
    ]
    assert sorted(t.user_attrs["slot"] for t in after if t.state == TrialState.COMPLETE) == [0, 1]


def declare_lost_by_a_neighbour(ctx):
    """During tune trial 0's first batch, another worker declares it lost and queues its retry."""
    if ctx.stage != "tune" or ctx.trial.number != 0 or ctx.trial.user_attrs.get("retry_of") is not None:
        return None

    class Neighbour(Callback):
        def before_batch(self):
            if self.learn.iter == 0:
                storage, study = open_storage(str(ctx.out / "optuna.journal")), ctx.trial.study
                tid = trial_id(storage, study.study_name, ctx.trial.number)
                assert close(storage, tid, "worker lost: no heartbeat (test)", "lost")
                retry(study, storage.get_trial(tid))

    return Neighbour()


def test_a_late_result_is_dropped_and_the_worker_carries_on(tmp_path):
    res = run_study(spec(tmp_path, "late", [declare_lost_by_a_neighbour]), budget=TINY, log=lambda m: None)
    tune = trials(tmp_path, "late", "residual", "tune")
    lost, retried = tune[0], next(t for t in tune if t.user_attrs.get("retry_of") == 0)
    assert lost.state == TrialState.FAIL and lost.user_attrs["fail_reason"].startswith("worker lost")
    assert retried.state == TrialState.COMPLETE and retried.user_attrs["seed"] == lost.user_attrs["seed"]
    assert sum(t.state == TrialState.COMPLETE for t in tune) == TINY.trials
    assert all(len(c.runs) == TINY.seeds for c in res.candidates)


# ----------------------------------------------------------------------------------------------- by class
def test_an_error_fails_its_trial_for_good_and_the_other_candidate_finishes(tmp_path):
    boom = raise_in(lambda ctx: ctx.candidate.name == "residual", lambda: ValueError("bad shape in my block"))
    res = run_study(spec(tmp_path, "err", [boom]), budget=TINY, log=lambda m: None)
    tune = trials(tmp_path, "err", "residual", "tune")
    assert len(tune) == TINY.trials and all(t.state == TrialState.FAIL for t in tune)  # not retried forever
    assert {t.user_attrs["fail_reason"] for t in tune} == {"ValueError: bad shape in my block"}
    by = {c.name: c for c in res.candidates}
    assert by["residual"].runs == [] and by["residual"].verdict is None and len(by["plain"].runs) == TINY.seeds
    report = (tmp_path / "report.md").read_text()
    assert "`residual`: no tune trial completed (2 fail), so it was not confirmed" in report
    assert "`residual` tune t0: ValueError: bad shape in my block; failed for good" in report


def test_a_candidate_whose_every_trial_is_pruned_is_reported_as_such(tmp_path):
    def diverge(trial):
        lr = 1e9 if trial.study.study_name.startswith("pruned/residual/") else 3e-3
        return {"lr": trial.suggest_float("lr", lr, lr)}

    s = spec(tmp_path, "pruned")
    s.space = diverge
    res = run_study(s, budget=TINY, log=lambda m: None)
    by = {c.name: c for c in res.candidates}
    assert by["residual"].tune_counts == {"pruned": 2} and not by["residual"].runs
    assert len(by["plain"].runs) == TINY.seeds
    assert "no tune trial completed (2 pruned)" in (tmp_path / "report.md").read_text()


def test_a_confirm_run_that_errors_loses_its_seed_only(tmp_path):
    boom = raise_in(lambda ctx: ctx.stage == "confirm" and ctx.seed == 1, lambda: RuntimeError("disk full"))
    res = run_study(spec(tmp_path, "seed", [boom]), budget=TINY, log=lambda m: None)
    for c in res.candidates:
        assert sorted(c.by_seed) == [0]
        (failed,) = c.failures
        assert failed.user_attrs["seed"] == 1 and failed.user_attrs["final"]
    assert "confirm seed 1 (t1): RuntimeError: disk full; failed for good" in (tmp_path / "report.md").read_text()


def oom_once(ctx):
    """Out of memory on the first attempt of each residual confirm run only."""
    first = ctx.trial.user_attrs.get("oom_retries") is None
    if ctx.stage == "confirm" and ctx.candidate.name == "residual" and first:
        return RaiseCB(lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    return None


def test_out_of_memory_is_retried_once_with_the_same_seed(tmp_path):
    res = run_study(spec(tmp_path, "oom", [oom_once]), budget=TINY, log=lambda m: None)
    residual = next(c for c in res.candidates if c.name == "residual")
    assert sorted(residual.by_seed) == [0, 1]
    conf = trials(tmp_path, "oom", "residual", "confirm")
    failed = [t for t in conf if t.state == TrialState.FAIL]
    assert len(failed) == 2 and all(not t.user_attrs["final"] and t.user_attrs["failure"] == "oom" for t in failed)
    assert {t.user_attrs["seed"] for t in conf if t.user_attrs.get("oom_retries") == 1} == {0, 1}


def test_out_of_memory_twice_fails_for_good(tmp_path):
    always = raise_in(lambda ctx: ctx.stage == "confirm" and ctx.seed == 0, lambda: torch.OutOfMemoryError("OOM"))
    res = run_study(spec(tmp_path, "oom2", [always], candidates=["plain"]), budget=TINY, log=lambda m: None)
    assert sorted(res.candidates[0].by_seed) == [1]
    conf = [t for t in trials(tmp_path, "oom2", "plain", "confirm") if t.user_attrs.get("seed") == 0]
    assert [t.state for t in conf] == [TrialState.FAIL, TrialState.FAIL]
    assert [t.user_attrs["final"] for t in conf] == [False, True]


def test_zero_validation_accuracy_is_a_result_not_a_failure():
    """A tune trial that scores 0.0 completes with 0.0 (it used to be told as NaN, which Optuna fails silently)."""
    assert Outcome([{"epoch": 0, "valid_accuracy": 0.0}], 0.1, 0.1).last_valid == 0.0
    assert math.isnan(Outcome([{"epoch": 0, "valid_accuracy": None}], 0.1, 0.1).last_valid)


def test_a_study_another_worker_is_still_creating_is_not_mistaken_for_an_old_one(tmp_path):
    """A worker starting while another writes a new study's attrs (one by one) sees it as new, not as broken."""
    storage = open_storage(str(tmp_path / "optuna.journal"))
    tune = optuna.create_study(study_name=optuna_name("racing", "plain", "tune"), storage=storage)
    tune.set_user_attr("dataset", "digits")  # all its creator has written so far
    res = run_study(spec(tmp_path, "racing", candidates=["plain"]), budget=TINY.with_(seeds=1), log=lambda m: None)
    assert len(res.candidates[0].runs) == 1
