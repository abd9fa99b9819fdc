"""Batches for K fused members: member k's training batches from its own seeded stream (and, where seeds draw their
own split, its own split), evaluation batches shared or stacked, each batch (K, B, ...)."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch
from torch import Tensor

from slowai.data import DataLoaders, TensorLoader

__all__ = ["Repeated", "SeedStreams", "Stacked", "fused_loaders"]


class Stacked:
    """K loaders of the same sizes, batch i of each stacked: (K, B, ...). Evaluation: each member's own validation
    split; training: `SeedStreams`."""

    def __init__(self, dls: Sequence[TensorLoader]) -> None:
        if len({(d.n, d.bs, len(d)) for d in dls}) != 1:
            raise ValueError("fused members' loaders must have the same size and batch size")
        self.dls = list(dls)

    def __len__(self) -> int:
        return len(self.dls[0])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batches in zip(*self.dls):
            xs, ys = zip(*batches)
            yield torch.stack(xs), torch.stack(ys)


class SeedStreams(Stacked):
    """Member k's training loader reseeded with seed k: copies of one loader, or each member's own."""

    def __init__(self, dl: TensorLoader | Sequence[TensorLoader], seeds: Sequence[int]) -> None:
        own = isinstance(dl, Sequence)
        # shallow copies: the data tensors are shared, not copied; only the shuffle/augment stream is each member's
        loaders = [copy.copy(d) for d in dl] if own else [copy.copy(dl) for _ in seeds]
        if len(loaders) != len(seeds):
            raise ValueError(f"fused members need one training loader per seed: {len(loaders)} for {len(seeds)}")
        for loader, seed in zip(loaders, seeds):
            loader.reseed(seed)
        super().__init__(loaders)


class Repeated:
    """An evaluation loader whose every batch goes to all K members (a broadcast view, no copy)."""

    def __init__(self, dl: TensorLoader, k: int) -> None:
        self.dl, self.k = dl, k

    def __len__(self) -> int:
        return len(self.dl)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in self.dl:
            yield x.expand(self.k, *x.shape), y.expand(self.k, *y.shape)


def fused_loaders(dls: DataLoaders | Sequence[DataLoaders], seeds: Sequence[int]) -> DataLoaders:
    """Loaders for K members: training batches from each seed's stream; evaluation batches shared (one `dls`) or
    stacked (one `DataLoaders` per member, e.g. each seed's own train/valid split); the test set is shared."""
    k = len(seeds)
    if isinstance(dls, DataLoaders):
        test = Repeated(dls.test, k) if dls.test is not None else None
        return replace(dls, train=SeedStreams(dls.train, seeds), valid=Repeated(dls.valid, k), test=test)
    first = dls[0]
    valids = [d.valid for d in dls]
    valid = Repeated(first.valid, k) if all(v is valids[0] for v in valids) else Stacked(valids)
    test = Repeated(first.test, k) if first.test is not None else None
    return replace(first, train=SeedStreams([d.train for d in dls], seeds), valid=valid, test=test)
