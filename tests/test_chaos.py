"""Chaos: three workers share one study while a driver SIGKILLs random workers at random moments, round after round,
and (on PostgreSQL and Redis) takes the database down mid-study, starts a worker while it is down, and brings it
back; restarted workers finish it.

The study must end exactly as if nothing had happened: the requested tune trials and confirm seeds per candidate,
no duplicates, nothing left RUNNING or queued, and report rows equal to an undisturbed run of the same plan (tune
trials are seeded by their slot and a retry keeps its hyperparameters and seed, so every number is reproducible).
Each run's random choices come from one seed, printed in every failure: `SLOWAI_CHAOS_SEED=<seed>` replays it.
"""

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import optuna
import pytest
from optuna.trial import TrialState

from slowai.study import main
from slowai.study.coordination.patience import Patience
from slowai.study.coordination.readback import confirm_key
from slowai.study.coordination.storage import open_storage
from slowai.study.coordination.trials import is_final
from slowai.study.spec import optuna_name
from studies.digits import space

ROOT = Path(__file__).resolve().parents[1]
PG_SCRIPT = ROOT / "scripts" / "postgres.sh"
CANDS, TRIALS, SEEDS = ("residual", "plain"), 2, (0, 1, 2)
PLAN = ["--quick", "--trials", str(TRIALS), "--seeds", str(len(SEEDS)), "--epochs", "3", "--subset", "1200"]
PLAN += ["--pruner", "none", "--no-progress", "--wandb", "disabled"]
PLAN += ["--no-compile", "--no-channels-last", "--fuse", "off"]  # not decided by timing: runs identical to undisturbed
WORKERS, KILL_ROUNDS, DEADLINE_S, OUTAGE_S = 3, 3, 150, 6


def liveness(url):
    """Beats every second; lost after 3 s on a server, after 32 s on a journal file (its own lock grace is 30 s; a
    killed worker's dead pid is seen at once on this host either way)."""
    grace = "32" if "://" not in url else "3"
    return ["--heartbeat-interval", "1", "--grace-period", grace]


def chaos_seed(default):
    """The seed of a run's random choices: SLOWAI_CHAOS_SEED replays a failed run."""
    return int(os.environ.get("SLOWAI_CHAOS_SEED", default))


SAME = ("candidate", "seed", "test_accuracy", "test_loss", "best_valid_accuracy", "params", "mflops")


def digits(args, out, log, **kw):
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}  # one thread: bit-identical numbers
    url = args[args.index("--storage") + 1]
    cmd = [sys.executable, "-m", "studies.digits", *PLAN, *liveness(url), "--out", str(out), *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, **kw)


def report_rows(args, out):
    """results.json rows (the confirm runs) of the study in `args`, rebuilt from its storage in this process."""
    argv = [*PLAN, "--out", str(out), *args, "--report-only"]
    assert main("digits", list(CANDS), argv, space=space, dataset="digits", reference="plain") == 0
    rows = json.loads((out / "results.json").read_text())
    keep = lambda r: {k: v for k, v in r.items() if k in SAME or k.startswith("hp_")}  # noqa: E731
    return sorted((keep(r) for r in rows), key=lambda r: (r["candidate"], r["seed"]))


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """The same plan, one worker, nobody killed: the rows every chaotic run must reproduce."""
    out = tmp_path_factory.mktemp("undisturbed")
    args = ["--study-name", "calm", "--storage", str(out / "optuna.journal")]
    with open(out / "run.log", "w") as log:
        assert digits(args, out, log).wait(timeout=180) == 0, (out / "run.log").read_text()[-3000:]
    return report_rows(args, out)


@pytest.fixture(scope="module")
def own_postgres():
    """A throwaway server of this module's own, so restarting it disturbs no other test: (url, its directory)."""
    pg_dir = tempfile.mkdtemp(prefix="slowai-chaos-pg-")
    r = subprocess.run(["bash", str(PG_SCRIPT), "--throwaway", pg_dir], capture_output=True, text=True, timeout=180)
    if r.returncode:
        subprocess.run(["bash", str(PG_SCRIPT), "--stop", pg_dir], capture_output=True, timeout=120)
        if r.returncode == 3 and os.environ.get("CI") != "true":
            pytest.skip("no PostgreSQL server binaries: install postgresql")
        pytest.fail(f"could not start a throwaway PostgreSQL server: {r.stderr.strip()}", pytrace=False)
    url = r.stdout.strip()
    assert parse_qs(urlparse(url).query)["host"] == [pg_dir]
    yield url, pg_dir
    subprocess.run(["bash", str(PG_SCRIPT), "--stop", pg_dir], capture_output=True, timeout=120)


def holders(storage, name):
    """{pid: "candidate/stage tN"} of the workers holding a RUNNING trial of the study right now."""
    out = {}
    for cand in CANDS:
        for stage in ("tune", "confirm"):
            study_name = optuna_name(name, cand, stage)
            try:
                running = optuna.load_study(study_name=study_name, storage=storage).get_trials(
                    deepcopy=False, states=(TrialState.RUNNING,)
                )
            except KeyError:  # not created yet
                continue
            for t in running:
                pid = str(t.user_attrs.get("worker", "")).split(":")
                if len(pid) == 3 and pid[1].isdigit():
                    out[int(pid[1])] = f"{cand}/{stage} t{t.number}"
    return out


def unleash(url, name, out, seed, outage=None):
    """Run WORKERS workers on the study; KILL_ROUNDS times, at a random moment, SIGKILL a random worker (one holding a
    running trial, checked while it is frozen, except in the last round) and start it again at once; in the second
    round, take the database down first (`outage`: (down, up)), start the killed worker while it is down, and bring it
    back OUTAGE_S s later; then let the workers finish. Returns what was done."""
    rng = random.Random(seed)
    logs = out / "logs"
    logs.mkdir(parents=True)
    args = ["--storage", url, "--study-name", name]

    def start(i, gen):
        log = open(logs / f"worker{i}.{gen}.log", "w")
        return digits([*args, "--worker-id", str(i)], out / f"w{i}", log, start_new_session=True)

    procs, gens, events = [start(i, 0) for i in range(WORKERS)], [0] * WORKERS, [f"replay: SLOWAI_CHAOS_SEED={seed}"]
    storage = open_storage(url, Patience(60, lambda m: None))  # one connection pool for all looks; the outage waited
    deadline = time.monotonic() + DEADLINE_S

    def held_now():
        """(alive workers, what each live worker holds); checks that no worker gave up by itself."""
        for i, p in enumerate(procs):  # a worker that gave up by itself (not killed) fails the test
            assert p.poll() in (None, 0), f"worker {i} exited {p.returncode}:\n" + _tail(
                logs / f"worker{i}.{gens[i]}.log"
            )
        alive = {p.pid: i for i, p in enumerate(procs) if p.poll() is None}
        return alive, {pid: what for pid, what in holders(storage, name).items() if pid in alive}

    def frozen_holding(pid, what):
        """Freeze the worker, then check it still holds `what` (a write sent just before has landed by then): a
        trial that finished as it was picked is no hit, so the worker goes on and another moment is picked."""
        os.killpg(pid, signal.SIGSTOP)
        time.sleep(0.3)
        if holders(storage, name).get(pid) == what:
            return True
        os.killpg(pid, signal.SIGCONT)
        return False

    for round_ in range(KILL_ROUNDS):
        last = round_ == KILL_ROUNDS - 1  # the last round hits any worker, whatever it is doing (idle, starting)
        pid = None
        while True:  # a live worker holding a trial, a random moment into it (a dead one's trial does not count)
            alive, held = held_now()
            if held:
                time.sleep(rng.uniform(0.0, 1.5))
                alive, held = held_now()
            if last and alive:
                pid = rng.choice(sorted(alive))
            elif held and frozen_holding(candidate := rng.choice(sorted(held)), held[candidate]):
                pid = candidate
            if pid is not None or not alive:
                break
            assert time.monotonic() < deadline, f"no live worker held a trial within {DEADLINE_S} s: {events}"
            time.sleep(0.1)
        if pid is None:
            break
        i = alive[pid]
        os.killpg(pid, signal.SIGKILL)  # its whole process group: nothing of it survives
        procs[i].wait()
        events.append(f"killed worker {i} holding {held.get(pid, 'nothing')}")
        down = outage is not None and round_ == 1
        if down:
            outage[0]()
            events.append("database down")
        gens[i] += 1
        procs[i] = start(i, gens[i])  # a worker starting while its database is down waits for it
        if down:
            time.sleep(OUTAGE_S)
            outage[1]()
            events.append(f"database up again after {OUTAGE_S} s")
    for i, p in enumerate(procs):
        code = p.wait(timeout=max(deadline - time.monotonic(), 1))
        assert code == 0, f"worker {i} exited {code} after {events}:\n" + _tail(logs / f"worker{i}.{gens[i]}.log")
    return events


def _tail(path, n=3000):
    return path.read_text()[-n:]


def assert_exactly_the_plan(url, name):
    """Exactly the requested work, each piece once; returns how many trials lost their worker (and were retried)."""
    storage, lost = open_storage(url), 0
    for cand in CANDS:
        tune, conf = (
            optuna.load_study(study_name=optuna_name(name, cand, s), storage=storage).get_trials()
            for s in ("tune", "confirm")
        )
        assert not [t for t in tune + conf if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        assert not [t for t in tune + conf if is_final(t)], "a lost worker's trial must be retried, not failed"
        done = [t for t in tune if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["slot"] for t in done) == list(range(TRIALS))  # each slot once
        best = max(done, key=lambda t: t.value)
        runs = [t for t in conf if t.state == TrialState.COMPLETE]
        assert sorted(t.user_attrs["seed"] for t in runs) == list(SEEDS)  # each seed once: no duplicates
        assert {t.user_attrs["params_key"] for t in runs} == {confirm_key(best.params)}
        for t, same_study in [(t, tune) for t in tune] + [(t, conf) for t in conf]:
            if t.state == TrialState.FAIL and not t.user_attrs.get("fail_reason", "").startswith("surplus"):
                retries = [r for r in same_study if r.user_attrs.get("retry_of") == t.number]
                # The retry runs what was drawn (a worker killed mid-draw leaves a prefix; the retry draws its slot
                # again, and while TPE still draws at random the seeded draw repeats that prefix)
                assert len(retries) == 1 and retries[0].params.items() >= t.params.items(), t.user_attrs["fail_reason"]
                for kept in ("slot", "seed"):  # a tune run's seed follows from its slot
                    assert kept not in t.user_attrs or retries[0].user_attrs[kept] == t.user_attrs[kept]
                lost += "lost" in t.user_attrs["fail_reason"] or "died" in t.user_attrs["fail_reason"]
    return lost


def pg_ctl(pg_dir, what):
    """`--down` or `--up`: the throwaway server stops (keeping its data) or starts again."""
    r = subprocess.run(["bash", str(PG_SCRIPT), what, pg_dir], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def chaos(tmp_path, undisturbed, url, seed, outage=None):
    events = unleash(url, "chaos", tmp_path, seed, outage)
    assert outage is None or "database down" in events, events
    assert assert_exactly_the_plan(url, "chaos") >= 2, events  # the kills did hit running trials
    rows = report_rows(["--study-name", "chaos", "--storage", url], tmp_path / "report")
    assert rows == undisturbed, "\n".join([*events, *trials_table(url, "chaos")])


def trials_table(url, name):
    """One line per trial of the study: what a failure needs to tell a kill's consequence from a numeric drift."""
    storage, lines = open_storage(url), []
    for cand in CANDS:
        for stage in ("tune", "confirm"):
            for t in optuna.load_study(study_name=optuna_name(name, cand, stage), storage=storage).get_trials():
                a = t.user_attrs
                keep = {k: a[k] for k in ("slot", "seed", "retry_of", "fail_reason", "worker") if k in a}
                lines.append(f"{cand}/{stage} t{t.number} {t.state.name} {t.value} {t.params} {keep}")
    return lines


@pytest.mark.slow
def test_chaos_on_the_journal(tmp_path, undisturbed):
    chaos(tmp_path, undisturbed, str(tmp_path / "optuna.journal"), chaos_seed(1))


@pytest.mark.slow
def test_chaos_on_postgres_with_a_database_outage(tmp_path, undisturbed, own_postgres):
    url, pg_dir = own_postgres
    chaos(tmp_path, undisturbed, url, chaos_seed(2), (lambda: pg_ctl(pg_dir, "--down"), lambda: pg_ctl(pg_dir, "--up")))


@pytest.mark.slow
def test_chaos_on_redis_with_a_server_restart(tmp_path, undisturbed, redis_server):
    chaos(tmp_path, undisturbed, redis_server.url, chaos_seed(3), (redis_server.down, redis_server.up))


@pytest.mark.slow
def test_a_study_started_while_its_database_is_down_waits_for_it(tmp_path, own_postgres):
    """Down at start-up: the study waits (saying so) and completes; with --storage-patience 0 it is one line."""
    url, pg_dir = own_postgres
    args = ["--storage", url, "--study-name", "late-db", "--trials", "1", "--seeds", "1", "--epochs", "1"]
    pg_ctl(pg_dir, "--down")
    try:
        impatient = digits([*args, "--storage-patience", "0"], tmp_path / "impatient", subprocess.PIPE)
        said = impatient.communicate(timeout=120)[0].decode()
        patient = digits(args, tmp_path / "patient", subprocess.PIPE)
        output = Output(patient)
        assert output.says("storage unreachable ("), output.all(0)  # it met the outage, however long it took to start
        time.sleep(OUTAGE_S)
        assert patient.poll() is None, "a patient study must wait for its database"
    finally:
        pg_ctl(pg_dir, "--up")
    patient.wait(timeout=300)
    out = output.all()
    errors = [line for line in said.splitlines() if line.startswith("error: ")]
    assert impatient.returncode == 2 and len(errors) == 1 and said.rstrip().endswith(errors[0]), said
    assert "--storage-patience 0: not retried" in errors[0]
    assert not (tmp_path / "impatient").exists()
    assert patient.returncode == 0, out[-3000:]
    assert "storage reachable again" in out, out[-3000:]
    assert (tmp_path / "patient" / "report.md").exists()


class Output:
    """A process's output, read line by line in a thread, so a test waits for what the process says rather than for
    a start-up time it guesses."""

    def __init__(self, proc):
        self.lines, self.ended, self.grew = [], False, threading.Condition()
        threading.Thread(target=self._read, args=(proc.stdout,), daemon=True).start()

    def _read(self, stream):
        for raw in iter(stream.readline, b""):
            with self.grew:
                self.lines.append(raw.decode())
                self.grew.notify_all()
        with self.grew:
            self.ended = True
            self.grew.notify_all()

    def says(self, text, timeout=120):
        """Wait up to `timeout` s for a line containing `text`; False once the output ended without one."""
        seen = lambda: any(text in line for line in self.lines)  # noqa: E731
        with self.grew:
            return self.grew.wait_for(lambda: seen() or self.ended, timeout) and seen()

    def all(self, timeout=60):
        """Everything it said, once its output has ended."""
        with self.grew:
            self.grew.wait_for(lambda: self.ended, timeout)
            return "".join(self.lines)
