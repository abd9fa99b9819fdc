"""Budget planning: measure each candidate's throughput on a few batches, then pick the biggest budget that fits.

Why: "finishes within the hour" must hold on a 2-core laptop and a GPU alike, so the default budget is chosen from a
ladder of presets by an estimate from real measurements on this machine, and the plan is printed before any work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from slowai.data import DataLoaders
from slowai.study.spec import Budget, Candidate, StudySpec

# Biggest first. CPU presets keep a 60-minute default possible on two cores; GPU presets are tried first on CUDA.
CPU_PRESETS = (
    Budget(trials=8, tune_epochs=2, tune_subset=10_000, seeds=3, confirm_epochs=3, confirm_subset=None),
    Budget(trials=6, tune_epochs=2, tune_subset=10_000, seeds=3, confirm_epochs=3, confirm_subset=None),
    Budget(trials=6, tune_epochs=2, tune_subset=5_000, seeds=3, confirm_epochs=2, confirm_subset=20_000),
    Budget(trials=5, tune_epochs=2, tune_subset=5_000, seeds=3, confirm_epochs=2, confirm_subset=10_000),
    Budget(trials=4, tune_epochs=2, tune_subset=2_500, seeds=3, confirm_epochs=2, confirm_subset=5_000),
)
GPU_PRESETS = (
    Budget(trials=24, tune_epochs=5, tune_subset=None, seeds=5, confirm_epochs=10, confirm_subset=None),
    Budget(trials=16, tune_epochs=3, tune_subset=None, seeds=5, confirm_epochs=5, confirm_subset=None),
    Budget(trials=12, tune_epochs=3, tune_subset=20_000, seeds=3, confirm_epochs=5, confirm_subset=None),
)
QUICK = Budget(trials=2, tune_epochs=1, tune_subset=512, seeds=2, confirm_epochs=1, confirm_subset=512, bs=64)
MAX_SEEDS = 10  # default last look of a sequential study (--max-seeds)
RESERVE_ROUNDS = 2  # a sequential study's preset leaves time for this many rounds beyond its first look
RUN_OVERHEAD_S = 2.5  # per trial: model build, W&B run start/finish, storage writes (measured on the 2-core CPU)
PRUNED_FRACTION = 0.75  # a pruned tune trial stops early; with median pruning about a third of them do


@dataclass(frozen=True)
class Throughput:
    """Images per second of one candidate: a training step (forward+backward+AdamW) and an eval forward."""

    train_ips: float
    eval_ips: float


def probe(candidate: Candidate, dls: DataLoaders, n_batches: int = 2, **model_kw: Any) -> Throughput:
    """Time `n_batches` train steps and one eval batch after two warm-up steps (seconds per candidate)."""
    model = candidate.build(dls.input_shape[0], dls.n_classes, **model_kw).to(dls.device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    xb, yb = dls.train.one_batch()

    def step() -> None:
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    step()  # warm-up: allocator, kernel selection
    step()
    _sync(dls.device)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        step()
    _sync(dls.device)
    train_s = (time.perf_counter() - t0) / n_batches
    model.eval()
    with torch.no_grad():
        model(xb)
        _sync(dls.device)
        t0 = time.perf_counter()
        model(xb)
        _sync(dls.device)
    return Throughput(len(xb) / train_s, len(xb) / max(time.perf_counter() - t0, 1e-6))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class DataSizes:
    """Images per split for each stage (what `subset` leaves of the dataset)."""

    tune_train: int
    tune_valid: int
    confirm_train: int
    confirm_valid: int
    confirm_test: int


def sizes_for(budget: Budget, sizes: Callable[[int | None], tuple[int, int, int]]) -> DataSizes:
    """Split sizes under `budget`'s subsets, as the dataset itself splits them (`sizes(subset)`)."""
    (tt, tv, _), (ct, cv, cte) = sizes(budget.tune_subset), sizes(budget.confirm_subset)
    return DataSizes(tt, tv, ct, cv, cte)


@dataclass
class Estimate:
    """Seconds per stage and candidate for the remaining work; `total` is what the plan prints."""

    tune: dict[str, float] = field(default_factory=dict)
    confirm: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.tune.values()) + sum(self.confirm.values())

    def per_trial(self, stage: str, candidate: str, n: int) -> float:
        d = self.tune if stage == "tune" else self.confirm
        return d.get(candidate, 0.0) / max(n, 1)


def estimate(
    budget: Budget,
    sizes: DataSizes,
    speed: dict[str, Throughput],
    pruner: str,
    todo: dict[str, tuple[int, int]] | None = None,
    speedups: dict[str, tuple[float, float]] | None = None,
) -> Estimate:
    """Seconds for the work left: `todo[candidate] = (tune trials, confirm seeds)` still to run (all by default);
    `speedups[candidate] = (throughput factor, seconds paid once)` of its accelerations (compile: its cold cost)."""
    est = Estimate()
    for name, eager in speed.items():
        factor, once = (speedups or {}).get(name, (1.0, 0.0))
        tp = Throughput(eager.train_ips * factor, eager.eval_ips * factor)
        n_tune, n_conf = todo[name] if todo is not None else (budget.trials, budget.seeds)
        tune_epoch = sizes.tune_train / tp.train_ips + sizes.tune_valid / tp.eval_ips
        conf_epoch = sizes.confirm_train / tp.train_ips + sizes.confirm_valid / tp.eval_ips
        shrink = PRUNED_FRACTION if pruner != "none" and budget.tune_epochs > 1 else 1.0
        est.tune[name] = n_tune * (budget.tune_epochs * tune_epoch * shrink + RUN_OVERHEAD_S) + (once if n_tune else 0)
        test_s = sizes.confirm_test / tp.eval_ips
        est.confirm[name] = n_conf * (budget.confirm_epochs * conf_epoch + test_s + RUN_OVERHEAD_S)
        est.confirm[name] += once if n_conf and not n_tune else 0
    return est


def choose_budget(
    presets: tuple[Budget, ...], seconds: Callable[[Budget], float], target_s: float, max_seeds: int | None = None
) -> tuple[Budget, bool]:
    """The first preset whose estimated seconds fit `target_s` (else the smallest one), then its sequential seeds.

    With `max_seeds` above a preset's seeds the study is sequential: the preset must leave room for
    `RESERVE_ROUNDS` extra rounds, and its last look is the most seeds (≤ max_seeds) whose full run still fits."""
    cap = max_seeds or 0

    def with_rounds(b: Budget) -> float:
        return seconds(b.with_(seeds=max(b.seeds, min(b.seeds + RESERVE_ROUNDS, cap))))

    chosen, fits = next(((b, True) for b in presets if with_rounds(b) <= target_s), (presets[-1], False))
    last = chosen.seeds
    while last < cap and seconds(chosen.with_(seeds=last + 1)) <= target_s:
        last += 1
    return (chosen.with_(max_seeds=last) if last > chosen.seeds else chosen), fits


def fmt_seconds(s: float) -> str:
    """'45 s', '12 min', '1 h 05 min'."""
    if s < 90:
        return f"{s:.0f} s"
    m = round(s / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60:02d} min"


@dataclass
class Plan:
    """What will run and how long it should take; printed before any work starts."""

    budget: Budget
    sizes: DataSizes
    speed: dict[str, Throughput]
    estimate: Estimate
    done: dict[str, tuple[int, int]]
    fits: bool
    target_s: float | None
    device: torch.device
    storage: str
    accel: dict[str, list[str]] = field(default_factory=dict)

    def _seeds(self) -> str:
        b = self.budget
        if b.last_seeds == b.seeds:
            return f"{b.seeds} seeds"
        return f"{b.seeds}–{b.last_seeds} seeds (sequential: a round at a time while a comparison is undecided)"

    def _verdicts(self, spec: StudySpec) -> str:
        return (
            f"paired seeds, Holm across {max(len(spec.candidates) - 1, 1)} comparison(s) at α = 0.05, "
            f"equivalence within ±{100 * spec.margin:.2g} points"
        )

    def describe(self, spec: StudySpec) -> str:
        b, s, n = self.budget, self.sizes, len(spec.candidates)
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        speed = " · ".join(f"{k} {v.train_ips:,.0f}" for k, v in self.speed.items())
        done_t = sum(d[0] for d in self.done.values())
        done_c = sum(d[1] for d in self.done.values())
        lines = [
            f"Study {spec.name}: {', '.join(c.name for c in spec.candidates)} on {spec.dataset_name} "
            f"({self.device.type}{threads}); reference: {spec.reference}",
            f"  tune:    {n} candidates × {b.trials} trials × {b.tune_epochs} epochs × {s.tune_train:,} train / "
            f"{s.tune_valid:,} valid images, TPE + {spec.pruner} pruning",
            f"  confirm: {n} candidates × {self._seeds()} × {b.confirm_epochs} epochs × {s.confirm_train:,} train / "
            f"{s.confirm_valid:,} valid, then {s.confirm_test:,} test images",
            f"  verdicts: {self._verdicts(spec)}",
        ]
        if speed:
            lines.append(f"  measured train throughput (img/s, eager): {speed}")
        if self.accel:
            lines.append("  speed-ups: " + " · ".join(f"{k} {'+'.join(v) or 'none'}" for k, v in self.accel.items()))
        lines += [
            f"  already done: {done_t}/{n * b.trials} tune trials, {done_c}/{n * b.seeds} confirm runs",
            f"  estimated time: {fmt_seconds(self.estimate.total)} "
            f"(tune {fmt_seconds(sum(self.estimate.tune.values()))}, "
            f"confirm {fmt_seconds(sum(self.estimate.confirm.values()))})",
            f"  storage: {self.storage}",
        ]
        if b.last_seeds > b.seeds:
            per_round = sum(
                self.estimate.per_trial("confirm", c, b.seeds - self.done[c][1]) for c in self.estimate.confirm
            )
            worst = self.estimate.total + (b.last_seeds - b.seeds) * per_round
            lines.insert(-1, f"  up to {fmt_seconds(worst)} if every round runs ({fmt_seconds(per_round)} a round)")
        if self.target_s is not None and not self.fits:
            lines.append(f"  note: even the smallest preset exceeds the {fmt_seconds(self.target_s)} target here")
        return "\n".join(lines)
