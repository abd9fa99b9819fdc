"""Tuned, multi-seed studies: Optuna per candidate, seed-repeated confirmation on test, honest statistics."""

from slowai.study.artifacts import load_model
from slowai.study.callbacks import PruningCB
from slowai.study.cli import build_parser, main
from slowai.study.knobs import TrainConfig, route
from slowai.study.report import StudyResult, collect, write_report
from slowai.study.runner import Runner, run_study
from slowai.study.spec import Budget, Candidate, StudyError, StudySpec, default_space
from slowai.study.stats import DiffCI, MeanCI, mean_ci, welch_diff
from slowai.study.tracking import Tracker, WandbCB, read_offline_run
from slowai.study.trial import TrialContext

__all__ = [
    "Budget",
    "Candidate",
    "DiffCI",
    "MeanCI",
    "PruningCB",
    "Runner",
    "StudyError",
    "StudyResult",
    "StudySpec",
    "Tracker",
    "TrainConfig",
    "TrialContext",
    "WandbCB",
    "build_parser",
    "collect",
    "default_space",
    "load_model",
    "main",
    "mean_ci",
    "read_offline_run",
    "route",
    "run_study",
    "welch_diff",
    "write_report",
]
