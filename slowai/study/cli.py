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

from slowai.data import DatasetNotFoundError, list_datasets
from slowai.study.args import (
    EXIT_USAGE,
    Parser,
    margin_arg,
    minutes_arg,
    nonempty,
    nonnegative_int,
    positive_int,
    preflight,
    seconds_arg,
    seed_arg,
    seeds_arg,
    subset_arg,
    wandb_project_arg,
)
from slowai.study.patience import DEFAULT_PATIENCE_S
from slowai.study.slurm import add_slurm_args, launcher
from slowai.study.spec import (
    PRUNERS,
    WANDB_MODES,
    CallbackFactory,
    Candidate,
    SearchSpace,
    StudyError,
    StudySpec,
    default_space,
)
from slowai.study.storage import Liveness


def build_parser(
    name: str, candidates: Sequence[str | Candidate], description: str = "", dataset: str = "fashion_mnist"
) -> argparse.ArgumentParser:
    """Every study's flags; defaults: all `candidates`, `dataset`, an automatic budget that fits the hour."""
    names = [c.name if isinstance(c, Candidate) else c for c in candidates]
    datasets = sorted({*list_datasets(), dataset})
    p = Parser(
        prog=f"python -m studies.{name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a = p.add_argument
    a(
        "--dataset",
        choices=datasets,
        default=dataset,
        metavar="NAME",
        help=f"one of: {', '.join(datasets)} (default: %(default)s; register more with slowai.register_dataset)",
    )
    a(
        "--candidates",
        nargs="+",
        default=names,
        metavar="NAME",
        help=f"candidates to compare (default: {' '.join(names)}); any registry name or timm/<model> is accepted",
    )
    a(
        "--reference",
        type=nonempty,
        help="candidate the others are compared against (default: plain if present, else the first)",
    )
    a("--trials", type=positive_int, help="Optuna trials per candidate (default: from the automatic plan)")
    a("--epochs", type=positive_int, help="epochs per trial, in both stages (default: from the automatic plan)")
    a(
        "--seeds",
        type=seeds_arg,
        default="auto",
        help="confirm seeds per candidate: auto (default) starts with the plan's few paired seeds and adds a round "
        "while a comparison is undecided; a number runs exactly that many",
    )
    a("--max-seeds", type=positive_int, metavar="N", help="last look of --seeds auto (default: 10, or what fits)")
    a(
        "--margin",
        type=margin_arg,
        default=0.3,
        metavar="POINTS",
        help="equivalence margin in accuracy points: |Δ| within it counts as equivalent (default: %(default)s)",
    )
    a("--subset", type=subset_arg, help="training images used while tuning (default: from the plan)")
    a("--pruner", choices=PRUNERS, default="median", help="early stopping of bad tune trials (default: %(default)s)")
    a(
        "--storage",
        type=nonempty,
        help="Optuna storage: a journal file path or URL such as postgresql://... (default: <out>/optuna.journal)",
    )
    a("--study-name", type=nonempty, help=f"name of the (resumable) study (default: {name}-<dataset>[-quick])")
    a("--out", type=nonempty, help="output directory (default: runs/<study-name>)")
    a(
        "--data-root",
        type=nonempty,
        help="directory holding the dataset (default: $SLOWAI_DATA, system locations, cache)",
    )
    a("--device", type=nonempty, help="torch device (default: cuda if available, else cpu)")
    a(
        "--wandb",
        choices=WANDB_MODES,
        default="auto",
        help="W&B mode; auto honours WANDB_MODE, else online with credentials, else offline (default: %(default)s)",
    )
    a("--wandb-project", type=wandb_project_arg, default="slowai", help="W&B project (default: %(default)s)")
    a(
        "--time-budget",
        type=minutes_arg,
        default=50.0,
        metavar="MIN",
        help="minutes the automatic plan aims for (default: %(default)s)",
    )
    a("--seed", type=seed_arg, default=0, help="base seed of samplers and confirm runs (default: %(default)s)")
    a("--quick", action="store_true", help="smoke run: 512 images, 1 epoch, 2 trials, 2 seeds (a few minutes)")
    only = p.add_mutually_exclusive_group()  # plan without training vs report without planning: pick one
    only.add_argument("--plan-only", action="store_true", help="print the plan and estimated time, then exit")
    a("--no-progress", action="store_true", help="no progress bars or per-trial lines")
    a("--amp", action="store_true", help="bf16 autocast for forward and loss (GPU; ignored on CPU)")
    flag = argparse.BooleanOptionalAction
    a("--compile", action=flag, help="torch.compile every model (default: where a run is long enough to pay off)")
    a("--channels-last", action=flag, help="NHWC memory format (default: where it measurably pays)")
    a(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="local worker processes sharing the study (e.g. one per GPU); the report is built when all are done",
    )
    only.add_argument(
        "--report-only", action="store_true", help="build report.md and results from the storage, without training"
    )
    a(
        "--heartbeat-interval",
        type=positive_int,
        default=Liveness.heartbeat_interval,
        metavar="SEC",
        help="seconds between heartbeats of a running trial (database storages; default: %(default)s)",
    )
    a(
        "--grace-period",
        type=positive_int,
        metavar="SEC",
        help="a running trial without heartbeat for this long is failed and retried (default: 2 x interval)",
    )
    a(
        "--storage-patience",
        type=seconds_arg,
        default=DEFAULT_PATIENCE_S,
        metavar="SEC",
        help="how long every storage call waits out an outage (refused connection, server restarting) before the "
        "run stops; 0 fails at once (default: %(default)g)",
    )
    a(
        "--trial-timeout",
        type=seconds_arg,
        metavar="SEC",
        help="a trial running longer is failed and retried (default: 5 x the plan's estimate of one run, >= 900)",
    )
    a(
        "--max-retries",
        type=nonnegative_int,
        default=Liveness.max_retry,
        metavar="N",
        help="retries of a tune slot or confirm seed whose worker was lost, timed out or ran out of memory, before it "
        "is failed for good (default: %(default)s)",
    )
    a("--worker-id", type=nonnegative_int, help=argparse.SUPPRESS)  # set by --workers on the processes it starts
    add_slurm_args(p)
    return p


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
    from slowai.study.ablation import Ablation
    from slowai.study.runner import run_study

    if isinstance(candidates, Ablation):  # its arms, compared with its base
        reference = reference or candidates.reference
        candidates = candidates.candidates
    default_name = dataset if isinstance(dataset, str) else getattr(dataset, "__name__", "custom")
    args = build_parser(name, candidates, description, default_name).parse_args(argv)
    study_name = args.study_name or f"{name}-{args.dataset}" + ("-quick" if args.quick else "")
    try:
        spec = StudySpec(
            name=study_name,
            candidates=_candidates(args.candidates, candidates),
            dataset=dataset if args.dataset == default_name else args.dataset,
            data_kwargs=dict(data_kwargs or {}),
            callbacks=tuple(callbacks),
            amp=args.amp,
            compile=args.compile,
            channels_last=args.channels_last,
            space=space,
            reference=args.reference or reference,
            pruner=args.pruner,
            storage=args.storage,
            out=args.out,
            data_root=args.data_root,
            device=args.device,
            wandb=args.wandb,
            wandb_project=args.wandb_project,
            seed=args.seed,
            progress=not args.no_progress,
            margin=args.margin / 100,
        )
        liveness = Liveness(
            args.heartbeat_interval, args.grace_period, args.max_retries, args.storage_patience, args.trial_timeout
        )
        preflight(spec, args)
        fixed = args.seeds != "auto"
        launcher(args, run_study)(
            spec,
            quick=args.quick,
            time_budget_s=args.time_budget * 60,
            plan_only=args.plan_only,
            log=_worker_log(args.worker_id),
            report_only=args.report_only,
            workers=args.workers,
            worker_command=_worker_command(name, argv) if args.workers > 1 or args.launcher == "slurm" else None,
            worker_id=args.worker_id,
            liveness=liveness,
            trials=args.trials,
            seeds=args.seeds if fixed else None,
            max_seeds=args.max_seeds or (args.seeds if fixed else None),
            tune_epochs=args.epochs,
            confirm_epochs=args.epochs,
            tune_subset=args.subset,
        )
    except DatasetNotFoundError as e:
        tried = ", ".join(map(str, e.tried))
        return _fail(f"{args.dataset} data not found (looked in: {tried}); point --data-root at it")
    except (StudyError, optuna.exceptions.OptunaError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        return _fail("interrupted; the running trial was marked FAIL, rerun the same command to resume", 130)
    return 0


def _worker_command(name: str, argv: Sequence[str] | None) -> list[str]:
    """This very command (`python -m <module> <args>`), for the worker processes `--workers` starts."""
    main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = main_spec.name if main_spec is not None and main_spec.name.split(".")[-1] == name else f"studies.{name}"
    if importlib.util.find_spec(module) is None:
        raise StudyError(f"--workers needs the study as a module (python -m {module} ...), not found")
    return [sys.executable, "-m", module, *(sys.argv[1:] if argv is None else argv)]


def _worker_log(worker_id: int | None) -> Callable[[str], None]:
    """print, with each line tagged by the worker id in a `--workers` child (their lines interleave)."""
    if worker_id is None:
        return print
    return lambda msg: print("\n".join(f"[worker {worker_id}] {line}" for line in msg.splitlines()), flush=True)


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    """One `error:` line on stderr and the exit status, the whole of what a bad input prints."""
    print(f"error: {message}", file=sys.stderr)
    return code
