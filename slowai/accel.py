"""GPU speed-ups as callbacks: bf16 autocast, channels-last memory format, torch.compile.

Each one acts only on a CUDA model by default and is otherwise an exact no-op (with one warning), so the same
training script runs unchanged, with identical results, on a CPU. Pass `on_cpu=True` to apply it anyway.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from slowai.core import Callback


def _model_device(learn: Any) -> torch.device:
    param = next(learn.model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class _AccelCB(Callback):
    order = -15  # after DeviceCB has moved the model, before everything that reads predictions

    def __init__(self, on_cpu: bool = False) -> None:
        self.on_cpu = on_cpu

    def _active(self) -> bool:
        """Whether to act in this fit: on CUDA always, elsewhere only when asked (warn once otherwise)."""
        device = _model_device(self.learn)
        if device.type == "cuda" or self.on_cpu:
            return True
        if not getattr(self, "_warned", False):
            warnings.warn(f"{self.name} does nothing on {device.type}: it is a GPU speed-up", stacklevel=2)
            self._warned = True
        return False


class MixedPrecisionCB(_AccelCB):
    """Forward pass and loss under `torch.autocast` (bf16: no loss scaling needed); backward stays outside it."""

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
    """NHWC memory format for the model and each input batch: faster convolutions on tensor cores."""

    def before_fit(self) -> None:
        self.enabled = self._active()
        if self.enabled:
            self.learn.model.to(memory_format=torch.channels_last)

    def before_batch(self) -> None:
        if self.enabled:
            xb, *rest = self.learn.batch
            self.learn.batch = (xb.contiguous(memory_format=torch.channels_last), *rest)


class CompileCB(_AccelCB):
    """`torch.compile` the model in place (module identity and state_dict keys unchanged)."""

    def __init__(self, on_cpu: bool = False, **compile_kw: Any) -> None:
        super().__init__(on_cpu)
        self.compile_kw = compile_kw

    def before_fit(self) -> None:
        if self._active() and not getattr(self.learn.model, "_slowai_compiled", False):
            self.learn.model.compile(**self.compile_kw)
            self.learn.model._slowai_compiled = True


def accel_cbs(amp: bool = False, channels_last: bool = False, compile: bool = False) -> list[Callback]:
    """The callbacks for CLI flags `--amp`, `--channels-last`, `--compile`."""
    flags = ((amp, MixedPrecisionCB), (channels_last, ChannelsLastCB), (compile, CompileCB))
    return [cls() for on, cls in flags if on]
