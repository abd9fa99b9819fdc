"""A confirm seed draws its own train/valid split: every candidate gets seed s's split, so pairing by seed still
holds, and verdicts average over splits as well as initialisations (Bouthillier et al. 2021)."""

from __future__ import annotations

import torch

from slowai.data import DataLoaders
from slowai.data.splits import redraw


def loaders(bs: int, val_size: int = 20) -> DataLoaders:
    """100 items numbered 0..99 (the pixel value is the item's id), 80/20 train/valid, a separate test set."""
    x = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1, 1)
    y = torch.arange(100) % 10
    tr, va = slice(val_size, 100), slice(0, val_size) if val_size else slice(90, 100)
    test = torch.full((10, 1, 1, 1), -1.0)
    return DataLoaders.from_tensors(x[tr], y[tr], x[va], y[va], test, torch.zeros(10, dtype=torch.long), bs=bs)


def ids(loader) -> set[int]:
    return {int(v) for v in loader.x.flatten()}


def test_a_seed_draws_the_same_split_for_every_candidate():
    """Two candidates' loaders (different batch sizes) re-split by seed 7 hold exactly the same train and valid
    items; seed 8 draws another split. Sizes, the pooled items and the test set never change."""
    a, b = redraw(loaders(bs=16), 7), redraw(loaders(bs=32), 7)
    assert ids(a.train) == ids(b.train) and ids(a.valid) == ids(b.valid)
    other = redraw(loaders(bs=16), 8)
    assert ids(other.valid) != ids(a.valid)
    base = loaders(bs=16)
    for d in (a, other):
        assert (d.train.n, d.valid.n) == (base.train.n, base.valid.n)
        assert ids(d.train) | ids(d.valid) == ids(base.train) | ids(base.valid) and not ids(d.train) & ids(d.valid)
        assert d.test is base.test or torch.equal(d.test.x, base.test.x)
        assert d.train.mean == base.train.mean and d.train.shuffle and not d.valid.shuffle


def test_validating_on_the_test_set_is_left_alone():
    """With val_size=0 the valid loader is the test set: there is no valid split to draw, so nothing changes."""
    x, y = torch.rand(50, 1, 2, 2), torch.arange(50) % 5
    test_x, test_y = x[:10], y[:10]  # one pair for valid and test, as the datasets pass it
    dls = DataLoaders.from_tensors(x[10:], y[10:], test_x, test_y, test_x, test_y, bs=8)
    assert redraw(dls, 3) is dls
