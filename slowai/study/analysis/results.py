"""A study's results: per-candidate confirm runs, their statistics, and flat rows. Plain values, filled from the
storage by `coordination.readback.collect` and by the analysis (`answer.analyze`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from slowai.study.analysis import testset
from slowai.study.analysis.stats import DiffCI, MeanCI
from slowai.study.analysis.verdicts import Effect, Verdict
from slowai.study.spec import optuna_name


@dataclass
class CandidateResult:
    """The confirmed numbers of one candidate (test accuracy over seeds) and what they cost."""

    name: str
    runs: list[FrozenTrial]
    best: FrozenTrial | None
    tune_counts: dict[str, int]
    acc: MeanCI | None = None
    diff: DiffCI | None = None
    params: int = 0
    mflops: float = 0.0
    seconds_per_epoch: float = math.nan
    wall_s: float = math.nan
    published: Mapping[str, float] | None = None
    tune_values: list[float] = field(default_factory=list)  # validation accuracy of each completed tune trial
    verdict: Verdict | None = None  # vs the reference (see slowai.study.analysis.verdicts)
    welch: DiffCI | None = None  # the look's runs compared unpaired at the same level: what pairing narrowed
    paired: DiffCI | None = None  # the same runs paired, seeds' variance only (no test-set term): Welch's match
    adjusted: float = math.nan  # Δ corrected for stopping early (slowai.study.analysis.verdicts.adjusted_estimate)
    p_improve: tuple[float, float, float] | None = None  # P(candidate > reference) and its bootstrap interval
    failures: list[FrozenTrial] = field(default_factory=list)  # failed tune/confirm trials, with their reasons

    @property
    def by_seed(self) -> dict[int, float]:
        return {int(t.user_attrs["seed"]): float(t.user_attrs["test_accuracy"]) for t in self.runs}

    @property
    def images(self) -> dict[int, np.ndarray]:
        """Per-test-image correctness of each confirm run that stored it (`testset`), by seed."""
        out = {}
        for t in self.runs:
            a = t.user_attrs
            if testset.ATTR in a and a.get("test_size"):
                out[int(a["seed"])] = testset.unpack(a[testset.ATTR], int(a["test_size"]))
        return out

    @property
    def diverged(self) -> list[FrozenTrial]:
        """Confirm runs stopped by a non-finite loss: counted at their test accuracy, and named in the report."""
        return [t for t in self.runs if t.user_attrs.get("outcome") == "diverged"]

    @property
    def test_size(self) -> int | None:
        return next((t.user_attrs.get("test_size") for t in self.runs if t.user_attrs.get("test_size")), None)

    @property
    def finished_tune(self) -> int:
        return self.tune_counts.get("complete", 0) + self.tune_counts.get("pruned", 0)

    @property
    def accs(self) -> list[float]:
        return [float(t.user_attrs["test_accuracy"]) for t in self.runs]

    @property
    def valid_acc(self) -> float:
        """Mean best validation accuracy of the confirm runs (the tutorial reports the best-validation checkpoint's)."""
        return mean_of([t.user_attrs.get("best_valid_accuracy") for t in self.runs])


@dataclass
class StudyResult:
    """All candidates of a study as read from the storage; `.rows` are the confirm runs (one per seed)."""

    name: str
    dataset: str
    reference: str
    storage_url: str
    candidates: list[CandidateResult]
    storage: Any = field(repr=False, default=None)
    data_source: str | None = None
    data_note: str = ""
    # comparison name ("residual − plain") -> per-epoch paired Δ valid accuracy: [{"epoch", "delta", "lo", "hi"}]
    epoch_effects: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    # candidate -> expected best validation accuracy after k = 1..N tuning trials (Dodge et al. 2019)
    expected_max: dict[str, list[float]] = field(default_factory=dict)
    design: Any = None  # slowai.study.analysis.Design: seeds, looks and margin the verdicts used
    effects: list[Effect] = field(default_factory=list)  # factorial main effects and interactions
    levels: dict[str, dict[str, str]] = field(default_factory=dict)  # ablation candidates' factor levels

    def optuna_study(self, candidate: str, stage: str = "tune") -> optuna.Study:
        """The underlying Optuna study, e.g. for `.trials_dataframe()` or optuna.visualization."""
        return optuna.load_study(study_name=optuna_name(self.name, candidate, stage), storage=self.storage)

    def trials_dataframe(self, stage: str = "tune") -> Any:
        """One pandas frame of every candidate's trials of `stage` (Optuna's own `trials_dataframe`, concatenated)."""
        import pandas as pd

        frames = []
        for c in self.candidates:
            try:
                frames.append(self.optuna_study(c.name, stage).trials_dataframe().assign(candidate=c.name))
            except KeyError:  # no such Optuna study yet
                continue
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One flat dict per confirm run: what results.csv/json hold."""
        return [_row(self, c, t) for c in self.candidates for t in c.runs]


def _row(res: StudyResult, c: CandidateResult, t: FrozenTrial) -> dict[str, Any]:
    a = t.user_attrs
    return {
        "study": res.name,
        "dataset": res.dataset,
        "data_source": a.get("data_source"),
        "candidate": c.name,
        "seed": a.get("seed"),
        "trial": t.number,
        "test_accuracy": a.get("test_accuracy"),
        "test_loss": a.get("test_loss"),
        "best_valid_accuracy": a.get("best_valid_accuracy"),
        "params": a.get("params"),
        "mflops": a.get("mflops"),
        "seconds_per_epoch": a.get("seconds_per_epoch"),
        "wall_time_s": a.get("wall_time_s"),
        "wandb_run_id": a.get("wandb_run_id"),
        "git_commit": a.get("git_commit"),
        **{f"hp_{k}": v for k, v in t.params.items()},
    }


def mean_of(xs: list[float | None]) -> float:
    """The mean of the values recorded (None where a run did not record one); NaN if none was."""
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan
