"""Batching whole datasets that already live on the training device, and the `DataLoaders` that carry them.

Why: a study trains many short trials, so per-item PIL/ToTensor work and worker processes would dominate the run
time. Here a batch is one gather on the device, a multiply-add to normalize with the training split's per-channel
mean/std and, for training, one batched `grid_sample` for augmentation. Shuffles come from `torch.randperm` on the
global CPU generator, so `slowai.utils.set_seed` makes the batch order repeatable (and identical across devices),
or from the loader's own stream after `reseed(seed)`: then two models trained with the same seed see the same batch
order and augmentations whatever random numbers each model draws (paired seeds).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from slowai.utils import default_device

Augment = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------------------------- batching
class TensorLoader:
    """Batches from tensors already on the device: one gather + normalize per batch, no workers, no host syncs.

    `x` is uint8 (N,C,H,W), scaled by 1/255 then normalized per channel by `mean`/`std` (given in [0,1] units), or
    float, normalized only when `mean`/`std` are given. `y` is returned as int64. `augment(xb) -> xb` runs on the
    normalized float batch, on the device, every epoch. With `shuffle=True` the loader counts as a training loader:
    a trailing batch of exactly one item is dropped (BatchNorm cannot train on one sample) unless it is the only
    batch; `drop_last=True` drops any short trailing batch. The order comes from `torch.randperm` on the global CPU
    generator. Treat `x`/`y` as read-only: they may be shared with other loaders and the in-process cache.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        bs: int,
        shuffle: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        augment: Augment | None = None,
        drop_last: bool = False,
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} items but y has {len(y)}")
        if bs < 1:
            raise ValueError(f"bs must be >= 1, got {bs}")
        self.x, self.y, self.bs, self.n = x, y.long(), int(bs), len(x)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.mean = tuple(float(m) for m in mean) if mean is not None else None
        self.std = tuple(float(s) for s in std) if std is not None else None
        self._scale, self._shift = self._affine(x)
        self._rng: list[Tensor] | None = None  # own (CPU[, device]) generator states after reseed(); else global

    def reseed(self, seed: int | None) -> None:
        """Draw shuffles and augmentations from this loader's own stream started at `seed` (None: the global RNG)."""
        if seed is None:
            self._rng = None
            return
        with torch.random.fork_rng(devices=self._devices()):
            torch.manual_seed(seed)
            self._rng = self._states()

    def _devices(self) -> list[torch.device]:
        return [self.x.device] if self.x.is_cuda else []

    def _states(self) -> list[Tensor]:
        return [torch.get_rng_state(), *(torch.cuda.get_rng_state(d) for d in self._devices())]

    @contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Swap this loader's stream in around one draw (never across a yield: the model's draws stay global)."""
        if self._rng is None:
            yield
            return
        with torch.random.fork_rng(devices=self._devices()):
            torch.set_rng_state(self._rng[0])
            for d, state in zip(self._devices(), self._rng[1:]):
                torch.cuda.set_rng_state(state, d)
            yield
            self._rng = self._states()

    def _affine(self, x: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """Fold 1/255 and (v - mean)/std into one `v * scale - shift` so a batch costs one multiply-add."""
        if x.dtype != torch.uint8 and self.mean is None:
            return None, None
        c = x.shape[1]
        mean = torch.tensor(self.mean if self.mean is not None else [0.0] * c, dtype=torch.float64)
        std = torch.tensor(self.std if self.std is not None else [1.0] * c, dtype=torch.float64)
        if len(mean) != c or len(std) != c:
            raise ValueError(f"mean/std need {c} values (one per channel), got {len(mean)}/{len(std)}")
        scale = 1.0 / (std * 255.0) if x.dtype == torch.uint8 else 1.0 / std
        as_4d = dict(dtype=torch.float32, device=x.device)
        return scale.view(1, c, 1, 1).to(**as_4d), (mean / std).view(1, c, 1, 1).to(**as_4d)

    def __len__(self) -> int:
        """Number of batches per epoch, after the drop rules in the class docstring."""
        if self.drop_last:
            return self.n // self.bs
        nb = -(-self.n // self.bs)
        return nb - 1 if self.shuffle and nb > 1 and self.n % self.bs == 1 else nb

    def _prep(self, xb: Tensor, yb: Tensor, fresh: bool, augment: bool) -> tuple[Tensor, Tensor]:
        """Float, normalize (in place when `xb` is already a private copy), then augment."""
        fresh = fresh or xb.dtype != torch.float32
        xb = xb.float()
        if self._scale is not None:
            xb = (xb.mul_(self._scale) if fresh else xb.mul(self._scale)).sub_(self._shift)
        if augment and self.augment is not None:
            with self._own_rng():
                xb = self.augment(xb)
        return xb, yb

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (xb float32 (B,C,H,W), yb int64 (B,)) batches."""
        perm = None
        if self.shuffle:
            with self._own_rng():
                perm = torch.randperm(self.n)  # CPU generator: seeded by set_seed, same order on every device
            if self.x.is_cuda:
                perm = perm.pin_memory()
            perm = perm.to(self.x.device, non_blocking=True)
        for i in range(len(self)):
            s = slice(i * self.bs, min((i + 1) * self.bs, self.n))
            if perm is None:
                yield self._prep(self.x[s], self.y[s], fresh=False, augment=True)
            else:
                idx = perm[s]
                yield self._prep(self.x[idx], self.y[idx], fresh=True, augment=True)

    def one_batch(self) -> tuple[Tensor, Tensor]:
        """The first `bs` stored items, normalized but not shuffled or augmented: touches no RNG."""
        return self._prep(self.x[: self.bs], self.y[: self.bs], fresh=False, augment=False)

    def __repr__(self) -> str:
        return (
            f"TensorLoader(n={self.n}, bs={self.bs}, batches={len(self)}, shuffle={self.shuffle}, "
            f"x={tuple(self.x.shape)} {self.x.dtype} on {self.x.device}, augment={self.augment is not None})"
        )


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of (N,C,H,W) images (uint8 in [0,1] units via an exact 256-bin histogram, no float copy)."""
    if x.dtype == torch.uint8:
        v = torch.arange(256, dtype=torch.float64, device=x.device) / 255.0
        counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])])
        p = counts.double() / counts[0].sum()
        mean = p @ v
        var = p @ v.square() - mean.square()
    else:
        flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
        mean, var = flat.mean(1), flat.var(1, correction=0)
    return tuple(mean.tolist()), tuple(var.clamp_min(0).sqrt().tolist())


# ----------------------------------------------------------------------------------------------- augmentation
def random_resized_crop_flip(
    x: Tensor, scale: tuple[float, float] = (0.8, 1.0), ratio: tuple[float, float] = (0.9, 1.1), flip: bool = True
) -> Tensor:
    """Per-sample random-resized-crop (+ horizontal flip, p=0.5) of a float batch as ONE affine_grid/grid_sample.

    Each sample gets its own area fraction ~ U(scale) and aspect ratio w/h ~ log-U(ratio); the crop is clamped to
    the image (so no padding is ever sampled) and placed uniformly, then resized back to (H,W) bilinearly. With
    scale=(1,1), ratio=(1,1), flip=False it is the identity. Random numbers come from the batch's device generator.
    """
    b, _, h, w = x.shape
    dev = x.device
    area = torch.empty(b, device=dev).uniform_(*scale)
    r = torch.empty(b, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    cw = (area * r * h / w).sqrt().clamp(max=1.0)  # crop width, as a fraction of the image width
    ch = (area / r * w / h).sqrt().clamp(max=1.0)
    cx = (torch.rand(b, device=dev) * 2 - 1) * (1 - cw)  # crop centre in grid units [-1, 1]
    cy = (torch.rand(b, device=dev) * 2 - 1) * (1 - ch)
    sx = torch.where(torch.rand(b, device=dev) < 0.5, -cw, cw) if flip else cw
    zero = torch.zeros_like(cw)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, ch, cy], 1)], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def pick_augment(augment: bool | Augment | None) -> Augment | None:
    """True -> the default crop+flip, False/None -> none, a callable -> itself: one switch for every dataset."""
    if augment is True:
        return random_resized_crop_flip
    return augment or None


def augment_setting(augment: bool | Augment | None) -> bool | str:
    """`augment` as a JSON-safe setting (a callable by its qualified name), so a study can fingerprint it."""
    if augment is None or isinstance(augment, bool):
        return bool(augment)
    return f"{getattr(augment, '__module__', '?')}.{getattr(augment, '__qualname__', type(augment).__name__)}"


# ----------------------------------------------------------------------------------------------- DataLoaders
@dataclass(repr=False)
class DataLoaders:
    """The train/valid/(test) loaders of one dataset plus what a report needs to say about them."""

    train: TensorLoader
    valid: TensorLoader
    test: TensorLoader | None = None
    name: str = "tensors"
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: str = "in-memory tensors"
    note: str = ""  # how faithful the copy is, for reports (e.g. the offline CIFAR-10's JPEG-decoded pixels)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    settings: dict[str, Any] = field(default_factory=dict)  # JSON-safe factory settings that define the data

    @property
    def n_classes(self) -> int:
        """Number of classes, for the model head."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one input, for building and summarizing models."""
        return tuple(self.train.x.shape[1:])

    def one_batch(self, split: str = "train") -> tuple[Tensor, Tensor]:
        """First batch of `split` in stored order, normalized, un-augmented; consumes no random numbers."""
        dl = getattr(self, split, None)
        if not isinstance(dl, TensorLoader):
            raise ValueError(f"no {split!r} split (have train, valid{', test' if self.test else ''})")
        return dl.one_batch()

    @classmethod
    def from_tensors(
        cls,
        x_train: Tensor,
        y_train: Tensor,
        x_valid: Tensor,
        y_valid: Tensor,
        x_test: Tensor | None = None,
        y_test: Tensor | None = None,
        bs: int = 64,
        device: torch.device | str | None = None,
        classes: Sequence[str] | None = None,
        augment: Augment | None = None,
        name: str = "tensors",
        source: str = "in-memory tensors",
        note: str = "",
        settings: dict[str, Any] | None = None,
    ) -> DataLoaders:
        """Loaders for (N,C,H,W) tensors, normalized with x_train's per-channel stats; augment applies to train only."""
        device = torch.device(device) if device is not None else default_device()
        xs = {}  # move each distinct tensor once, so valid and test can share storage (val_size=0)

        def put(t: Tensor) -> Tensor:
            if id(t) not in xs:
                xs[id(t)] = torch.as_tensor(t).to(device)
            return xs[id(t)]

        xtr, ytr, xva, yva = put(x_train), put(y_train), put(x_valid), put(y_valid)
        mean, std = channel_stats(xtr)
        if classes is None:
            ys = [y for y in (y_train, y_valid, y_test) if y is not None]
            classes = [str(i) for i in range(max(int(torch.as_tensor(y).max()) for y in ys) + 1)]
        train = TensorLoader(xtr, ytr, bs, shuffle=True, mean=mean, std=std, augment=augment)
        valid = TensorLoader(xva, yva, bs, mean=mean, std=std)
        test = None if x_test is None else TensorLoader(put(x_test), put(y_test), bs, mean=mean, std=std)
        return cls(
            train,
            valid,
            test,
            name=name,
            classes=list(classes),
            mean=mean,
            std=std,
            source=source,
            note=note,
            device=device,
            settings=dict(settings or {}),
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(dl.n) if dl else "-" for dl in (self.train, self.valid, self.test))
        return (
            f"DataLoaders({self.name}: train/valid/test={sizes}, input={self.input_shape}, "
            f"classes={self.n_classes}, bs={self.train.bs}, device={self.device}, source={self.source})"
        )
