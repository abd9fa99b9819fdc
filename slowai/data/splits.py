"""Seeded train/valid/test splits and the `subset` rule, shared by every dataset so they all cut data the same way.

Every permutation comes from a private `torch.Generator` seeded with `split_seed`, so a split never depends on (or
disturbs) the global RNG: the same seed gives the same split in every process and on every device.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from slowai.data.loader import DataLoaders, TensorLoader

Pair = tuple[Tensor, Tensor]  # (x, y)


def _perm(n: int, seed: int) -> Tensor:
    """A fixed permutation of range(n), independent of the global RNG."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def split_indices(n: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train, valid) indices: one randperm from a private generator seeded with `seed`, independent of global RNG."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = _perm(n, seed)
    return perm[val_size:], perm[:val_size]


def subset_sizes(n_train: int, n_valid: int, n_test: int, subset: int | None) -> tuple[int, int, int]:
    """Split sizes under `subset` (the one place this rule lives): train keeps `subset`, valid/test max(subset // 5, 1).

    Each size is capped at what the split has; `subset=None` keeps everything. Quick runs thus stay 5:1:1.
    """
    if subset is None:
        return n_train, n_valid, n_test
    if isinstance(subset, bool) or subset < 1:
        raise ValueError(f"subset must be >= 1 or None, got {subset}")
    k = max(subset // 5, 1)
    return min(subset, n_train), min(k, n_valid), min(k, n_test)


def count_of(size: int | float, n: int, what: str = "valid_size") -> int:
    """An item count from a count (int) or a fraction of `n` (float in [0, 1)), rounded to the nearest item."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise TypeError(f"{what} must be an int count or a float fraction, got {size!r}")
    if isinstance(size, float):
        if not 0 <= size < 1:
            raise ValueError(f"{what} as a fraction must be in [0, 1), got {size}")
        return round(size * n)
    if not 0 <= size < n:
        raise ValueError(f"{what} must be in [0, {n}) items, got {size}")
    return size


def _sample(pair: Pair, k: int, seed: int) -> Pair:
    """A given split (official test set, a valid folder) as is, or under `subset` its first k in a seeded order."""
    x, y = pair
    if k == len(y):
        return x, y
    idx = _perm(len(y), seed)[:k]
    return x[idx], y[idx]


def split_pairs(
    train: Pair,
    valid: Pair | None = None,
    test: Pair | None = None,
    *,
    n_valid: int = 0,
    n_test: int = 0,
    seed: int = 42,
    subset: int | None = None,
) -> tuple[Pair, Pair, Pair]:
    """(train, valid, test) (x, y) pairs: missing splits are carved from `train`, then the `subset` rule applies.

    One seeded permutation of `train` gives, in order, the first `n_test` items to test (only when `test` is None),
    the next `n_valid` to valid (only when `valid` is None) and the rest to train. A carved valid of 0 items means
    "validate on test" (valid is then the test pair itself). Under `subset`, carved splits keep a prefix of their
    random order and given splits a prefix of their own seeded permutation; without it given splits keep their order.
    """
    x, y = train
    n_test = 0 if test is not None else n_test
    n_valid = 0 if valid is not None else n_valid
    if len(y) - n_test - n_valid < 1 or (test is None and n_test < 1):
        what = f"{n_test} test + {n_valid} valid" if test is None else f"{n_valid} valid"
        raise ValueError(f"cannot carve {what} items out of {len(y)} and keep a train and a test split")
    perm = _perm(len(y), seed)
    test_idx, valid_idx, train_idx = perm[:n_test], perm[n_test : n_test + n_valid], perm[n_test + n_valid :]
    n_te = len(test[1]) if test is not None else n_test
    n_va = len(valid[1]) if valid is not None else (n_valid or n_te)
    k_tr, k_va, k_te = subset_sizes(len(train_idx), n_va, n_te, subset)
    te = _sample(test, k_te, seed) if test is not None else (x[test_idx[:k_te]], y[test_idx[:k_te]])
    if valid is not None:
        va = _sample(valid, k_va, seed)
    else:
        va = (x[valid_idx[:k_va]], y[valid_idx[:k_va]]) if n_valid else te
    return (x[train_idx[:k_tr]], y[train_idx[:k_tr]]), va, te


def carve_counts(size: int | float, n: int, valid_given: bool, test_given: bool, what: str) -> tuple[int, int]:
    """(n_valid, n_test) to carve from `n` training items: test first (`size` of all), then valid (of the rest)."""
    n_test = 0 if test_given else count_of(size, n, what)
    n_valid = 0 if valid_given else count_of(size, n - n_test, what)
    return n_valid, n_test


def redraw(dls: DataLoaders, seed: int) -> DataLoaders:
    """The same loaders with train and valid re-split from their pooled items by a permutation seeded with `seed`
    (same sizes, normalisation and augmentation; the test set untouched).

    Why: a confirm seed should vary everything a rerun of the experiment would, the split included (Bouthillier et
    al. 2021), while every candidate gets seed s's split, so pairing by seed still cancels it. Loaders that are not
    TensorLoaders, or a valid set that is the test set (`val_size=0`), are returned as they are."""
    tr, va = dls.train, dls.valid
    plain = isinstance(tr, TensorLoader) and isinstance(va, TensorLoader)
    if not plain or (dls.test is not None and va.x is dls.test.x):
        return dls
    x, y = torch.cat([tr.x, va.x]), torch.cat([tr.y, va.y])
    perm = _perm(len(y), seed).to(x.device)
    t, v = perm[: tr.n], perm[tr.n :]
    train = TensorLoader(x[t], y[t], tr.bs, True, tr.mean, tr.std, tr.augment, tr.drop_last)
    valid = TensorLoader(x[v], y[v], va.bs, va.shuffle, va.mean, va.std, va.augment, va.drop_last)
    return replace(dls, train=train, valid=valid)
