"""Tensor-only data: each dataset is decoded once into uint8 tensors that live on the training device.

Why: a study trains many short trials, so per-item PIL/ToTensor work and worker processes would dominate the run
time. Here a batch is one gather on the device, a multiply-add to normalize with the training split's per-channel
mean/std and, for training, one batched `grid_sample` for augmentation. Shuffles come from `torch.randperm` on the
global CPU generator, so `slowai.utils.set_seed` makes the batch order repeatable (and identical across devices).

Finding the data: see `resolve_root`. Files are read with gzip/numpy/pickle, never through torchvision datasets,
and the decoded arrays are cached in-process, so building DataLoaders for the next trial costs only the split.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import socket
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slowai.utils import default_device

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR10_BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
SYSTEM_ROOTS = {
    "fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "cifar10": [Path("/usr/share/datasets/cifar10"), Path("/usr/share/datasets/cifar-10")],
}
LAYOUTS = {
    "fashion_mnist": "the four IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz] directly in the root, "
    "in root/fashion-mnist/, or in root/FashionMNIST/raw/ (torchvision's layout)",
    "cifar10": "root/cifar10/cifar10.npz, root/cifar10.npz, or root/cifar-10-batches-py/ (torchvision's pickles)",
}
_ALIASES = {
    "fashion_mnist": "fashion_mnist",
    "fashion-mnist": "fashion_mnist",
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar": "cifar10",
}
DOWNLOAD_TIMEOUT_S = 10.0
IDX_IMAGES, IDX_LABELS = 2051, 2049


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
        augment: Callable[[Tensor], Tensor] | None = None,
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
            xb = self.augment(xb)
        return xb, yb

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of (xb float32 (B,C,H,W), yb int64 (B,)) batches."""
        perm = None
        if self.shuffle:
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


def _pick_augment(augment: bool | Callable[[Tensor], Tensor] | None) -> Callable[[Tensor], Tensor] | None:
    """True -> the default crop+flip, False/None -> none, a callable -> itself."""
    if augment is True:
        return random_resized_crop_flip
    return augment or None


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
        augment: Callable[[Tensor], Tensor] | None = None,
        name: str = "tensors",
        source: str = "in-memory tensors",
        note: str = "",
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
        )

    def __repr__(self) -> str:
        sizes = "/".join(str(dl.n) if dl else "-" for dl in (self.train, self.valid, self.test))
        return (
            f"DataLoaders({self.name}: train/valid/test={sizes}, input={self.input_shape}, "
            f"classes={self.n_classes}, bs={self.train.bs}, device={self.device}, source={self.source})"
        )


# ----------------------------------------------------------------------------------------------- readers
def read_idx(path: str | Path, expect_magic: int | None = None) -> np.ndarray:
    """Parse a big-endian uint8 IDX file (.gz or plain) with numpy; raise ValueError naming the file if corrupt."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
            raise ValueError(f"{path}: cannot decompress ({e}); the file is corrupt or truncated") from e
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    if magic not in (IDX_IMAGES, IDX_LABELS) or (expect_magic is not None and magic != expect_magic):
        want = expect_magic or f"{IDX_IMAGES} (images) or {IDX_LABELS} (labels)"
        raise ValueError(f"{path}: bad IDX magic number {magic}, expected {want}; not an uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) != start + math.prod(dims):
        raise ValueError(f"{path}: header says {dims} (= {start + math.prod(dims)} bytes) but file has {len(raw)}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


@dataclass(frozen=True)
class RawData:
    """Decoded uint8 images (N,C,H,W) and int64 labels on the CPU, as cached; treat as read-only."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[str, ...]
    source: str
    note: str = ""


def _idx_file(d: Path, stem: str) -> Path | None:
    """`stem.gz` or `stem` in d, whichever exists."""
    return next((p for p in (d / f"{stem}.gz", d / stem) if p.is_file()), None)


def read_fashion_mnist(d: str | Path) -> RawData:
    """The four Fashion-MNIST IDX files in directory `d` as uint8 (N,1,28,28) images and int64 labels."""
    d = Path(d)
    paths = [_idx_file(d, s) or d / s for s in FASHION_MNIST_FILES]
    xtr, ytr, xte, yte = (read_idx(p, m) for p, m in zip(paths, (IDX_IMAGES, IDX_LABELS) * 2))
    for x, y, p in ((xtr, ytr, paths[0]), (xte, yte, paths[2])):
        if len(x) != len(y):
            raise ValueError(f"{p}: {len(x)} images but {len(y)} labels")
    img = lambda a: torch.from_numpy(a.copy()).unsqueeze(1)  # noqa: E731
    lab = lambda a: torch.from_numpy(a.astype(np.int64))  # noqa: E731
    return RawData(
        img(xtr), lab(ytr), img(xte), lab(yte), tuple(FASHION_MNIST_CLASSES), str(d), "the original Zalando IDX files"
    )


def read_cifar10_npz(path: str | Path) -> RawData:
    """The offline CIFAR-10 .npz (x_* uint8 (N,32,32,3) HWC, y_*, classes) as CHW uint8 tensors."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as d:
        for k in ("x_train", "y_train", "x_test", "y_test"):
            if k not in d.files:
                raise ValueError(f"{path}: missing array {k!r} (has {d.files})")
        xs = [d[k] for k in ("x_train", "x_test")]
        ys = [d[k] for k in ("y_train", "y_test")]
        classes = tuple(str(c) for c in d["classes"]) if "classes" in d.files else tuple(CIFAR10_CLASSES)
        exact = [d[k] for k in ("exact_train", "exact_test") if k in d.files]
    for x, y in zip(xs, ys):
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8 or len(x) != len(y):
            raise ValueError(f"{path}: expected uint8 (N,H,W,3) images with N labels, got {x.shape} {x.dtype}")
    chw = [torch.from_numpy(x).permute(0, 3, 1, 2).contiguous() for x in xs]
    lab = [torch.from_numpy(y.astype(np.int64)) for y in ys]
    return RawData(chw[0], lab[0], chw[1], lab[1], classes, str(path), _npz_note(exact))


def _npz_note(exact: list[np.ndarray]) -> str:
    """The offline copy marks its byte-exact images; the rest are JPEG-decoded, which costs some accuracy."""
    if not exact:
        return "CIFAR-10 .npz of unknown fidelity"
    lossy = 1 - float(np.concatenate(exact).mean())
    if lossy == 0:
        return "CIFAR-10 .npz, every image byte-exact"
    return (
        f"offline CIFAR-10 copy: labels and order exact, {100 * lossy:.0f}% of the images JPEG-decoded (lossy), "
        "so accuracies land somewhat below published ones"
    )


def _unpickle(path: Path) -> dict:
    """Load one CIFAR batch pickle (trusted data: pickle can run code)."""
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def read_cifar10_batches(d: str | Path) -> RawData:
    """torchvision's `cifar-10-batches-py/` (data (N,3072) uint8 rows in CHW order, labels; names from batches.meta)."""
    d = Path(d)

    def load(names: Sequence[str]) -> tuple[Tensor, Tensor]:
        batches = [_unpickle(d / n) for n in names]
        x = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(b["labels"], dtype=np.int64) for b in batches])
        return torch.from_numpy(x), torch.from_numpy(y)

    (xtr, ytr), (xte, yte) = load(CIFAR10_BATCH_FILES[:5]), load(CIFAR10_BATCH_FILES[5:])
    meta = d / "batches.meta"
    classes = tuple(_unpickle(meta)["label_names"]) if meta.is_file() else tuple(CIFAR10_CLASSES)
    return RawData(xtr, ytr, xte, yte, classes, str(d), "torchvision's CIFAR-10 pickles (the original pixels)")


@lru_cache(maxsize=4)
def _read_cached(dataset: str, path: str) -> RawData:
    """Decode once per process and file: later trials only pay for the split."""
    if dataset == "fashion_mnist":
        return read_fashion_mnist(path)
    return read_cifar10_npz(path) if path.endswith(".npz") else read_cifar10_batches(path)


def clear_cache() -> None:
    """Forget decoded datasets (to free memory, or after the files changed)."""
    _read_cached.cache_clear()


# ----------------------------------------------------------------------------------------------- finding the data
class DatasetNotFoundError(FileNotFoundError):
    """No data root holds the dataset; `tried` lists every path looked at, in order."""

    def __init__(self, message: str, tried: Sequence[Path]) -> None:
        super().__init__(message)
        self.tried = list(tried)


def _canonical(dataset: str) -> str:
    """'fashion-mnist', 'fmnist', ... -> 'fashion_mnist'; 'cifar-10' -> 'cifar10'."""
    key = dataset.lower().replace(" ", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown dataset {dataset!r}; known: fashion_mnist, cifar10")
    return _ALIASES[key]


def cache_dir() -> Path:
    """Per-user cache root ($XDG_CACHE_HOME/slowai or ~/.cache/slowai): last place looked, and download target."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "slowai"


def candidate_roots(dataset: str, root: str | Path | None = None) -> list[Path]:
    """Roots searched in order: explicit `root` alone, else $SLOWAI_DATA (os.pathsep-separated), system, cache."""
    if root is not None:
        return [Path(root).expanduser()]
    env = [Path(p).expanduser() for p in os.environ.get("SLOWAI_DATA", "").split(os.pathsep) if p]
    return env + SYSTEM_ROOTS[_canonical(dataset)] + [cache_dir()]


def _find_in_root(dataset: str, root: Path, tried: list[Path]) -> Path | None:
    """The data location under `root` in one of the accepted layouts (see LAYOUTS), appending each path looked at."""
    if dataset == "fashion_mnist":
        for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
            tried.append(d)
            if all(_idx_file(d, s) for s in FASHION_MNIST_FILES):
                return d
        return None
    npzs = [root] if root.suffix == ".npz" else [root / "cifar10" / "cifar10.npz", root / "cifar10.npz"]
    for p in npzs:
        tried.append(p)
        if p.is_file():
            return p
    batches = root / "cifar-10-batches-py"
    tried.append(batches)
    return batches if all((batches / f).is_file() for f in CIFAR10_BATCH_FILES) else None


def _download(dataset: str, target: Path) -> None:
    """Fetch with torchvision into `target`, bounded by a socket timeout so an offline machine fails in seconds."""
    from torchvision import datasets as tvd

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        target.mkdir(parents=True, exist_ok=True)
        (tvd.FashionMNIST if dataset == "fashion_mnist" else tvd.CIFAR10)(str(target), train=True, download=True)
    finally:
        socket.setdefaulttimeout(old)


def _not_found(dataset: str, tried: list[Path], download: str) -> DatasetNotFoundError:
    """One error that says where we looked, what we expected, and how to fix it."""
    lines = [
        f"{dataset} data not found. Paths tried, in order:",
        *(f"  {p}" for p in tried),
        f"Expected layout under a data root: {LAYOUTS[dataset]}.",
        download,
        "Fix: put the data in one of those places, or point at its root with the SLOWAI_DATA environment "
        "variable or the root= argument (--data-root on the command line). Fashion-MNIST on Debian/Ubuntu: "
        "apt-get install dataset-fashion-mnist (installs /usr/share/datasets/fashion-mnist).",
    ]
    return DatasetNotFoundError("\n".join(lines), tried)


def resolve_root(dataset: str, root: str | Path | None = None) -> Path:
    """Where `dataset` actually is: the IDX directory (Fashion-MNIST), the .npz file or batches directory (CIFAR-10).

    Search order: an explicit `root` alone (it must exist: no silent fallback to other copies), else $SLOWAI_DATA,
    then system locations (SYSTEM_ROOTS), then `cache_dir()`; per dataset, so a SLOWAI_DATA holding only CIFAR-10
    still finds the system Fashion-MNIST. If no root holds it, torchvision's download is tried once into the explicit
    root or the cache dir (with DOWNLOAD_TIMEOUT_S); if that fails too, DatasetNotFoundError (a FileNotFoundError)
    lists every path tried and how to fix it.
    """
    dataset = _canonical(dataset)
    roots = candidate_roots(dataset, root)
    if root is not None and not roots[0].exists():
        raise _not_found(dataset, roots, f"The explicitly given data root {roots[0]} does not exist.")
    tried: list[Path] = []
    for r in roots:
        if hit := _find_in_root(dataset, r, tried):
            return hit
    target = roots[0] if root is not None else cache_dir()
    try:
        _download(dataset, target)
    except Exception as e:  # no network, read-only dir, ...: one clear error below, not a urllib traceback
        raise _not_found(dataset, tried, f"Download into {target} failed: {type(e).__name__}: {e}") from None
    if hit := _find_in_root(dataset, target, []):
        return hit
    raise _not_found(dataset, tried, f"Download into {target} finished but left no readable copy there.")


def load_raw(dataset: str, root: str | Path | None = None) -> RawData:
    """Resolve and decode `dataset` (cached per file, so repeated calls in one process are free)."""
    dataset = _canonical(dataset)
    return _read_cached(dataset, str(resolve_root(dataset, root).resolve()))


# ----------------------------------------------------------------------------------------------- datasets
def split_indices(n: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train, valid) indices: one randperm from a private generator seeded with `seed`, independent of global RNG."""
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def _build(
    raw: RawData,
    name: str,
    bs: int,
    device: torch.device | str | None,
    subset: int | None,
    val_size: int,
    split_seed: int,
    augment: bool | Callable[[Tensor], Tensor] | None,
) -> DataLoaders:
    """Split the training set, apply `subset`, and wrap everything in DataLoaders (val_size=0: valid is test)."""
    train_idx, valid_idx = split_indices(len(raw.y_train), val_size, split_seed)
    x_test, y_test = raw.x_test, raw.y_test
    if subset is not None:
        if subset < 1:
            raise ValueError(f"subset must be >= 1 or None, got {subset}")
        k = max(subset // 5, 1)
        train_idx, valid_idx = train_idx[:subset], valid_idx[:k]
        test_idx = torch.randperm(len(y_test), generator=torch.Generator().manual_seed(split_seed))[:k]
        x_test, y_test = x_test[test_idx], y_test[test_idx]
    x_valid, y_valid = (x_test, y_test) if val_size == 0 else (raw.x_train[valid_idx], raw.y_train[valid_idx])
    return DataLoaders.from_tensors(
        raw.x_train[train_idx],
        raw.y_train[train_idx],
        x_valid,
        y_valid,
        x_test,
        y_test,
        bs=bs,
        device=device,
        classes=list(raw.classes),
        augment=_pick_augment(augment),
        name=name,
        source=raw.source,
        note=raw.note,
    )


def fashion_mnist(
    bs: int = 512,
    root: str | Path | None = None,
    device: torch.device | str | None = None,
    subset: int | None = None,
    val_size: int = 10_000,
    augment: bool | Callable[[Tensor], Tensor] = False,
    split_seed: int = 42,
) -> DataLoaders:
    """Fashion-MNIST (1,28,28): train/valid = 50k/10k of the official 60k train set, test = the official 10k.

    The split is a fixed permutation seeded by `split_seed` (independent of the global RNG). `val_size=0` makes
    valid the official test set (as in the seed notebook): then valid and test are the same loader data.
    `subset=k` (quick runs): train keeps the first k items of the split's fixed random order, valid and test the
    first max(k // 5, 1) of theirs (test permuted with `split_seed`), each capped at its size.
    `augment=True` adds the CIFAR crop + horizontal flip (`random_resized_crop_flip`) to train; default off.
    """
    return _build(load_raw("fashion_mnist", root), "fashion_mnist", bs, device, subset, val_size, split_seed, augment)


def cifar10(
    bs: int = 512,
    root: str | Path | None = None,
    device: torch.device | str | None = None,
    subset: int | None = None,
    val_size: int = 5_000,
    augment: bool | Callable[[Tensor], Tensor] = True,
    split_seed: int = 42,
) -> DataLoaders:
    """CIFAR-10 (3,32,32): train/valid = 45k/5k of the 50k train set, test = the official 10k; `source` says which copy.

    Split, `val_size=0` and `subset` work as in `fashion_mnist`. `augment=True` (default) applies, to train only,
    `random_resized_crop_flip` (flip p=0.5, scale (0.8, 1), ratio (0.9, 1.1)); pass a callable to replace it.
    """
    return _build(load_raw("cifar10", root), "cifar10", bs, device, subset, val_size, split_seed, augment)
