"""The plan: what will run, where, with which speed-ups, and how long it should take; printed before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from slowai.study.planning.estimate import DataSizes, Estimate
from slowai.study.planning.fusion import Fusion
from slowai.study.planning.probe import Throughput
from slowai.study.spec import Budget, StudySpec
from slowai.utils import fmt_seconds

if TYPE_CHECKING:
    from slowai.study.planning.stored_plan import PlanRecord


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
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)  # what a resume must keep, per candidate
    source: str = "chosen"  # where the budget came from: explicit, stored, or chosen here (presets, quick)
    record: PlanRecord | None = None  # the study's stored plan, once one is read or stored
    fusion: dict[str, Fusion] = field(default_factory=dict)  # confirm seeds trained as one model, per candidate

    @property
    def fuse(self) -> dict[str, int]:
        """Seeds per fused confirm run, per candidate (1: unfused)."""
        return {name: f.k for name, f in self.fusion.items()}

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
        speed = " · ".join(f"{k} {_ips(v)}" for k, v in self.speed.items())
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
        if whys := {f.why for f in self.fusion.values()}:
            each = " · ".join(f"{k} {f.why}" for k, f in self.fusion.items())
            lines.append(f"  fused runs: {whys.pop() if len(whys) == 1 else each}")
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


def _ips(tp: Throughput) -> str:
    """'6,256', or '6,256 (confirm 2,894)' where the space draws models of different cost."""
    confirm = tp.confirm().train_ips
    return f"{tp.train_ips:,.0f}" + (f" (confirm {confirm:,.0f})" if confirm != tp.train_ips else "")
