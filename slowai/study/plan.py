"""Budget planning: measure each candidate's throughput (a median of single steps), then pick the biggest budget
that fits, keeping this machine's previous answer near a boundary.

Why: "finishes within the hour" must hold on a 2-core laptop and a GPU alike, so the default budget is chosen from a
ladder of presets by an estimate from real measurements on this machine, and the plan is printed before any work.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
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
RUN_OVERHEAD_S = 1.0  # per trial outside training (build, W&B offline, storage): measured 0.4-1.0 s on the 2-core CPU
PRUNED_SHARE = 0.4  # pruned tune trials, nearly all after their first epoch: 10 of 22 in the same two studies
# The probe: warm-up calls, then single steps until both minimums are met; a median, so a stalled step cannot move
# it. On the shared 2-core VM back-to-back medians still moved 5-20% (CPU steal comes in blocks of seconds).
PROBE_WARMUP, EVAL_STEPS = 2, 5
MIN_STEPS, MIN_PROBE_S, MAX_STEPS, MAX_PROBE_S = 10, 2.0, 40, 8.0  # the caps bound a slow model's probe
# Fashion-MNIST img/s at batch 128 vs 512 on the 2-core CPU: residual 679 vs 677, plain 870 vs 801, timm/resnet18
# 143 vs 143; so a CPU probe times 4x the steps per second at 128 (tiny 8x8 images differ: see Planning._space_bs).
CPU_PROBE_BS = 128
# A preset chosen before on this machine is kept while its estimate is within 10% over the target, and left only for
# a bigger one 10% under it: a plan that flips between reruns on probe noise is not reproducible.
HYSTERESIS = 0.10


@dataclass(frozen=True)
class Throughput:
    """Images per second of one candidate: a training step (forward+backward+AdamW) and an eval forward."""

    train_ips: float
    eval_ips: float


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
    """Median seconds of `fn` (synced) over >= `min_steps` calls and `min_s` s, within MAX_STEPS calls or `max_s` s."""
    for _ in range(PROBE_WARMUP):
        fn()
    _sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        spent = time.perf_counter() - start
        if (len(times) >= min_steps and spent >= min_s) or len(times) >= MAX_STEPS or spent >= max_s:
            return max(statistics.median(times), 1e-6)


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
        shrink = 1 - PRUNED_SHARE * (1 - 1 / budget.tune_epochs) if pruner != "none" else 1.0
        est.tune[name] = n_tune * (budget.tune_epochs * tune_epoch * shrink + RUN_OVERHEAD_S) + (once if n_tune else 0)
        test_s = sizes.confirm_test / tp.eval_ips
        est.confirm[name] = n_conf * (budget.confirm_epochs * conf_epoch + test_s + RUN_OVERHEAD_S)
        est.confirm[name] += once if n_conf and not n_tune else 0
    return est


def confirm_run_seconds(
    budget: Budget, sizes: DataSizes, speed: dict[str, Throughput], speedups: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Seconds of one confirm run per candidate (its speed-ups' one-off cost aside): what a sequential round adds."""
    once_free = {k: (f, 0.0) for k, (f, _) in speedups.items()}
    est = estimate(budget, sizes, speed, "none", {c: (0, 1) for c in speed}, once_free)
    return dict(est.confirm)


def choose_budget(
    presets: tuple[Budget, ...],
    seconds: Callable[[Budget], float],
    target_s: float,
    max_seeds: int | None = None,
    previous: Budget | None = None,
) -> tuple[Budget, bool]:
    """The first preset whose estimated seconds fit `target_s` (else the smallest one), then its sequential seeds.

    With `max_seeds` above a preset's seeds the study is sequential: the preset must leave room for
    `RESERVE_ROUNDS` extra rounds, and its last look is the most seeds (≤ max_seeds) whose full run still fits.
    `previous` (this question's last answer on this machine) is kept within the `HYSTERESIS` band."""
    cap = max_seeds or 0

    def with_rounds(b: Budget) -> float:
        return seconds(b.with_(seeds=max(b.seeds, min(b.seeds + RESERVE_ROUNDS, cap))))

    def first_fit(limit: float) -> int | None:
        return next((i for i, b in enumerate(presets) if with_rounds(b) <= limit), None)

    def last_look(b: Budget, limit: float) -> int:
        n = b.seeds
        while n < cap and seconds(b.with_(seeds=n + 1)) <= limit:
            n += 1
        return n

    fit = first_fit(target_s)
    i, fits = (fit, True) if fit is not None else (len(presets) - 1, False)
    before = _index_of(presets, previous)
    if before is not None and with_rounds(presets[before]) <= target_s * (1 + HYSTERESIS):
        bigger = first_fit(target_s * (1 - HYSTERESIS))
        i, fits = (bigger if bigger is not None and bigger < before else before), True
    chosen = presets[i]
    last = last_look(chosen, target_s)
    if previous is not None and i == before:  # the same preset as before: its last look is kept within the band too
        lo, hi = last_look(chosen, target_s * (1 - HYSTERESIS)), last_look(chosen, target_s * (1 + HYSTERESIS))
        last = previous.last_seeds if lo <= previous.last_seeds <= hi else last
    return (chosen.with_(max_seeds=last) if last > chosen.seeds else chosen), fits


def _index_of(presets: tuple[Budget, ...], previous: Budget | None) -> int | None:
    """Which preset `previous` was chosen from (its last look aside), if any."""
    if previous is None:
        return None
    return next((k for k, b in enumerate(presets) if replace(b, max_seeds=previous.max_seeds) == previous), None)


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
    per_run: dict[str, float] = field(default_factory=dict)  # seconds of one confirm run per candidate

    @property
    def per_round(self) -> float:
        """Seconds of one more sequential round (a confirm run of every candidate)."""
        return sum(self.per_run.values())

    def work_estimate(self, confirm_runs: dict[str, int]) -> float:
        """The estimate for the work a run did: the plan plus the confirm runs beyond the first look it counted."""
        first_look = {c: max(self.budget.seeds - self.done.get(c, (0, 0))[1], 0) for c in confirm_runs}
        extra = sum(max(n - first_look[c], 0) * self.per_run.get(c, 0.0) for c, n in confirm_runs.items())
        return self.estimate.total + extra

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
        if b.last_seeds > b.seeds and self.per_run:
            worst = self.estimate.total + (b.last_seeds - b.seeds) * self.per_round
            lines.insert(
                -1, f"  up to {fmt_seconds(worst)} if every round runs ({fmt_seconds(self.per_round)} a round)"
            )
        if self.target_s is not None and not self.fits:
            lines.append(f"  note: even the smallest preset exceeds the {fmt_seconds(self.target_s)} target here")
        return "\n".join(lines)
