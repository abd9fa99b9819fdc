"""A study's data: the spec's dataset (a registered name or a factory) loaded per stage, batch size and settings.

Why a cache: every trial of a stage trains on the same split, so loaders are built once per process and reused; a
search space that tunes `train.bs` or a `data.*` setting gets its own loaders, built on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from slowai.data import DataLoaders, dataset_factory, dataset_options
from slowai.data.splits import redraw
from slowai.study.space import TrainConfig
from slowai.study.spec import Budget, StudySpec, json_safe

MAX_CACHED = 8


class StudyData:
    """Loaders of one study on one device, keyed by (subset, batch size, dataset settings)."""

    def __init__(self, spec: StudySpec, device: torch.device) -> None:
        self.spec, self.device = spec, device
        self.factory: Callable[..., DataLoaders] = (
            dataset_factory(spec.dataset) if isinstance(spec.dataset, str) else spec.dataset
        )
        self._cache: dict[tuple, DataLoaders] = {}

    def options(self) -> list[str] | None:
        """The `data.*` settings this dataset accepts (None: its factory takes any keyword)."""
        return dataset_options(self.factory)

    def load(self, subset: int | None, bs: int, **settings: Any) -> DataLoaders:
        """The loaders for `subset` training images (None: all) at batch size `bs`."""
        kw = {**self.spec.data_kwargs, **settings}
        key = (subset, bs, tuple(sorted((k, repr(v)) for k, v in kw.items())))
        if key not in self._cache:
            if len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            dls = self.factory(bs=bs, device=self.device, subset=subset, root=self.spec.data_root, **kw)
            if not isinstance(dls, DataLoaders):
                raise TypeError(
                    f"dataset factory {self.spec.dataset_name!r} returned {type(dls).__name__}, not DataLoaders"
                )
            self._cache[key] = dls
        return self._cache[key]

    def for_stage(
        self, budget: Budget, stage: str, cfg: TrainConfig | None = None, seed: int | None = None
    ) -> DataLoaders:
        """A stage's loaders, with the batch size and data settings a trial's hyperparameters ask for; a confirm run
        of seed s trains and validates on seed s's split of the training pool (`splits.redraw`), the same for
        every candidate, so verdicts average over splits too."""
        subset = budget.tune_subset if stage == "tune" else budget.confirm_subset
        bs = cfg.bs if cfg is not None and cfg.bs is not None else budget.bs
        dls = self.load(subset, bs, **(cfg.data_kw if cfg is not None else {}))
        return redraw(dls, seed) if stage == "confirm" and seed is not None else dls

    def sizes(self, subset: int | None) -> tuple[int, int, int]:
        """(train, valid, test) images under `subset`, as the dataset itself splits them."""
        dls = self.load(subset, Budget().bs)
        return dls.train.n, dls.valid.n, dls.test.n if dls.test is not None else dls.valid.n

    def fingerprint(self) -> dict[str, Any]:
        """What defines the data of this study: dataset name, its settings and the copy it was read from."""
        dls = self.load(None, Budget().bs)
        settings = {k: json_safe(v) for k, v in {**dls.settings, **self.spec.data_kwargs}.items()}
        shape = list(dls.input_shape)
        return {"name": self.spec.dataset_name, "settings": settings, "input_shape": shape, "confirm_split": "by seed"}


def describe_data(dls: DataLoaders) -> Mapping[str, Any]:
    """Trial attrs about the data: where it came from, how faithful it is, and the shapes the model was built for."""
    return {
        "data_source": dls.source,
        "data_note": dls.note,
        "input_shape": list(dls.input_shape),
        "n_classes": dls.n_classes,
        "test_size": dls.test.n if dls.test is not None else None,  # bounds the test-set sampling error
    }
