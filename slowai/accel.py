"""Speed-ups as callbacks: torch.compile and channels-last on every device, bf16 autocast on a GPU.

`CompileCB` and `ChannelsLastCB` act on CPU and GPU alike: together they train the residual net about 1.5x faster
on a quiet 2-core CPU, more under load (benchmarks/README.md). `MixedPrecisionCB` acts only on CUDA unless
`on_cpu=True`: elsewhere it is an exact no-op with one warning, so the same script runs unchanged on a CPU.
Compiling needs a C++ compiler on CPU; without one `CompileCB` trains eagerly with one warning.
`enable_compile_cache` keeps compiled graphs on disk so other worker processes skip the compile, and
`compile_pays`/`channels_last_pays` say when each is worth it.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from slowai.core import Callback
from slowai.models import create_model

# Graphs kept per compiled `forward` code object: train and eval, per memory format, for every architecture sharing
# it (conv, plain and residual all run `CNN.forward`). Past torch's default of 8 that code would silently run eagerly.
RECOMPILE_LIMIT = 64


def _model_device(learn: Any) -> torch.device:
    param = next(learn.model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class _AccelCB(Callback):
    order = -15  # after DeviceCB has moved the model, before everything that reads predictions

    gpu_only = False  # warn when skipped off the GPU (only MixedPrecisionCB: the others act there by default)

    def __init__(self, on_cpu: bool = False) -> None:
        self.on_cpu = on_cpu

    def _active(self) -> bool:
        """Whether to act in this fit: on CUDA always, elsewhere only when `on_cpu` (a GPU-only one warns once)."""
        device = _model_device(self.learn)
        if device.type == "cuda" or self.on_cpu:
            return True
        if self.gpu_only and not getattr(self, "_warned", False):
            warnings.warn(f"{self.name} does nothing on {device.type}: it is a GPU speed-up", stacklevel=2)
            self._warned = True
        return False


class MixedPrecisionCB(_AccelCB):
    """Forward pass and loss under `torch.autocast` (bf16: no loss scaling needed); backward stays outside it."""

    gpu_only = True  # bf16 changes the numbers; on CPU it is only used when asked for

    def __init__(self, dtype: torch.dtype = torch.bfloat16, on_cpu: bool = False) -> None:
        super().__init__(on_cpu)
        self.dtype, self.ctx = dtype, None

    def before_fit(self) -> None:
        self.enabled = self._active()
        self.device_type = _model_device(self.learn).type

    def before_batch(self) -> None:
        if self.enabled:
            self.ctx = torch.autocast(self.device_type, dtype=self.dtype)
            self.ctx.__enter__()

    def after_loss(self) -> None:
        self._exit()

    def cleanup_batch(self) -> None:
        self._exit()  # a cancelled or failed batch must not leave autocast on

    def _exit(self) -> None:
        if self.ctx is not None:
            self.ctx.__exit__(None, None, None)
            self.ctx = None


class ChannelsLastCB(_AccelCB):
    """NHWC memory format for the model and each input batch: faster convolutions (oneDNN on CPU, tensor cores)."""

    def __init__(self, on_cpu: bool = True) -> None:
        super().__init__(on_cpu)

    def before_fit(self) -> None:
        self.enabled = self._active()
        if self.enabled:
            self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self) -> None:
        if self.enabled:
            xb, *rest = self.learn.batch
            self.learn.batch = (xb.contiguous(memory_format=torch.channels_last), *rest)


# ----------------------------------------------------------------------------------------------- torch.compile
def compiler_available() -> tuple[bool, str]:
    """(True, path) when inductor finds a working C++ compiler for CPU kernels, else (False, what was tried)."""
    from torch._inductor import config

    cxx = config.cpp.cxx  # inductor's own search list, read now so a patched config or $CXX at import counts
    return _find_cxx(tuple(cxx) if isinstance(cxx, (list, tuple)) else (cxx,))


@functools.lru_cache(maxsize=8)
def _find_cxx(search: tuple[str | None, ...]) -> tuple[bool, str]:
    """Inductor's test (`<cxx> --version` runs), memoized: it runs once per process and search list."""
    tried = []
    for cxx in search:
        if cxx is None:  # inductor's conda-forge gcc download: only with TORCH_INDUCTOR_INSTALL_GXX, never counted
            continue
        path = shutil.which(cxx)
        if path is None:
            tried.append(f"{cxx} not on PATH")
            continue
        try:
            subprocess.run([path, "--version"], check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            tried.append(f"{path} does not run: {type(e).__name__}")
            continue
        return True, path
    return False, "; ".join(tried) or "no compiler configured"


def enable_compile_cache(path: str | os.PathLike[str]) -> Path:
    """Keep inductor's kernels, FX graphs and AOT-autograd graphs in `path`: new processes load instead of compiling.

    Sets TORCHINDUCTOR_CACHE_DIR (read on every use, and passed on to inductor's compile workers and to any worker
    process started afterwards), TORCHINDUCTOR_FX_GRAPH_CACHE=1 and TORCHINDUCTOR_AUTOGRAD_CACHE=1 for child
    processes, and the matching config flags (`torch._inductor.config.fx_graph_cache`,
    `torch._functorch.config.enable_autograd_cache`) in this one. Call it before the first compile.
    """
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config
    from torch._inductor.utils import clear_caches

    path = Path(path).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
    os.environ["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
    inductor_config.fx_graph_cache = True
    functorch_config.enable_autograd_cache = True
    clear_caches()  # inductor memoizes paths derived from the old directory
    return path


class CompileCB(_AccelCB):
    """`torch.compile` the model in place (module identity and state_dict keys unchanged), CPU and GPU alike.

    The batch dimension is marked dynamic (`dynamic_batch=True`) so a short last batch reuses the full batches'
    graph: one graph for training and one for evaluation, instead of a recompile per batch size. On CPU without a
    C++ compiler it trains eagerly and warns once. Extra keywords go to `torch.compile`.
    """

    order = -14  # after ChannelsLastCB, which replaces the batch tensor that `before_batch` marks

    def __init__(self, on_cpu: bool = True, dynamic_batch: bool = True, **compile_kw: Any) -> None:
        super().__init__(on_cpu)
        self.dynamic_batch, self.compile_kw = dynamic_batch, compile_kw
        self.enabled = False

    def before_fit(self) -> None:
        self.enabled = self._active() and self._can_compile()
        model = self.learn.model
        if self.enabled and not getattr(model, "_slowai_compiled", False):
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            model.compile(**self.compile_kw)
            model._slowai_compiled = True

    def before_batch(self) -> None:
        xb = self.learn.batch[0]
        if self.enabled and self.dynamic_batch and isinstance(xb, torch.Tensor):
            torch._dynamo.maybe_mark_dynamic(xb, 0)  # "maybe": a model that needs a fixed size just specializes

    def _can_compile(self) -> bool:
        """Inductor on CPU builds C++ kernels: without a compiler, train eagerly (one warning) instead of failing."""
        if self.compile_kw.get("backend", "inductor") != "inductor" or _model_device(self.learn).type != "cpu":
            return True
        ok, detail = compiler_available()
        if not ok and not getattr(self, "_warned", False):
            self._warned = True
            warnings.warn(
                f"torch.compile needs a C++ compiler on CPU (none found: {detail}); training eagerly", stacklevel=3
            )
        return ok


# ----------------------------------------------------------------------------------------------- when to use them
# Channels-last over eager on the 2-core CPU, for the time estimate (the decision is `channels_last_pays`): median
# epochs of benchmarks/cpu_speed.py; timm/resnet18 trained 1.43x its eager probe in the default study on a quiet
# machine. A model not measured here gets the smallest; on CUDA it is not measured, so the estimate leaves it out.
CHANNELS_LAST_SPEEDUP = {"conv": 1.15, "plain": 1.25, "residual": 1.26, "timm/resnet18": 1.4}
# What compile adds on top of channels-last (which studies turn on for every conv net), measured on the 2-core CPU
# with benchmarks/cpu_speed.py (bs 512, Fashion-MNIST, AdamW + one-cycle, interleaved rounds; benchmarks/README.md):
# img/s of compile + channels-last over channels-last alone. timm/resnet18 is slower compiled: compile never pays
# for it, nor (conservatively) for a model not measured here; `--compile` still forces it.
COMPILE_SPEEDUP = {"conv": 1.39, "plain": 1.22, "residual": 1.17, "timm/resnet18": 0.9}
# What compiling costs one process (residual: train + eval graph, one epoch of 10k images in a new process): into
# an empty cache dir, and from one that already holds the graphs. Later fits in the same process reuse the graphs.
COMPILE_COST_S = {"cold": 80.0, "warm": 7.0}


def compile_pays(
    train_seconds_eager: float,
    device: torch.device | str = "cpu",
    *,
    model: str | None = None,
    warm_cache: bool = False,
) -> bool:
    """Whether compiling saves more time than it costs: `train_seconds_eager` * (1 - 1/speed-up) > compile cost.

    Pass the eager seconds of everything this process will train with the same architecture (every trial of a
    candidate: the graphs compiled for the first are reused by the rest). `model` (a `create_model` name) picks its
    measured speed-up, `warm_cache` the cost when `enable_compile_cache` points at a dir that already holds them.
    Measured on the 2-core CPU: residual trains 1.45-1.56x faster compiled + channels-last than eager, 1.17x faster
    than with channels-last alone (the speed-up used here); an epoch of 10k images took 13.8 s eagerly, 90.3 s
    compiled into a cold cache (77.8 s compiling) and 19.1 s with a warm one (6.4 s), so one such epoch never pays,
    while about 550 s (cold) or 50 s (warm) of training do. Not measured on a GPU: CPU figures used.
    """
    speedup = COMPILE_SPEEDUP.get(model or "", min(COMPILE_SPEEDUP.values()))
    return train_seconds_eager * (1 - 1 / speedup) > COMPILE_COST_S["warm" if warm_cache else "cold"]


def channels_last_pays(model: str | nn.Module, device: torch.device | str = "cpu") -> bool:
    """Whether to train `model` (a module or `create_model` name) channels-last: for every conv net on CPU and CUDA.

    Measured on the 2-core CPU, eager: conv 1.13-1.31x, plain 1.25x, residual 1.26x, timm/resnet18 1.0x (quiet) to
    1.4x (busy); on top of compile: conv +25%, plain -3%, residual +3%, timm/resnet18 -1%. Never clearly slower, so
    no per-model rule. On CUDA it is the usual advice for tensor cores (not measured here).
    """
    if torch.device(device).type not in ("cpu", "cuda"):
        return False
    if isinstance(model, str):
        model = create_model(model)
    return _is_conv_net(model)


def accel_cbs(amp: bool = False, channels_last: bool = False, compile: bool = False) -> list[Callback]:
    """The callbacks for CLI flags `--amp`, `--channels-last`, `--compile` (the last two act on CPU too)."""
    flags = ((amp, MixedPrecisionCB), (channels_last, ChannelsLastCB), (compile, CompileCB))
    return [cls() for on, cls in flags if on]


def _is_conv_net(model: nn.Module) -> bool:
    """Whether the model has 2-d convolutions, the only layers channels-last changes."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
