"""A study's results as read from the storage: per-candidate confirm runs, their statistics, and flat rows.

Everything here reads the Optuna storage only (no in-process state), so results can be rebuilt at any time, by any
worker, from whatever has finished.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from slowai.study import claims, testset
from slowai.study import storage as st
from slowai.study.stats import DiffCI, MeanCI, mean_ci, welch_diff
from slowai.study.verdicts import Effect, Verdict


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
    verdict: Verdict | None = None  # vs the reference (see slowai.study.verdicts)
    welch: DiffCI | None = None  # the look's runs compared unpaired at the same level: what pairing narrowed
    paired: DiffCI | None = None  # the same runs paired, seeds' variance only (no test-set term): Welch's match
    adjusted: float = math.nan  # Δ corrected for stopping early (slowai.study.verdicts.adjusted_estimate)
    p_improve: tuple[float, float, float] | None = None  # P(candidate > reference) and its bootstrap interval
    failures: list[FrozenTrial] = field(default_factory=list)  # failed tune/confirm trials, with their reasons

    @property
    def by_seed(self) -> dict[int, float]:
        return {int(t.user_attrs["seed"]): float(t.user_attrs["test_accuracy"]) for t in self.runs}

    @property
    def images(self) -> dict[int, np.ndarray]:
        """Per-test-image correctness of each confirm run that stored it (`slowai.study.testset`), by seed."""
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
        return _mean([t.user_attrs.get("best_valid_accuracy") for t in self.runs])


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
        return optuna.load_study(study_name=st.optuna_name(self.name, candidate, stage), storage=self.storage)

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


def _real_failure(t: FrozenTrial) -> bool:
    """A failure worth reporting: not a claim another worker won (surplus), not an interrupt retried later."""
    why = str(t.user_attrs.get("fail_reason", ""))
    return not why.startswith("surplus")


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else math.nan


def collect(
    storage: Any,
    name: str,
    candidates: list[str],
    reference: str,
    dataset: str,
    url: str,
    published: Mapping[str, Mapping[str, float]] | None = None,
) -> StudyResult:
    """Read tune/confirm trials of every candidate; confirm runs count only if they used the current best params.

    `published` maps candidate -> reference numbers to print beside ours, e.g. {"valid": 0.9184, "test": 0.91}."""
    names = st.existing_names(storage)
    out, seen = [], []
    for cand in candidates:
        tn = st.optuna_name(name, cand, "tune")
        tune = optuna.load_study(study_name=tn, storage=storage).get_trials() if tn in names else []
        complete = [t for t in tune if t.state == TrialState.COMPLETE]
        best, runs = claims.confirmed_runs(storage, name, cand)
        counts = {
            s.name.lower(): sum(t.state == s for t in tune) for s in TrialState if any(t.state == s for t in tune)
        }
        r = CandidateResult(cand, runs, best, counts, published=(published or {}).get(cand))
        r.tune_values = [float(t.value) for t in complete if t.value is not None]
        cn = st.optuna_name(name, cand, "confirm")
        confirm = optuna.load_study(study_name=cn, storage=storage).get_trials() if cn in names else []
        r.failures = [t for t in tune + confirm if t.state == TrialState.FAIL and _real_failure(t)]
        seen += runs or complete
        if runs:
            r.acc = mean_ci(r.accs)
            r.params, r.mflops = int(runs[0].user_attrs["params"]), float(runs[0].user_attrs["mflops"])
            r.seconds_per_epoch = _mean([t.user_attrs.get("seconds_per_epoch") for t in runs])
            r.wall_s = _mean([t.user_attrs.get("wall_time_s") for t in runs])
        out.append(r)
    ref = next((c for c in out if c.name == reference), None)
    for c in out:  # a first answer; slowai.study.analysis.analyze replaces it with the paired verdicts
        if ref is not None and ref.runs and c.runs and c.name != reference:
            c.diff = welch_diff(c.accs, ref.accs)
    return StudyResult(name, dataset, reference, url, out, storage, *_data_source(seen))


def _data_source(trials: list[FrozenTrial]) -> tuple[str | None, str]:
    """Where the data came from and how faithful it is, as the trials recorded it (one dataset per study)."""
    t = next((t for t in reversed(trials) if "data_source" in t.user_attrs), None)
    return (None, "") if t is None else (t.user_attrs["data_source"], t.user_attrs.get("data_note", ""))
