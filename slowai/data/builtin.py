"""The registered datasets (Fashion-MNIST, CIFAR-10, scikit-learn's digits, image folders) and `from_tensors`.

Each factory follows the registry's contract (`bs`, `device`, `subset`, `root` plus its own settings), splits with
`split_pairs` (one seeded permutation, the one `subset` rule) and records its own settings in `DataLoaders.settings`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from slowai.data.folder import LAYOUT, decode_cached, load_folder
from slowai.data.loader import Augment, DataLoaders, augment_setting, pick_augment
from slowai.data.registry import register_dataset
from slowai.data.sources import RawData, load_raw, read_cached
from slowai.data.splits import Pair, carve_counts, count_of, split_pairs

Device = torch.device | str | None


def _loaders(
    splits: tuple[Pair, Pair, Pair], bs: int, device: Device, augment: bool | Augment | None, **meta: Any
) -> DataLoaders:
    """DataLoaders over (train, valid, test) pairs; `meta` is name, classes, source, note and settings."""
    (xtr, ytr), (xva, yva), (xte, yte) = splits
    return DataLoaders.from_tensors(
        xtr, ytr, xva, yva, xte, yte, bs=bs, device=device, augment=pick_augment(augment), **meta
    )


def _from_raw(
    raw: RawData,
    name: str,
    bs: int,
    device: Device,
    subset: int | None,
    val_size: int,
    split_seed: int,
    augment: bool | Augment,
) -> DataLoaders:
    """Carve valid from the official train set, keep the official test set, apply `subset` (val_size=0: valid=test)."""
    n_valid = count_of(val_size, len(raw.y_train), "val_size")
    splits = split_pairs(
        (raw.x_train, raw.y_train), test=(raw.x_test, raw.y_test), n_valid=n_valid, seed=split_seed, subset=subset
    )
    settings = {"val_size": val_size, "split_seed": split_seed, "augment": augment_setting(augment)}
    return _loaders(
        splits,
        bs,
        device,
        augment,
        classes=list(raw.classes),
        name=name,
        source=raw.source,
        note=raw.note,
        settings=settings,
    )


@register_dataset(
    "fashion_mnist",
    "Zalando's Fashion-MNIST: 1×28×28, 10 classes, 50k/10k/10k",
    aliases=("fashion-mnist", "fashionmnist", "fmnist"),
)
def fashion_mnist(
    bs: int = 512,
    root: str | Path | None = None,
    device: Device = None,
    subset: int | None = None,
    val_size: int = 10_000,
    augment: bool | Augment = False,
    split_seed: int = 42,
) -> DataLoaders:
    """Fashion-MNIST (1,28,28): train/valid = 50k/10k of the official 60k train set, test = the official 10k.

    The split is a fixed permutation seeded by `split_seed` (independent of the global RNG). `val_size=0` makes
    valid the official test set (as in the seed notebook): then valid and test are the same loader data.
    `subset=k` (quick runs): train keeps the first k items of the split's fixed random order, valid and test the
    first max(k // 5, 1) of theirs (test permuted with `split_seed`), each capped at its size.
    `augment=True` adds the CIFAR crop + horizontal flip (`random_resized_crop_flip`) to train; default off.
    """
    return _from_raw(
        load_raw("fashion_mnist", root), "fashion_mnist", bs, device, subset, val_size, split_seed, augment
    )


@register_dataset(
    "cifar10", "CIFAR-10: 3×32×32, 10 classes, 45k/5k/10k, crop+flip augmentation", aliases=("cifar-10", "cifar")
)
def cifar10(
    bs: int = 512,
    root: str | Path | None = None,
    device: Device = None,
    subset: int | None = None,
    val_size: int = 5_000,
    augment: bool | Augment = True,
    split_seed: int = 42,
) -> DataLoaders:
    """CIFAR-10 (3,32,32): train/valid = 45k/5k of the 50k train set, test = the official 10k; `source` says which copy.

    Split, `val_size=0` and `subset` work as in `fashion_mnist`. `augment=True` (default) applies, to train only,
    `random_resized_crop_flip` (flip p=0.5, scale (0.8, 1), ratio (0.9, 1.1)); pass a callable to replace it.
    """
    return _from_raw(load_raw("cifar10", root), "cifar10", bs, device, subset, val_size, split_seed, augment)


@lru_cache(maxsize=1)
def _digits_tensors() -> Pair:
    """scikit-learn's digits as uint8 (1797,1,8,8) images (0..16 scaled to 0..255) and int64 labels."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits dataset needs scikit-learn: pip install scikit-learn") from e
    d = load_digits()
    x = np.rint(d.images * 255 / 16).astype(np.uint8)[:, None]
    return torch.from_numpy(x), torch.from_numpy(d.target.astype(np.int64))


@register_dataset("digits", "scikit-learn's 1,797 handwritten digits: 1×8×8, 10 classes, no download")
def digits(
    bs: int = 64,
    device: Device = None,
    subset: int | None = None,
    root: str | Path | None = None,
    valid_pct: float = 0.2,
    split_seed: int = 42,
    augment: bool | Augment = False,
) -> DataLoaders:
    """UCI's optdigits as shipped inside scikit-learn: a real dataset small enough for tests and CPU smoke runs.

    A fixed `split_seed` permutation gives test round(0.2 × 1,797) = 359 images, valid round(0.2 × 1,438) = 288 and
    train the remaining 1,150 (with the default `valid_pct`); `subset` cuts as everywhere. `root` is ignored (the
    data ships with scikit-learn). Pixels are the exact 4-bit counts 0..16, rescaled to round(v × 255 / 16).
    """
    x, y = _digits_tensors()
    n_valid, n_test = carve_counts(valid_pct, len(y), False, False, "valid_pct")
    splits = split_pairs((x, y), n_valid=n_valid, n_test=n_test, seed=split_seed, subset=subset)
    settings = {"valid_pct": valid_pct, "split_seed": split_seed, "augment": augment_setting(augment)}
    source = "scikit-learn load_digits (UCI optdigits, 1,797 images)"
    note = "exact 4-bit pixel counts (0..16) rescaled to 0..255; 8×8, so much coarser than MNIST"
    classes = [str(i) for i in range(10)]
    return _loaders(
        splits, bs, device, augment, classes=classes, name="digits", source=source, note=note, settings=settings
    )


@register_dataset("image_folder", "your own images: root/<class>/<image>, or root/train|valid|test/<class>/<image>")
def image_folder(
    root: str | Path | None = None,
    size: int | tuple[int, int] = 32,
    grayscale: bool | None = None,
    *,
    bs: int = 64,
    device: Device = None,
    subset: int | None = None,
    augment: bool | Augment = False,
    valid_pct: float = 0.2,
    split_seed: int = 42,
) -> DataLoaders:
    """A folder of images in torchvision's ImageFolder layout, decoded once (cached) and resized to `size` with PIL.

    With `root/train`, that is the training pool, `root/valid` (or `root/val`) and `root/test` the other splits;
    a missing one, and every split when `root` has class folders directly, is carved from the pool: test first
    (`valid_pct` of it), then valid (`valid_pct` of the rest). `grayscale=None` gives 1 channel when every image is
    stored single-channel, else RGB. Classes are train's sub-folder names, sorted.
    """
    if root is None:
        raise ValueError(f"image_folder needs root=<folder> (--data-root); expected {LAYOUT}")
    data = load_folder(root, size, grayscale)
    train, valid, test = (data.splits.get(s) for s in ("train", "valid", "test"))
    n_valid, n_test = carve_counts(valid_pct, len(train[1]), valid is not None, test is not None, "valid_pct")
    splits = split_pairs(train, valid, test, n_valid=n_valid, n_test=n_test, seed=split_seed, subset=subset)
    h, w = data.splits["train"][0].shape[-2:]
    settings = {
        "size": [h, w],
        "grayscale": data.grayscale,
        "valid_pct": valid_pct,
        "split_seed": split_seed,
        "augment": augment_setting(augment),
    }
    carved = [s for s, given in (("valid", valid), ("test", test)) if given is None]
    note = data.note + (f"; {' and '.join(carved)} carved from train" if carved else "")
    source = str(Path(root).expanduser().resolve())
    return _loaders(
        splits,
        bs,
        device,
        augment,
        classes=list(data.classes),
        name="image_folder",
        source=source,
        note=note,
        settings=settings,
    )


def from_tensors(
    x: Tensor,
    y: Tensor,
    x_test: Tensor | None = None,
    y_test: Tensor | None = None,
    *,
    valid_size: int | float = 0.2,
    bs: int = 64,
    device: Device = None,
    subset: int | None = None,
    augment: bool | Augment = False,
    classes: Sequence[str] | None = None,
    name: str = "tensors",
    source: str = "in-memory tensors",
    note: str = "",
    split_seed: int = 42,
) -> DataLoaders:
    """Your own (N,C,H,W) uint8 or float images, split and subset exactly like the built-in datasets.

    Valid is carved from (x, y) by a private generator seeded with `split_seed`: `valid_size` items (int) or that
    fraction (float). Without `x_test`, a test split is carved first, of the same size (a float: that fraction of all
    items, and valid then that fraction of the rest); a given test set keeps its order (seeded sample under `subset`).
    """
    if (x_test is None) != (y_test is None):
        raise ValueError("give both x_test and y_test, or neither")
    for xs, ys in ((x, y), (x_test, y_test)):
        if xs is not None and (xs.ndim != 4 or len(xs) != len(ys)):
            raise ValueError(f"expected (N,C,H,W) images with N labels, got {tuple(xs.shape)} and {len(ys)} labels")
    test = None if x_test is None else (x_test, y_test)
    n_valid, n_test = carve_counts(valid_size, len(y), False, test is not None, "valid_size")
    splits = split_pairs((x, y), None, test, n_valid=n_valid, n_test=n_test, seed=split_seed, subset=subset)
    settings = {
        "valid_size": valid_size,
        "split_seed": split_seed,
        "augment": augment_setting(augment),
        "test": "given" if test is not None else "carved",
    }
    return _loaders(
        splits, bs, device, augment, classes=classes, name=name, source=source, note=note, settings=settings
    )


def clear_cache() -> None:
    """Forget decoded datasets (files, image folders, digits): to free memory, or after the files changed."""
    read_cached.cache_clear()
    decode_cached.cache_clear()
    _digits_tensors.cache_clear()
