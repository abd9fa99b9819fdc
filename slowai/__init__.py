"""slowai: tuned, multi-seed, statistically honest ablation studies for image classifiers."""

from slowai.accel import ChannelsLastCB, CompileCB, MixedPrecisionCB, accel_cbs
from slowai.activations import ActivationStatsCB
from slowai.callbacks import LRFinderCB, MetricsCB, MultiStepCB, OneCycleCB, ProgressCB, RecorderCB
from slowai.data import DataLoaders, TensorLoader, cifar10, fashion_mnist, random_resized_crop_flip, resolve_root
from slowai.layers import Conv, DoubleConvBlock, GeneralReLU, ResidualConvBlock, init_leaky_weights
from slowai.learner import (
    Callback,
    CancelBatchException,
    CancelEpochException,
    CancelFitException,
    DeviceCB,
    Learner,
    TrainCB,
)
from slowai.models import CNN, DeeperCNN, create_model, list_models, register_model
from slowai.study import Budget, Candidate, StudyError, StudyResult, StudySpec, run_study
from slowai.summary import Summary, SummaryCB, summarize
from slowai.train import evaluate, fit_with_schedule, train_1cycle, train_multistep
from slowai.utils import default_device, set_seed

__version__ = "0.1.0"

__all__ = [
    "ActivationStatsCB",
    "Budget",
    "CNN",
    "Callback",
    "ChannelsLastCB",
    "CompileCB",
    "CancelBatchException",
    "CancelEpochException",
    "CancelFitException",
    "Candidate",
    "Conv",
    "DataLoaders",
    "DeeperCNN",
    "DeviceCB",
    "DoubleConvBlock",
    "GeneralReLU",
    "LRFinderCB",
    "Learner",
    "MetricsCB",
    "MixedPrecisionCB",
    "MultiStepCB",
    "OneCycleCB",
    "ProgressCB",
    "RecorderCB",
    "ResidualConvBlock",
    "StudyError",
    "StudyResult",
    "StudySpec",
    "Summary",
    "SummaryCB",
    "TensorLoader",
    "TrainCB",
    "accel_cbs",
    "cifar10",
    "create_model",
    "default_device",
    "evaluate",
    "fashion_mnist",
    "fit_with_schedule",
    "init_leaky_weights",
    "list_models",
    "random_resized_crop_flip",
    "register_model",
    "resolve_root",
    "run_study",
    "set_seed",
    "summarize",
    "train_1cycle",
    "train_multistep",
]
