"""Does fusion pay here? Time K members fused against K unfused runs on the same work, so a planner can decide.

Why measured and not assumed: on a 2-core CPU fusing 8 small nets at 8×8 is several times faster, while at 28×28
oneDNN's grouped convolutions can lose to K dense ones.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from slowai.fuse.model import fuse_models
from slowai.fuse.train import member_losses

__all__ = ["FusionTiming", "measure_fusion"]


@dataclass(frozen=True)
class FusionTiming:
    """Seconds per training step of K members: one fused step vs K unfused steps (medians over rounds)."""

    k: int
    fused_s: float
    sequential_s: float

    @property
    def speedup(self) -> float:
        """Seeds per second fused / seeds per second sequential: above 1, fusion pays."""
        return self.sequential_s / self.fused_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(step: Callable[[], None], steps: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _step_fn(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, fused: bool):
    def step() -> None:
        preds = model(x)
        loss = member_losses(preds, y).sum() if fused else F.cross_entropy(preds, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def measure_fusion(
    factory: Callable[[], nn.Module],
    k: int,
    input_shape: Sequence[int],
    bs: int,
    steps: int = 5,
    rounds: int = 3,
    n_classes: int = 10,
    opt_func: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
) -> FusionTiming:
    """Train K `factory()` models on random (bs, *input_shape) batches both ways, interleaved round by round;
    `channels_last`: both ways in NHWC (as a study trains a candidate whose plan chose it).

    A model that cannot fuse raises `FusionError` (the caller runs it unfused). Random data: speed, not accuracy.
    """
    device = torch.device(device)
    models = [factory().to(device) for _ in range(k)]
    x = torch.randn(k, bs, *input_shape, device=device)
    y = torch.randint(0, n_classes, (k, bs), device=device)
    fused = fuse_models(models, x[0, :8])
    channels_last = channels_last and len(input_shape) == 3  # NHWC exists for image batches only
    if channels_last:
        fused.to_channels_last()
        models = [m.to(memory_format=torch.channels_last) for m in models]
    xs = [x[i].contiguous(memory_format=torch.channels_last) if channels_last else x[i] for i in range(k)]
    fused_step = _step_fn(fused, opt_func(fused.parameters(), lr=1e-3), x, y, fused=True)
    solo = [_step_fn(m, opt_func(m.parameters(), lr=1e-3), xs[i], y[i], fused=False) for i, m in enumerate(models)]

    def sequential() -> None:
        for step in solo:
            step()

    fused_step(), sequential()  # warm-up: first-call allocations and oneDNN primitive creation
    fused_s, sequential_s = [], []
    for _ in range(rounds):
        fused_s.append(_timed(fused_step, steps, device))
        sequential_s.append(_timed(sequential, steps, device))
    return FusionTiming(k, statistics.median(fused_s), statistics.median(sequential_s))
