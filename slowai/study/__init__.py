"""Tuned, multi-seed studies: Optuna per candidate, seed-repeated confirmation on test, honest statistics."""

from slowai.study.ablation import Ablation
from slowai.study.analysis import analyze
from slowai.study.artifacts import load_model
from slowai.study.callbacks import PruningCB
from slowai.study.cli import build_parser, main
from slowai.study.knobs import TrainConfig, route
from slowai.study.report import StudyResult, collect, write_report
from slowai.study.runner import Runner, run_study
from slowai.study.spec import Budget, Candidate, StudyError, StudySpec, default_space
from slowai.study.stats import DiffCI, MeanCI, compare, holm, mean_ci, paired_diff, tost_p, welch_diff
from slowai.study.tracking import Tracker, WandbCB, read_offline_run
from slowai.study.trial import TrialContext
from slowai.study.verdicts import Design, Effect, Verdict, decide, factorial_effects, seeds_needed

__all__ = [
    "Ablation",
    "Budget",
    "Candidate",
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
    "paired_diff",
    "read_offline_run",
    "route",
    "run_study",
    "seeds_needed",
    "tost_p",
    "welch_diff",
    "write_report",
]
