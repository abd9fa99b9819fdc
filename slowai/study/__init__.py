"""Tuned, multi-seed studies: Optuna per candidate, seed-repeated confirmation on test, honest statistics.

A study flows one way through five rooms: `planning` (the budget that fits, one plan per study), `coordination`
(the storage shared by workers), `execution` (popping and training trials), `analysis` (the verdicts) and `report`
(the answer), conducted by `runner` and started by `cli`; README's Layout section names every module."""

from slowai.study.ablation import Ablation
from slowai.study.analysis.answer import analyze
from slowai.study.analysis.results import CandidateResult, StudyResult
from slowai.study.analysis.stats import DiffCI, MeanCI, compare, holm, mean_ci, paired_diff, tost_p, welch_diff
from slowai.study.analysis.verdicts import Design, Effect, Verdict, decide, factorial_effects, seeds_needed
from slowai.study.cli import build_parser, main
from slowai.study.coordination.readback import collect
from slowai.study.execution.artifacts import load_model
from slowai.study.execution.callbacks import PruningCB
from slowai.study.execution.tracking import Tracker, WandbCB, offline_runs, read_offline_run
from slowai.study.execution.trial import TrialContext
from slowai.study.report import model_summaries, write_report
from slowai.study.runner import Runner, run_study
from slowai.study.space import TrainConfig, route
from slowai.study.spec import Budget, Candidate, StudyError, StudySpec, default_space

__all__ = [
    "Ablation",
    "Budget",
    "Candidate",
    "CandidateResult",
    "Design",
    "DiffCI",
    "Effect",
    "MeanCI",
    "PruningCB",
    "Runner",
    "StudyError",
    "StudyResult",
    "StudySpec",
    "Tracker",
    "TrainConfig",
    "TrialContext",
    "Verdict",
    "WandbCB",
    "analyze",
    "build_parser",
    "collect",
    "compare",
    "decide",
    "default_space",
    "factorial_effects",
    "holm",
    "load_model",
    "main",
    "mean_ci",
    "model_summaries",
    "offline_runs",
    "paired_diff",
    "read_offline_run",
    "route",
    "run_study",
    "seeds_needed",
    "tost_p",
    "welch_diff",
    "write_report",
]
