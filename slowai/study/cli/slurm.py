"""`--launcher slurm`: the study's workers as one Slurm job array, each task one worker of the same command.

Workers coordinate only through the storage, so Slurm schedules and slowai does not: the launching command stores
the plan, submits `--workers` array tasks with `sbatch`, watches them with `squeue` and writes the report once the
study's work is done. A task that is cancelled, preempted or out of time loses nothing: its trial's heartbeat stops
and a remaining (or requeued) worker retries it (`coordination.lease`).
"""

from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slowai.study.analysis.results import StudyResult
from slowai.study.cli.checks import nonempty, positive_int
from slowai.study.coordination.lease import Liveness
from slowai.study.coordination.storage import storage_file
from slowai.study.runner import Runner
from slowai.study.spec import Budget, StudyError, StudySpec

# A task in one of these states is over (a requeued one goes back to PENDING); any other is still queued or running.
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL"}
ENDED |= {"DEADLINE", "REVOKED", "SPECIAL_EXIT"}
POLL_S = 5.0  # squeue is cheap, but a cluster's controller is shared: a few seconds between looks
INTERRUPT_WAIT_S = 30.0  # after Ctrl-C, how long interrupted workers get to mark their trials FAIL before scancel
SQUEUE_PATIENCE_S = 600.0  # a controller restart or hiccup is waited out this long, like an unreachable storage
TIME_RE = re.compile(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?")
MEM_RE = re.compile(r"\d+[KMGT]?", re.IGNORECASE)
GPUS_RE = re.compile(r"(?:[\w.-]+:)?[1-9]\d*")
RESOURCES = ("partition", "time", "cpus_per_task", "gpus_per_task", "mem")  # SlurmOptions fields, sbatch's order


def slurm_time_arg(text: str) -> str:
    """argparse type: a Slurm time limit (MIN, MIN:SS, H:MM:SS, D-H, D-H:MM, D-H:MM:SS) that is not zero, which
    Slurm would read as 'no limit'."""
    m = TIME_RE.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"expected a Slurm time such as 30, 2:00:00 or 1-12:00, got {text!r}")
    if not any(int(g) for g in m.groups() if g):
        raise argparse.ArgumentTypeError(f"must be a positive time limit (0 means none to Slurm), got {text!r}")
    return text.strip()


def _pattern_arg(pattern: re.Pattern, example: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not pattern.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"expected e.g. {example}, got {text!r}")
        return text.strip()

    return check


def add_slurm_args(parser: argparse.ArgumentParser) -> None:
    """The launcher's flags: where the `--workers` run (this machine, or a Slurm job array) and with what."""
    a = parser.add_argument
    a("--launcher", choices=("local", "slurm"), default="local", help="where --workers run (default: %(default)s)")
    a("--detach", action="store_true", help="slurm: return once submitted; --report-only builds the report later")
    a("--slurm-partition", type=nonempty, metavar="NAME", help="slurm: partition (default: the cluster's default)")
    a("--slurm-time", type=slurm_time_arg, metavar="TIME", help="slurm: time limit per task, e.g. 2:00:00")
    a("--slurm-cpus-per-task", type=positive_int, metavar="N", help="slurm: CPUs per task (and its torch threads)")
    a("--slurm-gpus-per-task", type=_pattern_arg(GPUS_RE, "1 or a100:1"), metavar="N", help="slurm: GPUs per task")
    a("--slurm-mem", type=_pattern_arg(MEM_RE, "16G"), metavar="SIZE", help="slurm: memory per node, e.g. 16G")
    a(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="'OPTS'",
        help="slurm: more sbatch options, e.g. --slurm-extra='--account=lab --qos=long' (repeatable)",
    )
    a("--slurm-requeue", action="store_true", help="slurm: a preempted or failed node's task is requeued and rejoins")


@dataclass(frozen=True)
class SlurmOptions:
    """What the job array asks Slurm for; None leaves a resource to the cluster's defaults."""

    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    gpus_per_task: str | None = None
    mem: str | None = None
    extra: tuple[str, ...] = ()
    requeue: bool = False
    detach: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> SlurmOptions:
        own = {k: getattr(args, f"slurm_{k}") for k in (*RESOURCES, "requeue")}
        return cls(**own, extra=tuple(args.slurm_extra), detach=args.detach)

    def directives(self) -> list[str]:
        """The `#SBATCH` options for these resources (sbatch's own names), requeue or not, then the extra ones."""
        wanted = {k: getattr(self, k) for k in RESOURCES}
        out = [f"--{k.replace('_', '-')}={shlex.quote(str(v))}" for k, v in wanted.items() if v is not None]
        requeue = ["--requeue", "--open-mode=append"] if self.requeue else ["--no-requeue"]  # a rerun adds to its log
        return [*out, *requeue, *self.extra]


def sbatch_script(command: Sequence[str], n: int, opts: SlurmOptions, name: str, log_dir: Path, cwd: Path) -> str:
    """A job array of `n` tasks, task i running `command` as worker i (one per task, one thread per CPU); the task
    execs the worker, so a signal to the task (scancel, Ctrl-C forwarded) reaches the worker itself."""
    worker = [*command, "--launcher", "local", "--workers", "1", "--worker-id"]
    head = [
        f"--job-name={shlex.quote(name)}",
        f"--array=0-{n - 1}",
        "--ntasks=1",
        f"--output={shlex.quote(str(log_dir / '%A_%a.out'))}",
        f"--chdir={shlex.quote(str(cwd))}",
    ]
    lines = [
        "#!/bin/bash",
        f"# slowai study {name}: {n} workers sharing one Optuna storage (written by --launcher slurm)",
        *(f"#SBATCH {d}" for d in [*head, *opts.directives()]),
        "export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}",
        f'exec {shlex.join(worker)} "$SLURM_ARRAY_TASK_ID"',
    ]
    return "\n".join(lines) + "\n"


def check_storage(storage: str | None) -> None:
    """Every task must reach the storage from its own node: a server URL, not a file (locks fail on NFS)."""
    if storage is None or storage_file(storage) is not None or storage.lower().startswith("sqlite"):
        what = "the default journal file" if storage is None else f"--storage {storage}"
        raise StudyError(
            f"--launcher slurm needs a server storage every node can reach (--storage postgresql://...): {what} "
            "is a file, and journal/SQLite file locks are not safe on a cluster's network file system"
        )


def _slurm(args: Sequence[str], script: str | None = None) -> subprocess.CompletedProcess:
    """Run a Slurm client command (sbatch, squeue, scancel) and capture its output."""
    if shutil.which(args[0]) is None:
        raise StudyError(f"--launcher slurm needs Slurm's {args[0]} on PATH (run on the cluster's login node)")
    try:
        return subprocess.run(args, input=script, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:  # an overloaded controller: squeue asks again later, sbatch fails
        return subprocess.CompletedProcess(args, 1, "", f"error: {args[0]} got no answer from Slurm within 60 s")


def _refusal(stderr: str) -> str:
    """Slurm's reason in one line: its `fatal:`, else its first (most specific) `error:`, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for mark in ("fatal:", "error:"):
        if found := [line.split(mark, 1)[1].strip() for line in lines if mark in line]:
            return found[0]
    return lines[-1] if lines else "no reason given"


def dry_run(script: str) -> None:
    """`sbatch --test-only`: Slurm checks partition, limits and resources without queueing anything."""
    r = _slurm(["sbatch", "--test-only"], script)
    if r.returncode:
        raise StudyError(f"Slurm refused the job array (sbatch --test-only): {_refusal(r.stderr)}")


def submit(script: str, path: Path) -> str:
    """Write the script (owner-only: it holds the storage URL) and submit it; the job id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(script)
    r = _slurm(["sbatch", "--parsable", str(path)])
    if r.returncode:
        raise StudyError(f"sbatch failed: {_refusal(r.stderr)}")
    return r.stdout.strip().split(";")[0]


def task_states(job: str) -> dict[int, str] | None:
    """{array task: state} from squeue (ended tasks too, while the controller keeps them); {} once the job is gone
    from its memory, None when squeue cannot answer right now."""
    r = _slurm(["squeue", "--noheader", "--array", "--states=all", f"--jobs={job}", "--format=%K %T"])
    if r.returncode:
        return {} if "Invalid job id" in r.stderr else None
    pairs = (line.split() for line in r.stdout.splitlines() if line.strip())
    return {int(task): state for task, state in pairs if task.isdigit()}


def summary(states: dict[int, str]) -> str:
    """'1 COMPLETED, 1 RUNNING': a job array at a glance (states in alphabetical order)."""
    return ", ".join(f"{n} {state}" for state, n in Counter(sorted(states.values())).items()) or "gone from squeue"


def watch(job: str, log: Callable[[str], None], poll_s: float = POLL_S) -> dict[int, str]:
    """Poll squeue until every task has ended (a requeued one is queued again); their states. Ctrl-C cancels all."""
    seen: dict[int, str] | None = None
    blind_since: float | None = None
    try:
        while True:
            states = task_states(job)
            if states is None:  # the controller is restarting or overloaded: the tasks run on regardless
                blind_since = blind_since or time.monotonic()
                if time.monotonic() - blind_since > SQUEUE_PATIENCE_S:
                    raise StudyError(f"squeue cannot report Slurm job {job}; when it ends, use --report-only")
            elif states != seen:
                log(f"Slurm job {job}: {summary(states)}")
                seen, blind_since = states, None
            if states is not None and all(s in ENDED for s in states.values()):
                return states
            time.sleep(poll_s)
    except KeyboardInterrupt:
        cancel(job, log)
        raise


def cancel(job: str, log: Callable[[str], None], wait_s: float = INTERRUPT_WAIT_S) -> None:
    """SIGINT to every running worker (it marks its trial FAIL, as a local worker on Ctrl-C does), then scancel."""
    log(f"cancelling Slurm job {job} (scancel {job})")
    _slurm(["scancel", "--batch", "--signal=INT", job])
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline and "RUNNING" in (task_states(job) or {0: "RUNNING"}).values():
            time.sleep(1)
    finally:
        _slurm(["scancel", job])


def launcher(args: argparse.Namespace, local: Callable[..., Any]) -> Callable[..., Any]:
    """`local` (run_study), or its Slurm twin when `--launcher slurm` starts the work (not a plan, report or task)."""
    if args.worker_id is not None:  # a task of the array (or of local --workers): one worker, whatever it was sent
        return local
    slurm_flags = [k for k, v in vars(args).items() if k.startswith("slurm_") and v not in (None, False, [])]
    if args.launcher == "local" and (slurm_flags or args.detach):
        first = (slurm_flags or ["detach"])[0].replace("_", "-")
        raise StudyError(f"--{first} needs --launcher slurm")
    if args.launcher == "local" or args.plan_only or args.report_only:
        return local
    opts = SlurmOptions.from_args(args)
    return lambda spec, **kw: run_on_slurm(opts, spec, **kw)


def run_on_slurm(
    opts: SlurmOptions,
    spec: StudySpec,
    *,
    workers: int = 1,
    worker_command: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
    **run: Any,
) -> StudyResult:
    """run_study's Slurm twin: check, plan and store the plan, submit `workers` array tasks, wait, then report."""
    check_storage(spec.storage)
    if not worker_command:
        raise StudyError("--launcher slurm needs the command that starts one worker (worker_command)")
    log_dir = spec.out_dir.absolute() / "slurm"
    script = sbatch_script(worker_command, workers, opts, spec.name, log_dir, Path.cwd())
    dry_run(script)
    runner = _open_runner(spec, log, **run)
    before, t0 = runner.confirm_runs(), time.perf_counter()
    job = submit(script, log_dir / "job.sh")
    log(f"submitted Slurm job array {job}: {workers} workers, logs in {log_dir}/\nwatch it with: squeue -j {job}")
    if opts.detach:
        log("detached: once it has finished, the same command with --report-only writes the report")
        return runner.result()
    states = watch(job, log)
    if left := runner.scheduler().pending():
        raise StudyError(
            f"{len(left)} jobs unfinished after Slurm job {job} ended ({summary(states)}; logs in {log_dir}/); "
            "rerun the same command to resume"
        )
    return runner.finish(before, time.perf_counter() - t0, f"Slurm job array {job}, {workers} tasks", workers)


def _open_runner(
    spec: StudySpec,
    log: Callable[[str], None],
    budget: Budget | None = None,
    quick: bool = False,
    time_budget_s: float | None = None,
    liveness: Liveness | None = None,
    **overrides: Any,
) -> Runner:
    """A Runner with its plan printed and stored and every Optuna study created, so the tasks resume this plan."""
    for unused in ("plan_only", "report_only", "worker_id"):  # launcher() leaves plans, reports and tasks to run_study
        overrides.pop(unused, None)
    kw = {k: v for k, v in overrides.items() if v is not None}
    runner = Runner(spec, budget, quick, time_budget_s, kw, log, liveness or Liveness())
    log(runner.prepare().describe(spec))
    runner.store_plan()
    return runner
