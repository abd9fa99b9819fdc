"""Small helpers shared by the training loop, data and studies."""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch


def default_device() -> torch.device:
    """CUDA when present, else Apple's MPS, else CPU: the device a run uses unless told otherwise."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: torch.device | str | None) -> torch.device:
    """`device` as a torch.device, or `default_device()` when None: the one place that picks a default."""
    return torch.device(device) if device is not None else default_device()


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def slug(name: str) -> str:
    """'timm/resnet18' -> 'timm-resnet18': a name safe for files and W&B artifacts."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def to_device(x: Any, device: torch.device | str) -> Any:
    """Move tensors, nested in lists/tuples/dicts, to `device` without blocking the host."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, Sequence) and not isinstance(x, str):
        return type(x)(to_device(o, device) for o in x)
    return x


def in_notebook() -> bool:
    """True inside a Jupyter kernel, where tables render as Markdown and fastprogress draws HTML bars."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def fmt_seconds(s: float) -> str:
    """'45 s', '12 min', '1 h 05 min'."""
    if s < 90:
        return f"{s:.0f} s"
    m = round(s / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def first_line(e: BaseException) -> str:
    """An exception as one line (its message's first line, else its type): what an `error:` line shows."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
