"""`--launcher slurm`: the sbatch script a study submits, the checks before anything is queued, and whole studies run
as a job array on a real single-node Slurm (tests/slurm_cluster.py) sharing a PostgreSQL storage: detached and
reported later, with one task cancelled mid-trial, interrupted by Ctrl-C, and with every task cancelled."""

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from test_workers import pg_study, pg_url  # noqa: F401 (fixtures: the test server, a fresh study name on it)

from slowai.study import main
from slowai.study.cli.slurm import ENDED, SlurmOptions, sbatch_script, slurm_time_arg, task_states
from slowai.study.coordination.storage import existing_names, open_storage
from slowai.study.coordination.trials import FINISHED
from slowai.study.spec import optuna_name
from studies.digits import space

ROOT = Path(__file__).resolve().parents[1]
CANDS, TRIALS, SEEDS = ("residual", "plain"), 2, (0, 1)
PLAN = ["--quick", "--trials", str(TRIALS), "--seeds", str(len(SEEDS)), "--epochs", "2", "--subset", "1200"]
PLAN += ["--pruner", "none", "--wandb", "disabled", "--no-compile", "--no-channels-last"]
PLAN += ["--heartbeat-interval", "1", "--grace-period", "3", "--launcher", "slurm", "--workers", "2"]
SAME = ("candidate", "seed", "test_accuracy", "test_loss", "best_valid_accuracy", "params", "mflops")


# ------------------------------------------------------------------------------------------- the sbatch script
def test_sbatch_script_asks_for_the_resources_and_runs_one_worker_per_task():
    resources = {"partition": "gpu", "time": "2:00:00", "cpus_per_task": 4, "gpus_per_task": "a100:1", "mem": "16G"}
    opts = SlurmOptions(**resources, extra=("--account=lab --qos=long",), requeue=True)
    command = ["/venv/bin/python", "-m", "studies.digits", "--storage", "postgresql://u@db/s", "--workers", "4"]
    script = sbatch_script(command, 4, opts, "rvp 1", Path("/scratch/runs/rvp/slurm"), Path("/home/me/slowai"))
    assert script == (
        "#!/bin/bash\n"
        "# slowai study rvp 1: 4 workers sharing one Optuna storage (written by --launcher slurm)\n"
        "#SBATCH --job-name='rvp 1'\n"
        "#SBATCH --array=0-3\n"
        "#SBATCH --ntasks=1\n"
        "#SBATCH --output=/scratch/runs/rvp/slurm/%A_%a.out\n"
        "#SBATCH --chdir=/home/me/slowai\n"
        "#SBATCH --partition=gpu\n"
        "#SBATCH --time=2:00:00\n"
        "#SBATCH --cpus-per-task=4\n"
        "#SBATCH --gpus-per-task=a100:1\n"
        "#SBATCH --mem=16G\n"
        "#SBATCH --requeue\n"
        "#SBATCH --open-mode=append\n"
        "#SBATCH --account=lab --qos=long\n"
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}\n"
        "exec /venv/bin/python -m studies.digits --storage postgresql://u@db/s --workers 4 "
        '--launcher local --workers 1 --worker-id "$SLURM_ARRAY_TASK_ID"\n'
    )


def test_sbatch_script_without_resources_leaves_them_to_the_cluster_and_is_not_requeued():
    script = sbatch_script(["python", "-m", "studies.digits"], 2, SlurmOptions(), "s", Path("/o"), Path("/w"))
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives[5:] == ["#SBATCH --no-requeue"]
    assert directives[1] == "#SBATCH --array=0-1"


@pytest.mark.parametrize("text", ["30", "30:00", "2:00:00", "1-0", "1-12:00", "0-0:0:5"])
def test_slurm_time_accepts_slurm_formats(text):
    assert slurm_time_arg(text) == text


@pytest.mark.parametrize("text", ["0", "00:00:00", "0-0", "soon", "1:2:3:4", "-5", ""])
def test_slurm_time_refuses_zero_and_non_times(text):
    with pytest.raises(argparse.ArgumentTypeError):
        slurm_time_arg(text)


# ------------------------------------------------------------------------------ refused before anything is queued
def digits_main(argv):
    """The study command's exit status (argparse exits on a bad value; every other error returns)."""
    try:
        return main("digits", list(CANDS), argv, space=space, dataset="digits", reference="plain")
    except SystemExit as e:
        return e.code


def test_slurm_flags_without_the_slurm_launcher_are_an_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert digits_main(["--out", str(out), "--quick", "--slurm-partition", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --slurm-partition needs --launcher slurm\n" and not out.exists()


def test_a_file_storage_is_refused_for_a_cluster(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--quick", "--launcher", "slurm", "--storage", str(tmp_path / "j.journal")]
    assert digits_main(argv) == 2
    err = capsys.readouterr().err  # one line (`.` stops at a newline)
    assert re.fullmatch(r"error: --launcher slurm needs a server storage every node can reach .* file system\n", err)
    assert not out.exists()


def queued(job_name):
    """The cluster's jobs named `job_name` (the study name), as squeue lists them."""
    r = subprocess.run(["squeue", "-h", "-t", "all", "-n", job_name, "-o", "%F"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return sorted(set(r.stdout.split()))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--slurm-partition", "nosuch"], "error: Slurm refused the job array (sbatch --test-only): invalid partition"),
        (
            ["--slurm-mem", "100000T"],
            "error: Slurm refused the job array (sbatch --test-only): allocation failure: Requested node",
        ),
        (["--slurm-time", "0"], "error: argument --slurm-time: must be a positive time limit"),
    ],
)
def test_bad_resources_are_one_error_line_and_nothing_is_submitted(
    tmp_path, capsys, slurm_cluster, pg_server_url, flags, message
):
    name, out = f"bad-{uuid.uuid4().hex[:8]}", tmp_path / "out"
    argv = [*PLAN, "--storage", pg_server_url, "--study-name", name, "--out", str(out), *flags]
    assert digits_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists() and queued(name) == []
    assert not [s for s in existing_names(open_storage(pg_server_url)) if s.startswith(f"{name}/")]


# ---------------------------------------------------------------------------------- whole studies on the cluster
@pytest.fixture
def study(slurm_cluster, request):
    """A fresh study name on the test server (test_workers' pg_study: deleted afterwards), with the cluster up."""
    return request.getfixturevalue("pg_study")


LAUNCHED = []  # launching commands still running when their test fails get Ctrl-C (cancelling their job arrays)


@pytest.fixture(autouse=True)
def _interrupt_leftover_launchers():
    yield
    while LAUNCHED:
        proc = LAUNCHED.pop()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=90)


def launch(name, out, url, *extra):
    """The launching command, as a researcher types it (its tasks inherit this environment through sbatch)."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}  # one thread: bit-identical numbers
    cmd = [sys.executable, "-m", "studies.digits", *PLAN, "--storage", url, "--study-name", name, "--out", str(out)]
    proc = subprocess.Popen(
        [*cmd, *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    LAUNCHED.append(proc)
    return proc


def finish(proc, timeout=170, status=0):
    log, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == status, log[-4000:]
    return log


def wait_tasks(job, until, timeout=150):
    """The array's task states once `until(states)` holds, polled from squeue."""
    deadline = time.monotonic() + timeout
    while not until(states := task_states(job)):
        assert time.monotonic() < deadline, f"Slurm job {job}: {states} after {timeout} s"
        time.sleep(0.5)
    return states


@functools.lru_cache
def storage_at(url):
    """One storage per URL for the whole module: polling must not open a connection pool per look."""
    return open_storage(url)


def trials(url, name, cand, stage):
    return optuna.load_study(study_name=optuna_name(name, cand, stage), storage=storage_at(url)).get_trials()


def assert_exact_counts(url, name):
    """TRIALS finished tune trials and one completed run per confirm seed for each candidate, nothing left over."""
    for cand in CANDS:
        tune, confirm = trials(url, name, cand, "tune"), trials(url, name, cand, "confirm")
        assert sum(t.state in FINISHED for t in tune) == TRIALS
        assert sorted(t.user_attrs["seed"] for t in confirm if t.state == TrialState.COMPLETE) == list(SEEDS)
        assert not [t for t in tune + confirm if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def report_rows(out):
    keep = lambda r: {k: v for k, v in r.items() if k in SAME or k.startswith("hp_")}  # noqa: E731
    rows = json.loads((out / "results.json").read_text())
    return sorted((keep(r) for r in rows), key=lambda r: (r["candidate"], r["seed"]))


@pytest.fixture(scope="module")
def undisturbed(slurm_cluster, pg_server_url, tmp_path_factory):
    """One study run by 2 array tasks, nobody cancelled, launched with --detach and reported with --report-only once
    the array has ended: (launcher log, out dir, study name, job id)."""
    name, out = f"slurm-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("undisturbed")
    log = finish(launch(name, out, pg_server_url, "--detach"), timeout=60)
    job = re.search(r"submitted Slurm job array (\d+): 2 workers", log).group(1)
    wait_tasks(job, lambda states: states and all(s in ENDED for s in states.values()))
    argv = [*PLAN, "--storage", pg_server_url, "--study-name", name, "--out", str(out), "--report-only"]
    assert digits_main(argv) == 0
    return log, out, name, job


@pytest.mark.slow
def test_two_detached_array_tasks_finish_the_study_and_report_only_reports_it(undisturbed, pg_server_url):
    log, out, name, job = undisturbed
    assert f"watch it with: squeue -j {job}\ndetached" in log and f"Slurm job {job}:" not in log  # returned at once
    assert task_states(job) == {0: "COMPLETED", 1: "COMPLETED"}
    assert_exact_counts(pg_server_url, name)
    assert {p.name for p in (out / "slurm").iterdir()} == {"job.sh", f"{job}_0.out", f"{job}_1.out"}
    assert (out / "slurm" / "job.sh").stat().st_mode & 0o777 == 0o600  # it holds the storage URL
    logs = "".join((out / "slurm" / f"{job}_{task}.out").read_text() for task in (0, 1))
    for cand in CANDS:  # every trial's line is in the log of the task that ran it
        for n in range(TRIALS):
            assert re.search(rf"^\[worker [01]\] .*{cand} tune t{n}: valid acc", logs, re.MULTILINE), logs
        for seed in SEEDS:
            assert re.search(rf"^\[worker [01]\] .*{cand} confirm seed {seed}: test acc", logs, re.MULTILINE), logs
    assert "| residual |" in (out / "report.md").read_text()
    assert len(report_rows(out)) == len(CANDS) * len(SEEDS)


def task_env(worker):
    """The environment of the worker process `host:pid:random`, or None once it has exited."""
    try:
        text = Path(f"/proc/{worker.split(':')[1]}/environ").read_text()
    except FileNotFoundError:
        return None
    return dict(v.split("=", 1) for v in text.split("\0") if "=" in v)


def running_task(launcher, url, name, timeout=90):
    """(candidate, trial, Slurm job id, array task id) of a tune trial some task is in the first epoch of, read from
    the storage and the task process's environment (the trial's worker id holds its pid: the task execs the worker)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert launcher.poll() is None, launcher.communicate()[0][-3000:]
        names = existing_names(storage_at(url))
        for cand in [c for c in CANDS if optuna_name(name, c, "tune") in names]:
            for t in trials(url, name, cand, "tune"):
                training = "wandb_run_id" in t.user_attrs and not t.intermediate_values  # set as training starts
                if t.state == TrialState.RUNNING and training and (env := task_env(t.user_attrs["worker"])):
                    return cand, t, env["SLURM_ARRAY_JOB_ID"], env["SLURM_ARRAY_TASK_ID"]
        time.sleep(0.2)
    raise AssertionError(f"no tune trial of {name} was running within {timeout} s")


@pytest.mark.slow
def test_a_task_cancelled_mid_trial_loses_nothing(undisturbed, study, pg_server_url, tmp_path):
    launcher = launch(study, tmp_path / "out", pg_server_url)
    cand, victim, job, task = running_task(launcher, pg_server_url, study)
    subprocess.run(["scancel", f"{job}_{task}"], check=True)
    log = finish(launcher)
    assert f"Slurm job {job}: 1 CANCELLED, 1 COMPLETED" in log and "took " in log
    tune = trials(pg_server_url, study, cand, "tune")
    dead = tune[victim.number]
    assert dead.state == TrialState.FAIL and "died (process gone)" in dead.user_attrs["fail_reason"]
    (retry,) = [t for t in tune if t.user_attrs.get("retry_of") == dead.number]
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params
    assert_exact_counts(pg_server_url, study)
    assert report_rows(tmp_path / "out") == report_rows(undisturbed[1])  # the same numbers as the undisturbed run


@pytest.mark.slow
def test_ctrl_c_cancels_the_array_and_its_workers_fail_their_trials_cleanly(study, pg_server_url, tmp_path):
    launcher = launch(study, tmp_path / "out", pg_server_url, "--epochs", "20")  # still training when Ctrl-C lands
    cand, victim, job, _ = running_task(launcher, pg_server_url, study)
    launcher.send_signal(signal.SIGINT)
    log, _ = launcher.communicate(timeout=90)
    assert launcher.returncode == 130 and f"cancelling Slurm job {job} (scancel {job})" in log, log[-3000:]
    assert log.rstrip().endswith(
        "error: interrupted; the running trial was marked FAIL, rerun the same command to resume"
    )
    assert not [s for s in task_states(job).values() if s not in ENDED]  # nothing of the array runs or waits
    # The trial being trained is failed cleanly. (A task interrupted between popping a trial and recording itself,
    # or slower to stop than the launcher's wait on a loaded machine, leaves one RUNNING: the rerun's lease takes
    # it over, as tests/test_failures.py shows for the ask() window.)
    assert trials(pg_server_url, study, cand, "tune")[victim.number].user_attrs["fail_reason"] == "interrupted (Ctrl-C)"


@pytest.mark.slow
def test_every_task_cancelled_with_work_left_is_one_error_line(study, pg_server_url, tmp_path):
    launcher = launch(study, tmp_path / "out", pg_server_url)
    deadline = time.monotonic() + 90
    while not (jobs := queued(study)):
        assert launcher.poll() is None and time.monotonic() < deadline, "the array was not submitted"
        time.sleep(0.2)
    subprocess.run(["scancel", jobs[0]], check=True)  # before (or as) its tasks start: nothing of the study is done
    log = finish(launcher, status=2)
    m = re.search(rf"error: (\d+) jobs unfinished after Slurm job {jobs[0]} ended \(2 CANCELLED; logs in (.+)/\)", log)
    assert m and int(m.group(1)) > 0 and m.group(2) == str(tmp_path / "out" / "slurm"), log[-2000:]
    assert log.rstrip().endswith("rerun the same command to resume") and not (tmp_path / "out" / "report.md").exists()
