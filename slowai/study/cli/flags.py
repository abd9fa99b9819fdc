"""Every study's flags, in argparse groups a `--help` reader scans: what to compare, how much work, where the
results go, how fast, and how workers share the study."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from slowai.data import list_datasets
from slowai.study.cli.checks import (
    Parser,
    fuse_arg,
    margin_arg,
    minutes_arg,
    nonempty,
    nonnegative_int,
    positive_int,
    seconds_arg,
    seed_arg,
    seeds_arg,
    subset_arg,
    wandb_project_arg,
)
from slowai.study.cli.slurm import add_slurm_args
from slowai.study.coordination.lease import Liveness
from slowai.study.coordination.patience import DEFAULT_PATIENCE_S
from slowai.study.spec import PRUNERS, WANDB_MODES, Candidate


def build_parser(
    name: str, candidates: Sequence[str | Candidate], description: str = "", dataset: str = "fashion_mnist"
) -> argparse.ArgumentParser:
    """Every study's flags; defaults: all `candidates`, `dataset`, an automatic budget that fits the hour."""
    p = Parser(
        prog=f"python -m studies.{name}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _question(p, [c.name if isinstance(c, Candidate) else c for c in candidates], dataset)
    _budget(p)
    only = p.add_mutually_exclusive_group()  # plan without training vs report without planning: pick one
    only.add_argument("--plan-only", action="store_true", help="print the plan and estimated time, then exit")
    only.add_argument(
        "--report-only", action="store_true", help="build report.md and results from the storage, without training"
    )
    _outputs(p, name)
    _speed(p)
    _workers(p)
    add_slurm_args(p)
    return p


def _question(p: argparse.ArgumentParser, names: list[str], dataset: str) -> None:
    """What is compared, on what, against which reference, and how a difference is judged."""
    datasets = sorted({*list_datasets(), dataset})
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
    a(
        "--margin",
        type=margin_arg,
        default=0.3,
        metavar="POINTS",
        help="equivalence margin in accuracy points: |Δ| within it counts as equivalent (default: %(default)s)",
    )
    a("--seed", type=seed_arg, default=0, help="base seed of samplers and confirm runs (default: %(default)s)")


def _budget(p: argparse.ArgumentParser) -> None:
    """How much work: each flag replaces one field of the automatic plan."""
    a = p.add_argument
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
    a("--subset", type=subset_arg, help="training images used while tuning (default: from the plan)")
    a("--pruner", choices=PRUNERS, default="median", help="early stopping of bad tune trials (default: %(default)s)")
    a(
        "--time-budget",
        type=minutes_arg,
        default=50.0,
        metavar="MIN",
        help="minutes the automatic plan aims for (default: %(default)s)",
    )
    a("--quick", action="store_true", help="smoke run: 512 images, 1 epoch, 2 trials, 2 seeds (a few minutes)")


def _outputs(p: argparse.ArgumentParser, name: str) -> None:
    """Where data is read and trials, reports and W&B runs are written."""
    a = p.add_argument
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
    a(
        "--wandb",
        choices=WANDB_MODES,
        default="auto",
        help="W&B mode; auto honours WANDB_MODE, else online with credentials, else offline (default: %(default)s)",
    )
    a("--wandb-project", type=wandb_project_arg, default="slowai", help="W&B project (default: %(default)s)")
    a("--no-progress", action="store_true", help="no progress bars or per-trial lines")


def _speed(p: argparse.ArgumentParser) -> None:
    """Where training runs and which speed-ups it may use (chosen by measurement unless forced)."""
    a, flag = p.add_argument, argparse.BooleanOptionalAction
    a("--device", type=nonempty, help="torch device (default: cuda if available, else cpu)")
    a("--amp", action="store_true", help="bf16 autocast for forward and loss (GPU; ignored on CPU)")
    a("--compile", action=flag, help="torch.compile every model (default: where a run is long enough to pay off)")
    a("--channels-last", action=flag, help="NHWC memory format (default: where it measurably pays)")
    a(
        "--fuse",
        type=fuse_arg,
        default="auto",
        metavar="auto|off|K",
        help="train K confirm seeds of a candidate as one fused model (same numbers, one run's dispatch cost); auto "
        "measures whether it pays on this machine (default: %(default)s)",
    )


def _workers(p: argparse.ArgumentParser) -> None:
    """How several workers share one study, and how they ride out lost workers and storage outages."""
    a = p.add_argument
    a(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="local worker processes sharing the study (e.g. one per GPU); the report is built when all are done",
    )
    a(
        "--workers-per-gpu",
        type=positive_int,
        metavar="N",
        help="N local workers on each visible GPU (a small model leaves a GPU mostly idle; fusing seeds is the "
        "other way to fill it)",
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
