"""Every seed a study uses, in one place: a run is reproducible, and seed s means the same run to every candidate.

- Confirm seed s: the model's initialisation, its batch order and augmentations, and its train/valid split. Every
  candidate trains seed s on the same split and batches, so candidates are paired by seed.
- Tune slot n trains with seed `TUNE_SEED_BASE + n`, disjoint from any confirm seed (tuning never sees them).
- Samplers are seeded per (study seed, candidate, stage, slot) by `stable_seed`, the same on every machine.
"""

from __future__ import annotations

import zlib
from typing import Any

from slowai.study.spec import Budget, StudySpec

CONFIRM_SEED_BASE = 0
TUNE_SEED_BASE = 10_000


def confirm_seeds(spec: StudySpec, budget: Budget, n: int | None = None) -> list[int]:
    """The confirm seeds in look order: the first `n` (default: the first look's `budget.seeds`)."""
    return [CONFIRM_SEED_BASE + spec.seed * 1000 + i for i in range(budget.seeds if n is None else n)]


def tune_seed(slot: int) -> int:
    """The training seed of tune slot `slot`."""
    return TUNE_SEED_BASE + slot


def stable_seed(*parts: Any) -> int:
    """A stable seed from names (crc32), the same in every process and on every machine."""
    return zlib.crc32("/".join(map(str, parts)).encode())
