"""Measuring a candidate's throughput on this machine: a median of timed samples, so one stalled step cannot move it.

On a CPU a sample is one step. On a GPU it is a block of `GPU_BLOCK` steps between two syncs: training queues steps
without waiting for each, so a synced single step adds the launch latency that training hides (the H200 estimate
was 45% high when each probe step was synced)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from slowai.data import DataLoaders
from slowai.study.spec import Candidate

# The probe: warm-up calls, then single steps until both minimums are met; a median, so a stalled step cannot move
# it. On the shared 2-core VM back-to-back medians still moved 5-20% (CPU steal comes in blocks of seconds).
PROBE_WARMUP, EVAL_STEPS = 2, 5
MIN_STEPS, MIN_PROBE_S, MAX_STEPS, MAX_PROBE_S = 10, 2.0, 40, 8.0  # the caps bound a slow model's probe
# Fashion-MNIST img/s at batch 128 vs 512 on the 2-core CPU: residual 679 vs 677, plain 870 vs 801, timm/resnet18
# 143 vs 143; so a CPU probe times 4x the steps per second at 128 (tiny 8x8 images differ: see Planner._space_bs).
CPU_PROBE_BS = 128
GPU_BLOCK = 10  # steps per timed sample on a GPU: the host runs ahead of the device as in training


@dataclass(frozen=True)
class Throughput:
    """Images per second of one candidate: a training step (forward+backward+AdamW) and an eval forward; the
    confirm figures, where given, are the costliest model its space draws (tuning tends to pick the biggest)."""

    train_ips: float
    eval_ips: float
    confirm_train_ips: float | None = None
    confirm_eval_ips: float | None = None

    def confirm(self) -> Throughput:
        """The img/s confirm runs are expected to train and evaluate at."""
        return Throughput(self.confirm_train_ips or self.train_ips, self.confirm_eval_ips or self.eval_ips)

    def scaled(self, factor: float) -> Throughput:
        """Every figure times `factor` (a speed-up's)."""
        confirm = (self.confirm_train_ips, self.confirm_eval_ips)
        return Throughput(self.train_ips * factor, self.eval_ips * factor, *(c and c * factor for c in confirm))


def probe(
    candidate: Candidate, dls: DataLoaders, min_steps: int = MIN_STEPS, min_s: float = MIN_PROBE_S, **model_kw: Any
) -> Throughput:
    """Img/s from the median of single train steps and eval batches: one stalled step cannot change the plan."""
    model = candidate.build(dls.input_shape[0], dls.n_classes, **model_kw).to(dls.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb, yb = dls.train.one_batch()

    def step() -> None:
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    train_s = median_seconds(step, dls.device, min_steps, min_s, MAX_PROBE_S)
    model.eval()
    with torch.no_grad():
        eval_s = median_seconds(lambda: model(xb), dls.device, EVAL_STEPS, min_s / 4, MAX_PROBE_S / 4)
    return Throughput(len(xb) / train_s, len(xb) / eval_s)


def median_seconds(fn: Callable[[], Any], device: torch.device, min_steps: int, min_s: float, max_s: float) -> float:
    """Median seconds per call of `fn` over >= `min_steps` samples and `min_s` s, within MAX_STEPS samples or
    `max_s` s; a sample is one synced call, or on a GPU a block of GPU_BLOCK calls synced once."""
    block = GPU_BLOCK if device.type == "cuda" else 1
    for _ in range(PROBE_WARMUP):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for _ in range(block):
            fn()
        _sync(device)
        times.append((time.perf_counter() - t0) / block)
        spent = time.perf_counter() - start
        if (len(times) >= min_steps and spent >= min_s) or len(times) >= MAX_STEPS or spent >= max_s:
            return max(statistics.median(times), 1e-6)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
