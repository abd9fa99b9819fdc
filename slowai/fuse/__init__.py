"""Fused multi-seed training: K seeds of one architecture trained as one wider model, each member exact."""

from slowai.fuse.loaders import SeedStreams, fused_loaders
from slowai.fuse.measure import FusionTiming, measure_fusion
from slowai.fuse.model import FusedLinear, FusedModel, FusionError, fuse_models, fuse_seeds, verify_fused
from slowai.fuse.schedules import MemberSchedulesCB, schedule_trace
from slowai.fuse.train import FusedMetricsCB, FusedTrainCB, fit_fused, fused_learner, member_losses

__all__ = [
    "FusedLinear",
    "FusedMetricsCB",
    "FusedModel",
    "FusedTrainCB",
    "FusionError",
    "FusionTiming",
    "MemberSchedulesCB",
    "SeedStreams",
    "fit_fused",
    "fuse_models",
    "fuse_seeds",
    "fused_learner",
    "fused_loaders",
    "member_losses",
    "measure_fusion",
    "schedule_trace",
    "verify_fused",
]
