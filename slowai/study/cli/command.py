"""The shared command line of every study script, so a study file only names its candidates.

Bad input ends as one `error: ...` line on stderr and exit status 2, before any file or storage is created.
The same command scales out: run it on several machines with one `--storage` URL and `--study-name`, or with
`--workers N` for N local processes; they share the work through the storage.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna

from slowai.data import DatasetNotFoundError
from slowai.study.ablation import Ablation
from slowai.study.cli.checks import EXIT_USAGE, preflight, worker_count
from slowai.study.cli.flags import build_parser
from slowai.study.cli.slurm import launcher
from slowai.study.coordination.lease import Liveness
from slowai.study.runner import run_study
from slowai.study.spec import CallbackFactory, Candidate, SearchSpace, StudyError, StudySpec, default_space
from slowai.utils import first_line


def _candidates(requested: Sequence[str], known: Sequence[str | Candidate]) -> list[Candidate]:
    """Predefined candidates by name; any other name is a registry model."""
    by_name = {c.name: c for c in known if isinstance(c, Candidate)}
    return [by_name.get(n, Candidate(n, n)) if n not in by_name else by_name[n] for n in requested]


def main(
    name: str,
    candidates: Sequence[str | Candidate] | Any,
    argv: Sequence[str] | None = None,
    description: str = "",
    space: SearchSpace = default_space,
    reference: str | None = None,
    dataset: str | Callable[..., Any] = "fashion_mnist",
    data_kwargs: Mapping[str, Any] | None = None,
    callbacks: Sequence[CallbackFactory] = (),
) -> int:
    """Parse `argv`, run the study, return the exit status (0, or 2 with one `error:` line on stderr).

    `candidates` are names, Candidates, or an `Ablation` (its arms, its base as the default reference).

    `dataset` is the default of `--dataset`: a registered name, or a factory returning DataLoaders (then known to
    the command line by its function name); `callbacks` are added to every training run (see StudySpec)."""
    if isinstance(candidates, Ablation):  # its arms, compared with its base
        reference = reference or candidates.reference
        candidates = candidates.candidates
    default_name = dataset if isinstance(dataset, str) else getattr(dataset, "__name__", "custom")
    args = build_parser(name, candidates, description, default_name).parse_args(argv)
    try:
        spec = StudySpec(
            name=args.study_name or f"{name}-{args.dataset}" + ("-quick" if args.quick else ""),
            candidates=_candidates(args.candidates, candidates),
            dataset=dataset if args.dataset == default_name else args.dataset,
            data_kwargs=dict(data_kwargs or {}),
            callbacks=tuple(callbacks),
            space=space,
            reference=args.reference or reference,
            **_spec_flags(args),
        )
        preflight(spec, args)
        if args.worker_id is None:  # a worker started by --workers[-per-gpu] is one worker
            args.workers = worker_count(args.workers, args.workers_per_gpu)
        command = _worker_command(name, argv) if args.workers > 1 or args.launcher == "slurm" else None
        launcher(args, run_study)(spec, **_run_flags(args, command))
    except DatasetNotFoundError as e:
        tried = ", ".join(map(str, e.tried))
        return _fail(f"{args.dataset} data not found (looked in: {tried}); point --data-root at it")
    except (StudyError, optuna.exceptions.OptunaError) as e:
        return _fail(first_line(e))
    except KeyboardInterrupt:
        return _fail("interrupted; the running trial was marked FAIL, rerun the same command to resume", 130)
    return 0


def _spec_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The StudySpec fields that come straight from flags."""
    keys = ("amp", "compile", "channels_last", "fuse", "pruner", "storage", "out", "data_root", "device", "wandb")
    return {
        **{k: getattr(args, k) for k in keys},
        "seed": args.seed,
        "wandb_project": args.wandb_project,
        "progress": not args.no_progress,
        "margin": args.margin / 100,
    }


def _run_flags(args: argparse.Namespace, worker_command: list[str] | None) -> dict[str, Any]:
    """`run_study`'s keyword arguments: what to do, how workers behave, and the budget fields the flags fix."""
    fixed = args.seeds != "auto"
    liveness = Liveness(
        args.heartbeat_interval, args.grace_period, args.max_retries, args.storage_patience, args.trial_timeout
    )
    return {
        "quick": args.quick,
        "time_budget_s": args.time_budget * 60,
        "plan_only": args.plan_only,
        "log": _worker_log(args.worker_id),
        "report_only": args.report_only,
        "workers": args.workers,
        "worker_command": worker_command,
        "worker_id": args.worker_id,
        "liveness": liveness,
        "trials": args.trials,
        "seeds": args.seeds if fixed else None,
        "max_seeds": args.max_seeds or (args.seeds if fixed else None),
        "tune_epochs": args.epochs,
        "confirm_epochs": args.epochs,
        "tune_subset": args.subset,
    }


def _worker_command(name: str, argv: Sequence[str] | None) -> list[str]:
    """This very command (`python -m <module> <args>`), for the worker processes `--workers` starts."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = main_spec.name if main_spec is not None and main_spec.name.split(".")[-1] == name else f"studies.{name}"
    if importlib.util.find_spec(module) is None:
        raise StudyError(f"--workers needs the study as a module (python -m {module} ...), not found")
    return [sys.executable, "-m", module, *(sys.argv[1:] if argv is None else argv)]


def _worker_log(worker_id: int | None) -> Callable[[str], None]:
    """print, flushed (a log piped to a file shows a wait as it begins), each line tagged by the worker id in a
    `--workers` child (their lines interleave)."""
    if worker_id is None:
        return lambda msg: print(msg, flush=True)
    return lambda msg: print("\n".join(f"[worker {worker_id}] {line}" for line in msg.splitlines()), flush=True)


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    """One `error:` line on stderr and the exit status, the whole of what a bad input prints."""
    print(f"error: {message}", file=sys.stderr)
    return code
