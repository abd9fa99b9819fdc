"""Checking a study's command line: argparse types for single values, and pre-flight checks that need the machine
or several flags at once. Every bad value becomes one `error: ...` line and exit status 2, before anything is
written."""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from slowai.study.coordination.storage import check_storage_url, normalize_url, storage_file
from slowai.study.spec import StudyError, StudySpec

EXIT_USAGE = 2
MAX_SEED = 2**32 - 1  # NumPy's (and so Optuna's samplers') largest seed
WANDB_BAD_CHARS = "/\\#?%:"  # W&B refuses project names containing these (or longer than 128 characters)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are the same single `error: ...` line as every other bad input (usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {' '.join(message.split())} (see --help)\n")


def _int(text: str, minimum: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {v}")
    return v


def _float(text: str, what: str, ok: Callable[[float], bool], rule: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of {what}, got {text!r}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
    return v


def positive_int(text: str) -> int:
    """argparse type: an int >= 1 (trials, seeds, epochs)."""
    return _int(text, 1)


def seeds_arg(text: str) -> str | int:
    """argparse type: 'auto' or a number of seeds >= 1 (one seed gives numbers but no verdict: no spread)."""
    try:
        return text if text == "auto" else positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be >= 1 or auto, got {text!r}") from None


def fuse_arg(text: str) -> str | int:
    """argparse type: 'auto', 'off', or how many confirm seeds train as one model (1 is off)."""
    if text in ("auto", "off"):
        return text
    try:
        k = positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be auto, off or a number of seeds >= 1, got {text!r}") from None
    return "off" if k == 1 else k


def nonnegative_int(text: str) -> int:
    """argparse type: an int >= 0 (worker ids)."""
    return _int(text, 0)


def seed_arg(text: str) -> int:
    """argparse type: a base seed NumPy and Optuna's samplers accept, 0 <= seed < 2**32."""
    v = nonnegative_int(text)
    if v > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be <= 2**32 - 1, got {v}")
    return v


def subset_arg(text: str) -> int:
    """argparse type: a tuning subset of >= 10 images (fewer cannot be split into batches and a validation set)."""
    v = positive_int(text)
    if v < 10:
        raise argparse.ArgumentTypeError(f"must be >= 10 images, got {v}")
    return v


def minutes_arg(text: str) -> float:
    """argparse type: a time budget in minutes, positive and finite (nan, inf, 0 would plan nothing sensible)."""
    return _float(text, "minutes", lambda v: math.isfinite(v) and v > 0, "a positive, finite number of minutes")


def seconds_arg(text: str) -> float:
    """argparse type: a number of seconds, >= 0 and finite (--storage-patience 0 means: fail at once)."""
    return _float(text, "seconds", lambda v: math.isfinite(v) and v >= 0, "a finite number of seconds >= 0")


def nonempty(text: str) -> str:
    """argparse type: a non-blank string (an empty --out or --storage would silently mean the default or '.')."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def wandb_project_arg(text: str) -> str:
    """argparse type: a name W&B accepts; a bad one would only fail (as a warning) when the first run starts."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    if len(text) > 128 or (bad := sorted(set(WANDB_BAD_CHARS) & set(text))):
        what = "is longer than 128 characters" if len(text) > 128 else f"contains {' '.join(bad)}"
        raise argparse.ArgumentTypeError(f"W&B project name {text!r} {what}")
    return text


def margin_arg(text: str) -> float:
    """argparse type: an equivalence margin in accuracy points, 0 <= m < 100."""
    return _float(text, "accuracy points", lambda v: 0 <= v < 100, "in [0, 100) accuracy points")


def preflight(spec: StudySpec, args: argparse.Namespace) -> None:
    """Checks that need this machine or several flags at once, before anything is written: fail in the first second."""
    _check_seeds(args.seeds, args.max_seeds)
    _check_dir(spec.out_dir, "--out")
    if spec.storage is not None:
        _check_storage(spec.storage, args.report_only)
    if spec.data_root is not None and not Path(spec.data_root).expanduser().exists():
        raise StudyError(f"{spec.dataset_name} data not found: --data-root {spec.data_root} does not exist")


def worker_count(workers: int, per_gpu: int | None) -> int:
    """--workers, or --workers-per-gpu times the visible GPUs (an error without one, or with both flags)."""
    if per_gpu is None:
        return workers
    import torch

    if workers != 1:
        raise StudyError("give --workers or --workers-per-gpu, not both")
    if not (n := torch.cuda.device_count()):
        raise StudyError("--workers-per-gpu needs a visible CUDA device; on a CPU use --workers N")
    return per_gpu * n


def _check_seeds(seeds: str | int, max_seeds: int | None) -> None:
    """--max-seeds is a sequential study's last look; it starts with >= 2 seeds (the first look needs a spread)."""
    if max_seeds is None:
        return
    if seeds == "auto" and max_seeds < 2:
        raise StudyError(f"--max-seeds {max_seeds} is below the >= 2 seeds --seeds auto starts with; use --seeds 1")
    if seeds != "auto" and max_seeds < seeds:
        raise StudyError(f"--max-seeds {max_seeds} must be >= --seeds {seeds}")
    if seeds != "auto" and max_seeds > seeds and seeds < 2:
        raise StudyError(f"--seeds {seeds} --max-seeds {max_seeds}: sequential seeds start with >= 2 seeds")


def _check_dir(path: Path, flag: str) -> None:
    """`path` is a writable directory or can become one: its first existing ancestor is a writable directory."""
    target = Path(path).expanduser().absolute()
    first = target
    while not os.path.lexists(first) and first != first.parent:
        first = first.parent
    if not first.is_dir():
        where = "is not a directory" if first == target else f"cannot be created: {first} is not a directory"
        raise StudyError(f"{flag} {path} {where}")
    if not _writable(first):
        where = "is not writable" if first == target else f"cannot be created: {first} is not writable"
        raise StudyError(f"{flag} {path} {where}")


def _writable(directory: Path) -> bool:
    """Permission bits miss root on /proc or a read-only mount, so also open an unnamed temporary file there."""
    if not os.access(directory, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=directory):  # O_TMPFILE where supported: no name ever appears
            return True
    except OSError:
        return False


def _check_storage(url: str, report_only: bool) -> None:
    """A journal or SQLite file must be writable where it is (or will be); server URLs are checked by Optuna."""
    url = normalize_url(url)
    check_storage_url(url)
    path = storage_file(url)
    if path is None:
        return
    _check_dir(path.parent, f"--storage {url}: directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise StudyError(f"--storage {url} is not writable")
    if report_only and not path.exists():
        raise StudyError(f"nothing to report: no storage at {path} (run the study first)")
