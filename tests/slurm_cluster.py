"""A throwaway single-node Slurm cluster for the job-array tests: a private munged (fresh key) and slurmctld + slurmd
on free ports, all state, spool and logs in one temporary directory, clients pointed at it through SLURM_CONF, and
everything stopped and deleted at the end of the session. Nothing under /etc is read or changed.

Skips only where the binaries (or root, which slurmd needs to start jobs) are missing; with CI=true that fails.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
PARTITION = "debug"
START_TIMEOUT_S = 60


def _unavailable(reason: str) -> None:
    """Skip with the reason; in CI a missing Slurm is a failure, like a missing PostgreSQL."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Slurm tests: {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    """90% of this machine's memory: slurmd drains a node that reports less than its configured RealMemory."""
    kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in line)
    return int(kb / 1024 * 0.9)


def _start_munge(base: Path) -> Path:
    """munged as the munge user with a fresh key and its own socket; the socket's path."""
    d = base / "munge"
    d.mkdir()
    (d / "munge.key").write_bytes(os.urandom(1024))
    (d / "munge.key").chmod(0o600)
    user = pwd.getpwnam("munge")
    for path in (d, d / "munge.key"):
        os.chown(path, user.pw_uid, user.pw_gid)
    files = {"key-file": "munge.key", "socket": "munge.socket", "pid-file": "munged.pid", "log-file": "munged.log"}
    args = [f"--{k}={d / v}" for k, v in {**files, "seed-file": "munged.seed"}.items()]
    subprocess.run(["runuser", "-u", "munge", "--", "munged", *args], check=True, capture_output=True, timeout=30)
    return d / "munge.socket"


def _write_conf(base: Path, munge_socket: Path) -> Path:
    """slurm.conf for one node (this machine's CPUs and memory) and one partition; no accounting daemon."""
    host = socket.gethostname().split(".")[0]
    conf = f"""
        ClusterName=slowaitest
        SlurmctldHost={host}(127.0.0.1)
        SlurmctldPort={_free_port()}
        SlurmdPort={_free_port()}
        SlurmUser=root
        SlurmdUser=root
        AuthType=auth/munge
        AuthInfo=socket={munge_socket}
        StateSaveLocation={base / "state"}
        SlurmdSpoolDir={base / "spool"}
        SlurmctldPidFile={base / "slurmctld.pid"}
        SlurmdPidFile={base / "slurmd.pid"}
        SlurmctldLogFile={base / "slurmctld.log"}
        SlurmdLogFile={base / "slurmd.log"}
        ProctrackType=proctrack/linuxproc
        TaskPlugin=task/none
        SelectType=select/cons_tres
        SelectTypeParameters=CR_Core
        MpiDefault=none
        ReturnToService=2
        AccountingStorageType=accounting_storage/none
        JobAcctGatherType=jobacct_gather/none
        KillWait=5
        NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={_mem_mb()} State=UNKNOWN
        PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
    """
    path = base / "slurm.conf"
    path.write_text("\n".join(line.strip() for line in conf.strip().splitlines()) + "\n")
    return path


def _wait_idle(env: dict[str, str]) -> None:
    """Until the node has registered with the controller and takes jobs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        r = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True, timeout=30)
        if r.stdout.strip() == "idle":
            return
        time.sleep(0.5)
    raise RuntimeError(f"the Slurm node did not become idle within {START_TIMEOUT_S} s (sinfo: {r.stdout.strip()})")


def _stop(base: Path, env: dict[str, str]) -> None:
    """Cancel what is left, then stop the daemons this fixture started (by their pid files) and delete the dir."""
    subprocess.run(["scancel", "--user=root"], env=env, capture_output=True, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # slurmstepd outlives slurmd: let the jobs' processes end first
        r = subprocess.run(["squeue", "-h"], env=env, capture_output=True, text=True, timeout=30)
        if r.returncode or not r.stdout.strip():
            break
        time.sleep(0.5)
    for pid_file in (base / "slurmd.pid", base / "slurmctld.pid", base / "munge" / "munged.pid"):
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), 15)
            except (ProcessLookupError, ValueError):
                pass
    time.sleep(0.5)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The path of a running single-node cluster's slurm.conf, exported as SLURM_CONF for this session (sbatch,
    squeue and scancel in tests and in the study commands they start all talk to it)."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        _unavailable(f"no Slurm: {', '.join(missing)} not installed (scripts/setup.sh installs them as root)")
    if os.geteuid() != 0:
        _unavailable("a throwaway Slurm needs root (slurmd starts jobs as their user)")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        _unavailable("no munge user (the munge package creates it; munged will not run as root)")
    base = Path(tempfile.mkdtemp(prefix="slowai-slurm-"))
    base.chmod(0o755)  # munged (the munge user) must reach its directory
    env = os.environ | {"SLURM_CONF": str(base / "slurm.conf")}
    try:
        conf = _write_conf(base, _start_munge(base))
        for d in ("state", "spool"):
            (base / d).mkdir()
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(conf)], env=env, check=True, capture_output=True, timeout=30)
        _wait_idle(env)
    except Exception as e:
        logs = "\n".join(f"{p.name}: {p.read_text()[-800:]}" for p in sorted(base.glob("**/*.log")))
        _stop(base, env)
        pytest.fail(f"could not start a throwaway Slurm: {e}\n{logs}", pytrace=False)
    except BaseException:
        _stop(base, env)
        raise
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    try:
        yield conf
    finally:
        os.environ.pop("SLURM_CONF") if old is None else os.environ.update(SLURM_CONF=old)
        _stop(base, env)
