"""The callback protocol every other module builds on: `Callback` and the cancel exceptions.

Why a module of its own: the Learner, the callbacks and the study code all need these names, and keeping them here
means none of those modules has to import another just to subclass `Callback` (no import cycles).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slowai.learner import Learner


class CancelFitException(Exception):
    """Stop training now; `after_fit` is skipped, `cleanup_fit` still runs."""


class CancelEpochException(Exception):
    """Skip the rest of this epoch (train or valid pass); `cleanup_epoch` still runs."""


class CancelBatchException(Exception):
    """Skip the rest of this batch; `cleanup_batch` still runs."""


CANCEL = {"fit": CancelFitException, "epoch": CancelEpochException, "batch": CancelBatchException}


class Callback:
    """A bag of event handlers; `order` sorts callbacks (lower runs first), `learn` is set when added to a Learner."""

    order: int = 0
    learn: Learner

    @property
    def name(self) -> str:
        return type(self).__name__
