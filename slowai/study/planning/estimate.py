"""How long the work will take: split sizes under a budget, and seconds per stage and candidate from the measured
throughput (with the speed-ups' factors and one-off costs)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from slowai.study.planning.probe import Throughput
from slowai.study.spec import Budget

# Per trial outside its training, validation and test passes (build, W&B offline, storage, saving): 0.05-0.3 s on the
# 2-core CPU, digits and Fashion-MNIST studies alike (benchmarks/estimate_error.py); 1.0 s before W&B's package scan
# ran once per process.
RUN_OVERHEAD_S = 0.2
PRUNED_SHARE = 0.4  # pruned tune trials, nearly all after their first epoch: 10 of 22 in the same two studies
PRIOR_TRIALS = 2  # the prior share above counts as this many finished trials against the study's own


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
    fused: dict[str, float] | None = None,
    trained: dict[str, list[int]] | None = None,
) -> Estimate:
    """Seconds for the work left: `todo[candidate] = (tune trials, confirm seeds)` still to run (all by default);
    `speedups[candidate] = (throughput factor, seconds paid once)` of its accelerations (compile: its cold cost);
    `fused[candidate]`: the measured speed-up of its fused confirm seeds over eager runs (they skip the others; below
    1 where an explicit `--fuse K` is slower);
    `trained[candidate]`: epochs its finished tune trials trained, from which `tune_share` learns the pruner's cut."""
    est = Estimate()
    for name, eager in speed.items():
        factor, once = (speedups or {}).get(name, (1.0, 0.0))
        tp = eager.scaled(factor)
        n_tune, n_conf = todo[name] if todo is not None else (budget.trials, budget.seeds)
        tune_epoch = sizes.tune_train / tp.train_ips + sizes.tune_valid / tp.eval_ips
        gain = (fused or {}).get(name, 1.0)  # below 1: an explicit --fuse K slower than K runs
        tp = eager.confirm().scaled(gain if gain != 1.0 else factor)
        conf_epoch = sizes.confirm_train / tp.train_ips + sizes.confirm_valid / tp.eval_ips
        shrink = tune_share(budget.tune_epochs, pruner, (trained or {}).get(name, []))
        est.tune[name] = n_tune * (budget.tune_epochs * tune_epoch * shrink + RUN_OVERHEAD_S) + (once if n_tune else 0)
        test_s = sizes.confirm_test / tp.eval_ips
        est.confirm[name] = n_conf * (budget.confirm_epochs * conf_epoch + test_s + RUN_OVERHEAD_S)
        est.confirm[name] += once if n_conf and not n_tune else 0
    return est


def tune_share(epochs: int, pruner: str, trained: list[int]) -> float:
    """Expected share of its epochs a tune trial trains: the prior (PRUNED_SHARE of trials stopped after one epoch)
    as PRIOR_TRIALS trials, averaged with the study's finished ones,
    share = (PRIOR_TRIALS · prior + Σ min(eᵢ, E) / E) / (PRIOR_TRIALS + n)."""
    if pruner == "none":
        return 1.0
    prior = 1 - PRUNED_SHARE * (1 - 1 / epochs)
    return (PRIOR_TRIALS * prior + sum(min(e, epochs) / epochs for e in trained)) / (PRIOR_TRIALS + len(trained))


def confirm_run_seconds(
    budget: Budget, sizes: DataSizes, speed: dict[str, Throughput], speedups: dict[str, tuple[float, float]]
) -> dict[str, float]:
    """Seconds of one confirm run per candidate (its speed-ups' one-off cost aside): what a sequential round adds."""
    once_free = {k: (f, 0.0) for k, (f, _) in speedups.items()}
    est = estimate(budget, sizes, speed, "none", {c: (0, 1) for c in speed}, once_free)
    return dict(est.confirm)
