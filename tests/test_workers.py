"""Scale-out and fault tolerance: concurrent workers on PostgreSQL and on the embedded journal, a worker killed
mid-trial, diverging trials, bad storage URLs, --report-only and a broken W&B directory."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from slowai.study import Budget, StudySpec, main, read_offline_run, run_study
from slowai.study.coordination import workqueue
from slowai.study.coordination.lease import Watch, place
from slowai.study.coordination.readback import confirm_key
from slowai.study.coordination.storage import existing_names, open_storage
from slowai.study.coordination.trials import DRAWN, FINISHED, close, fail_lost_trials, retry, trial_id
from slowai.study.execution.tracking import offline_runs
from slowai.study.spec import optuna_name

ROOT = Path(__file__).resolve().parents[1]
CANDS = ["conv", "plain"]
# --quick: 2 trials and 2 seeds per candidate, 1 epoch; 256 tune images keep a trial under a second on CPU
QUICK = ["--candidates", *CANDS, "--quick", "--subset", "256", "--no-progress"]


@pytest.fixture(scope="module")
def pg_url():
    """The test PostgreSQL server: required in CI, skipped with the reason elsewhere."""
    url = os.environ.get("SLOWAI_TEST_PG_URL")
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must provide PostgreSQL: SLOWAI_TEST_PG_URL is unset (see .ci/run)")
        pytest.skip("no PostgreSQL server: export SLOWAI_TEST_PG_URL=$(bash scripts/postgres.sh)")
    return url


@pytest.fixture
def pg_study(pg_url):
    """A fresh study name on the server; its Optuna studies are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    storage = open_storage(pg_url)
    for study in existing_names(storage):
        if study.startswith(f"{name}/"):
            optuna.delete_study(study_name=study, storage=storage)


@pytest.fixture
def env(tmp_path):
    """Worker process environment: offline W&B under tmp, one thread each (two workers on two cores)."""
    home = tmp_path / "wandb_home"
    home.mkdir()
    keys = ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR")
    return (
        os.environ
        | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
        | dict.fromkeys(keys, str(home))
    )


def start(args, env, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "studies.residual_vs_plain", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def finish(proc, timeout=150):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def all_trials(storage, name, cand, stage):
    return optuna.load_study(study_name=optuna_name(name, cand, stage), storage=storage).get_trials()


def run_ids(out_dirs):
    """W&B offline run id → run directory of every trial's run (not the report's verdict run), over every worker's
    output dir (the id ends the directory name)."""
    dirs = [d for out in out_dirs for d in offline_runs(Path(out) / "wandb")]
    return {d.name.rsplit("-", 1)[-1]: d for d in dirs if read_offline_run(d).get("job_type") != "summary"}


def assert_study_complete(storage, name, out_dirs, cands=CANDS, trials=2, seeds=(0, 1)):
    """Exactly `trials` finished tune trials and one run per confirm seed per candidate, nothing left running or
    queued, and every trial that trained has exactly its own W&B run."""
    runs = run_ids(out_dirs)
    trained = []
    for cand in cands:
        tune, conf = all_trials(storage, name, cand, "tune"), all_trials(storage, name, cand, "confirm")
        assert sum(t.state in FINISHED for t in tune) == trials
        best = max((t for t in tune if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        done = [t for t in conf if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["seed"] for t in done) == list(seeds)
        assert {t.user_attrs["params_key"] for t in done} == {confirm_key(best.params)}
        assert not [t for t in tune + conf if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        trained += [(cand, t) for t in tune + conf if "wandb_run_id" in t.user_attrs]
    ids = [t.user_attrs["wandb_run_id"] for _, t in trained]
    assert len(set(ids)) == len(ids) and set(ids) == set(runs)
    for cand, t in trained:
        if t.state == TrialState.COMPLETE:
            stage = t.user_attrs["stage"]
            assert read_offline_run(runs[t.user_attrs["wandb_run_id"]])["name"] == f"{cand}-{stage}-t{t.number}"


@pytest.mark.slow
def test_two_workers_share_a_postgres_study(tmp_path, pg_url, pg_study, env):
    outs = [tmp_path / "machine0", tmp_path / "machine1"]
    procs = [start([*QUICK, "--storage", pg_url, "--study-name", pg_study, "--out", str(o)], env) for o in outs]
    logs = [finish(p) for p in procs]
    assert_study_complete(open_storage(pg_url), pg_study, outs)
    assert all((o / "report.md").exists() for o in outs)  # any worker reports once everything is finished
    assert "slowai:slowai@" not in "".join(logs) + (outs[0] / "report.md").read_text()  # password masked


@pytest.mark.slow
def test_local_workers_on_the_embedded_journal(tmp_path, env):
    out = tmp_path / "study"
    finish(start([*QUICK, "--study-name", "local2", "--out", str(out), "--workers", "2"], env))
    storage = open_storage(str(out / "optuna.journal"))
    assert_study_complete(storage, "local2", [out])
    workers = {t.user_attrs["worker"] for c in CANDS for t in all_trials(storage, "local2", c, "tune")}
    assert len(workers) == 2  # both processes trained
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * len(CANDS)

    (out / "report.md").unlink()
    assert main("residual_vs_plain", CANDS, ["--study-name", "local2", "--out", str(out), "--report-only"]) == 0
    assert "| conv |" in (out / "report.md").read_text()


def test_report_only_without_results_is_an_error(tmp_path, capsys):
    out = tmp_path / "empty"
    assert main("residual_vs_plain", CANDS, ["--out", str(out), "--report-only"]) == 2
    assert capsys.readouterr().err.startswith("error: nothing to report") and not out.exists()


def wait_running(storage, name, pid, timeout=60):
    """The tune trial worker `pid` is training (RUNNING, W&B run started), polled from the storage.

    Killing it there, not while it appends to the journal, keeps the test off the journal lock's 30 s stale timeout.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name + "/plain/tune" in existing_names(storage):
            for t in all_trials(storage, name, "plain", "tune"):
                mine = f":{pid}:" in t.user_attrs.get("worker", "")
                if t.state == TrialState.RUNNING and mine and "wandb_run_id" in t.user_attrs:
                    return t
        time.sleep(0.1)
    raise AssertionError(f"no RUNNING trial of worker {pid} within {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgres", "journal"])
def test_killed_worker_trial_fails_and_is_retried(tmp_path, env, backend, request):
    if backend == "postgres":
        url, name = request.getfixturevalue("pg_url"), request.getfixturevalue("pg_study")
    else:
        url, name = str(tmp_path / "out" / "optuna.journal"), "killtest"
    args = ["--candidates", "plain", "--quick", "--trials", "2", "--seeds", "1", "--epochs", "2", "--subset", "1024"]
    args += ["--pruner", "none", "--no-progress", "--study-name", name, "--out", str(tmp_path / "out")]
    grace = "3" if backend == "postgres" else "32"  # a journal's lock grace (30 s) + 2 beats; a dead pid shows at once
    args += ["--storage", url, "--heartbeat-interval", "1", "--grace-period", grace]
    victim = start(args, env, start_new_session=True)  # its own process group: W&B's helper dies with it
    try:
        killed = wait_running(open_storage(url), name, victim.pid)
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.communicate()
    finish(start(args, env))

    storage = open_storage(url)
    tune = all_trials(storage, name, "plain", "tune")
    dead = tune[killed.number]
    assert dead.state == TrialState.FAIL and "died (process gone)" in dead.user_attrs["fail_reason"]
    (retry,) = [t for t in tune if t.user_attrs.get("retry_of") == dead.number]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number and retry.user_attrs["worker"] != dead.user_attrs["worker"]
    assert_study_complete(storage, name, [tmp_path / "out"], cands=["plain"], seeds=(0,))


@pytest.mark.slow
def test_ctrl_c_on_local_workers_fails_their_trials_cleanly(tmp_path, env):
    out = tmp_path / "out"
    args = ["--candidates", "plain", "--quick", "--epochs", "3", "--subset", "4096", "--no-progress"]
    parent = start([*args, "--study-name", "ctrlc", "--out", str(out), "--workers", "2"], env)
    storage = open_storage_when_ready(out / "optuna.journal", "ctrlc/plain/tune")
    deadline = time.monotonic() + 60
    while not [t for t in all_trials(storage, "ctrlc", "plain", "tune") if t.state == TrialState.RUNNING]:
        assert time.monotonic() < deadline, "no trial started"
        time.sleep(0.1)
    parent.send_signal(signal.SIGINT)
    log, _ = parent.communicate(timeout=60)
    assert parent.returncode == 130 and "rerun the same command to resume" in log
    tune = all_trials(storage, "ctrlc", "plain", "tune")
    failed = [t for t in tune if t.state == TrialState.FAIL]
    assert failed and {t.user_attrs["fail_reason"] for t in failed} == {"interrupted (Ctrl-C)"}
    assert all(t.state in (TrialState.FAIL, TrialState.WAITING) for t in tune)  # nothing left RUNNING
    queued_again = {t.user_attrs.get("retry_of") for t in tune if t.state == TrialState.WAITING}
    assert {t.number for t in failed} <= queued_again  # the next run pops each interrupted trial first


def open_storage_when_ready(path, study, timeout=60):
    """The journal a starting study creates, once `study` exists in it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and study in existing_names(storage := open_storage(str(path))):
            return storage
        time.sleep(0.2)
    raise AssertionError(f"{path} was not created within {timeout} s")


def test_lost_confirm_run_is_retried_with_its_seed(tmp_path):
    """A dead worker's confirm run comes back WAITING with its seed and params key, without the dead worker."""
    storage, watch = open_storage(str(tmp_path / "j.journal")), Watch(grace=60)
    study = optuna.create_study(study_name="s/c/confirm", storage=storage, direction="maximize")
    study.enqueue_trial({"lr": 0.01}, user_attrs={"seed": 7, "params_key": "lr=0.01"})
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1.0, log=True)
    gone = subprocess.Popen(["true"])  # a process of this host that has exited: the "dead worker"
    gone.wait()
    trial.set_user_attr("worker", f"{socket.gethostname()}:{gone.pid}:0123abcd")
    trial.set_user_attr("worker_place", place())  # the same kernel and pid namespace: its pid can be checked
    assert fail_lost_trials(storage, study, watch, max_retry=1) == [trial.number]
    assert fail_lost_trials(storage, study, watch, max_retry=1) == []  # found once, retried once
    failed, queued = study.get_trials()
    assert failed.state == TrialState.FAIL and "process gone" in failed.user_attrs["fail_reason"]
    assert queued.state == TrialState.WAITING and queued.params == {"lr": 0.01}
    assert queued.user_attrs == {"seed": 7, "params_key": "lr=0.01", "retry_of": 0, "queued_params": {"lr": 0.01}}


def test_a_retry_whose_closer_died_is_queued_by_the_refill_with_its_params_and_lineage(tmp_path):
    """Killed between closing a lost trial and queueing its retry, the closer leaves the seed owed: the refill queues
    that retry (same params, `retry_of`), and a slot nothing ever stood for gets a fresh trial."""
    storage = open_storage(str(tmp_path / "j.journal"))
    confirm = optuna.create_study(study_name="s/c/confirm", storage=storage, direction="maximize")
    workqueue.enqueue_seeds(confirm, {"lr": 0.01}, [0, 1])
    lost = confirm.ask()
    lost.suggest_float("lr", 1e-4, 1.0, log=True)
    assert close(storage, trial_id(storage, "s/c/confirm", lost.number), "worker w died (process gone)", "lost")
    assert workqueue.owed_retries(confirm) == {("seed", "lr=0.01", 0): confirm.trials[0]}
    assert workqueue.refill_seeds(confirm, {"lr": 0.01}, [0, 1]) == [0]  # seed 1 is still queued
    queued = confirm.get_trials(states=(TrialState.WAITING,))
    retry = next(t for t in queued if t.user_attrs["seed"] == 0)
    assert retry.user_attrs["retry_of"] == lost.number and retry.params == {"lr": 0.01}
    assert workqueue.owed_retries(confirm) == {}  # owed once, queued once

    tune = optuna.create_study(study_name="s/c/tune", storage=storage, direction="maximize")
    assert workqueue.refill_slots(tune, 2) == [0, 1]
    assert [t.user_attrs for t in tune.trials] == [{"slot": 0}, {"slot": 1}]  # nothing failed: fresh slots


def draw(trial):
    return [trial.suggest_float("lr", 1e-4, 1.0, log=True), trial.suggest_float("wd", 0.0, 0.1)]


def test_a_tune_trial_killed_mid_draw_is_retried_as_its_slot_so_it_draws_what_an_undisturbed_run_draws(tmp_path):
    """Fixing a half-drawn prefix would shift the seeded sampler's stream (fixed params draw nothing), so the rest
    would differ from the slot's draw; a fully drawn trial's retry keeps its params."""
    storage = open_storage(str(tmp_path / "j.journal"))
    seeded = lambda: optuna.samplers.TPESampler(seed=3, n_startup_trials=10)  # noqa: E731 - as a slot's sampler
    calm = optuna.create_study(study_name="calm", storage=storage, sampler=seeded())
    undisturbed = draw(calm.ask())

    study = optuna.create_study(study_name="s/c/tune", storage=storage, sampler=seeded())
    workqueue.enqueue_slots(study, [0])
    cut = study.ask()
    cut.suggest_float("lr", 1e-4, 1.0, log=True)  # killed here, before "wd"
    tid = trial_id(storage, "s/c/tune", cut.number)
    assert close(storage, tid, "worker w died (process gone)", "lost")
    retry(study, storage.get_trial(tid))
    study.sampler = seeded()
    again = study.ask()
    assert again.user_attrs == {"slot": 0, "retry_of": cut.number, "queued_params": {}}
    assert draw(again) == undisturbed and again.params["lr"] == cut.params["lr"]

    again.set_user_attr(DRAWN, True)  # drawn to the end, then killed while training: its retry runs these params
    tid = trial_id(storage, "s/c/tune", again.number)
    assert close(storage, tid, "worker w died (process gone)", "lost")
    retry(study, storage.get_trial(tid))
    study.sampler = optuna.samplers.TPESampler(seed=99, n_startup_trials=10)  # another stream: the params are fixed
    last = study.ask()
    assert draw(last) == undisturbed and last.user_attrs[DRAWN] and last.user_attrs["retry_of"] == again.number


def diverge_first(trial):
    """Tune trial 0 gets an lr that blows the loss up within a few batches; the others a sane one."""
    lr = 1e8 if trial.number == 0 and trial.study.study_name.endswith("/tune") else 3e-3
    return {"lr": trial.suggest_float("lr", lr, lr), "weight_decay": 1e-4}


@pytest.mark.slow
def test_diverging_trial_stops_at_once_and_study_continues(tmp_path):
    budget = Budget(trials=2, tune_epochs=2, tune_subset=512, seeds=1, confirm_epochs=1, confirm_subset=256, bs=64)
    spec = StudySpec(
        name="nan", candidates=["conv"], out=tmp_path, progress=False, space=diverge_first, wandb="disabled"
    )
    res = run_study(spec, budget=budget, log=lambda s: None)
    t0, t1 = all_trials(open_storage(str(tmp_path / "optuna.journal")), "nan", "conv", "tune")
    m = re.fullmatch(r"non-finite train loss \((nan|inf)\) at epoch 1/2, batch (\d+)/8", t0.user_attrs["stop_reason"])
    assert t0.state == TrialState.PRUNED and m, t0.user_attrs["stop_reason"]
    assert int(m.group(2)) < 8 and t0.user_attrs["history"] == []  # stopped mid-epoch, not at its end
    assert t1.state == TrialState.COMPLETE and len(res.candidates[0].runs) == 1


@pytest.mark.slow
def test_broken_wandb_dir_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").write_text("a file where W&B wants its directory")
    budget = Budget(trials=1, tune_epochs=1, tune_subset=256, seeds=1, confirm_epochs=1, confirm_subset=256, bs=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_study(StudySpec(name="nowb", candidates=["conv"], out=tmp_path, progress=False), budget=budget)
    assert any(str(w.message).startswith("W&B: wandb.init failed") for w in caught)
    assert len(res.candidates[0].runs) == 1 and (tmp_path / "report.md").exists()


@pytest.mark.parametrize(
    "url, message, patience",
    [
        ("postgresql://u:secret@127.0.0.1:1/db", "Connection refused", "0"),  # nothing listens on the port
        ("postgresql+psycopg2://u:secret@127.0.0.2:1/db", "Connection refused", "0"),  # no server on that address
        ("postgresql:/broken", "malformed storage URL", None),
    ],
)
def test_bad_storage_fails_fast_with_one_line(tmp_path, capsys, url, message, patience):
    """An outage fails at once only with --storage-patience 0 (else it is waited out); a malformed URL always."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    flags = ["--storage-patience", patience] if patience else []
    assert main("residual_vs_plain", CANDS, ["--out", str(out), "--quick", "--storage", url, *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - t0 < 10
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert ":pw@" not in err and ":secret@" not in err
    assert not out.exists() and not list(tmp_path.glob("postgresql*"))


def test_an_unknown_database_fails_at_once_even_with_patience(tmp_path, capsys, pg_server_url):
    """A permanent mistake (unknown database; likewise bad credentials) is not an outage: no waiting."""
    url = re.sub(r"/slowai(\?|$)", r"/no_such_db\1", pg_server_url, count=1)
    t0 = time.monotonic()
    argv = ["--out", str(tmp_path / "out"), "--quick", "--storage", url, "--storage-patience", "600"]
    assert main("residual_vs_plain", CANDS, argv) == 2
    err = capsys.readouterr().err.strip()
    assert time.monotonic() - t0 < 10 and "no_such_db" in err and "does not exist" in err, err
    assert err.startswith("error: cannot open storage") and "\n" not in err


def test_work_nobody_can_claim_is_an_error_not_an_endless_wait(tmp_path, monkeypatch):
    from slowai.study.runner import Runner
    from slowai.study.spec import StudyError

    spec = StudySpec(name="stuck", candidates=CANDS, out=tmp_path, wandb="disabled", progress=False)
    tiny = Budget(trials=1, tune_epochs=1, tune_subset=64, seeds=1, confirm_epochs=1, confirm_subset=64, bs=32)
    runner = Runner(spec, budget=tiny, log=lambda s: None, worker_id=0, poll_s=0.01)
    runner.prepare()
    runner.open()
    scheduler = runner.scheduler()
    monkeypatch.setattr(scheduler, "do", lambda job, bar: None)  # every claim refused, and no worker holds a trial
    with pytest.raises(StudyError, match="is stuck: conv tune, plain tune cannot be claimed and no worker runs them"):
        scheduler.finish_remaining()


def test_workers_starting_together_on_a_fresh_database_all_open_it(pg_url):
    """The first opens race to create Optuna's tables; PostgreSQL fails the losers with a duplicate pg_type key."""
    import sqlalchemy as sa

    schema = f"fresh_{uuid.uuid4().hex[:8]}"  # an empty schema stands in for a new database
    engine = sa.create_engine(pg_url)
    with engine.begin() as c:
        c.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    barrier = threading.Barrier(6)

    def open_together(_):
        barrier.wait()
        return open_storage(url)

    try:
        with ThreadPoolExecutor(6) as pool:
            storages = list(pool.map(open_together, range(6)))
        assert len(storages) == 6 and existing_names(storages[0]) == set()
    finally:
        with engine.begin() as c:
            c.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()
