"""Image folders (torchvision's ImageFolder layout) decoded once into uint8 (N,C,H,W) tensors.

Why decode up front: the loaders batch whole tensors on the device, so every image is opened, converted and resized
with PIL exactly once per process; the result is cached by the folder's resolved path, the target size, the
grayscale choice and the list of image files with their sizes and modification times (an edited folder re-decodes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

LAYOUT = (
    "root/<class>/<image> (split into train/valid/test), or root/train/<class>/<image> with optional root/valid "
    "(or root/val) and root/test laid out the same way"
)
GRAY_MODES = ("1", "L", "LA", "I", "F")  # plus the 16-bit "I;16*" family

Samples = tuple[tuple[str, int], ...]  # (image path, class index)


@dataclass(frozen=True)
class FolderData:
    """Decoded splits of one folder: `splits` has "train" and, when the folder has them, "valid" and "test"."""

    classes: tuple[str, ...]
    splits: dict[str, tuple[Tensor, Tensor]]
    grayscale: bool
    note: str


def _as_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """`size` as (height, width): an int means a square."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(s, int) and s >= 1 for s in hw):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return hw


def split_dirs(root: Path) -> dict[str, Path]:
    """The folders that hold each split: root/train[, root/valid or root/val][, root/test], else root alone."""
    if not (root / "train").is_dir():
        return {"train": root}
    dirs = {"train": root / "train"}
    if valid := next((root / n for n in ("valid", "val") if (root / n).is_dir()), None):
        dirs["valid"] = valid
    if (root / "test").is_dir():
        dirs["test"] = root / "test"
    return dirs


def scan(root: Path) -> tuple[tuple[str, ...], dict[str, Samples]]:
    """Class names (train's sub-folders, sorted) and each split's images, found by torchvision's ImageFolder."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    dirs = split_dirs(root)
    try:
        train = ImageFolder(str(dirs["train"]))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no images found in {dirs['train']} ({e}); expected {LAYOUT}") from None
    samples = {"train": tuple(train.samples)}
    for split, d in dirs.items():
        if split == "train":
            continue
        if extra := sorted(set(find_classes(str(d))[0]) - set(train.classes)):
            raise ValueError(f"{d} has class folder {extra[0]!r} that {dirs['train']} lacks; expected {LAYOUT}")
        samples[split] = tuple(make_dataset(str(d), train.class_to_idx, IMG_EXTENSIONS, allow_empty=True))
        if not samples[split]:
            raise ValueError(f"no images found in {d}; expected {LAYOUT}")
    return tuple(train.classes), samples


def _is_gray(path: str) -> bool:
    """Whether an image is stored single-channel (reads only the header)."""
    from PIL import Image

    with Image.open(path) as im:
        return im.mode in GRAY_MODES or im.mode.startswith("I;16")


def _decode(path: str, hw: tuple[int, int], gray: bool) -> tuple[np.ndarray, bool]:
    """One image as uint8 (C,H,W) (16-bit grays scaled to 8 bits), and whether it had to be resized."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode.startswith("I;16"):
            im = Image.fromarray((np.asarray(im, dtype=np.float32) / 257).round().astype(np.uint8))
        im = im.convert("L" if gray else "RGB")
        resized = im.size != (hw[1], hw[0])
        if resized:
            im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
        a = np.asarray(im)
    return (a[None] if gray else a.transpose(2, 0, 1)), resized


def _decode_split(samples: Samples, hw: tuple[int, int], gray: bool) -> tuple[Tensor, Tensor, int]:
    """A split's images as one uint8 (N,C,H,W) tensor, its int64 labels, and how many images were resized."""
    decoded = [_decode(p, hw, gray) for p, _ in samples]
    x = torch.from_numpy(np.stack([a for a, _ in decoded]))
    y = torch.tensor([c for _, c in samples], dtype=torch.int64)
    return x, y, sum(r for _, r in decoded)


@lru_cache(maxsize=4)
def decode_cached(
    classes: tuple[str, ...],
    samples: tuple[tuple[str, Samples], ...],
    hw: tuple[int, int],
    grayscale: bool | None,
    stamp: tuple,
) -> FolderData:
    """Decode every split once per process; `stamp` (file sizes and mtimes) only keys the cache."""
    gray = all(_is_gray(p) for _, s in samples for p, _ in s) if grayscale is None else bool(grayscale)
    splits, n_resized = {}, 0
    for split, s in samples:
        x, y, r = _decode_split(s, hw, gray)
        splits[split], n_resized = (x, y), n_resized + r
    n = sum(len(s) for _, s in samples)
    how = f"{n_resized} resized to {hw[0]}×{hw[1]} with PIL bilinear" if n_resized else f"all {hw[0]}×{hw[1]}"
    note = f"decoded from {n} image files ({how}), {'grayscale' if gray else 'RGB'}"
    return FolderData(classes, splits, gray, note)


def load_folder(root: str | Path, size: int | tuple[int, int] = 32, grayscale: bool | None = None) -> FolderData:
    """Find, decode (cached) and return the splits of the image folder at `root`; grayscale=None: all 1-channel."""
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {path} does not exist or is not a directory; expected {LAYOUT}")
    hw = _as_hw(size)
    classes, samples = scan(path)
    stamp = tuple((st.st_size, st.st_mtime_ns) for s in samples.values() for st in (Path(p).stat() for p, _ in s))
    return decode_cached(classes, tuple(samples.items()), hw, grayscale, stamp)
