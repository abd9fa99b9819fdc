"""Fashion-MNIST and CIFAR-10 files: finding them (`resolve_root`), decoding them once, and caching the result.

Files are read with gzip/numpy/pickle, never through torchvision datasets, and the decoded arrays are cached
in-process, so building DataLoaders for the next trial costs only the split.
"""

from __future__ import annotations

import gzip
import math
import os
import pickle
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from slowai.data.registry import canonical_name

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
DOWNLOAD_TIMEOUT_S = 10.0
IDX_IMAGES, IDX_LABELS = 2051, 2049


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


def read_cifar10(path: str | Path) -> RawData:
    """CIFAR-10 from whichever form `resolve_root` found: the .npz file or the batches directory."""
    return read_cifar10_npz(path) if str(path).endswith(".npz") else read_cifar10_batches(path)


READERS: dict[str, Callable[[str | Path], RawData]] = {"fashion_mnist": read_fashion_mnist, "cifar10": read_cifar10}


@lru_cache(maxsize=4)
def read_cached(dataset: str, path: str) -> RawData:
    """Decode once per process and file: later trials only pay for the split."""
    return READERS[_canonical(dataset)](path)


# ----------------------------------------------------------------------------------------------- finding the data
class DatasetNotFoundError(FileNotFoundError):
    """No data root holds the dataset; `tried` lists every path looked at, in order."""

    def __init__(self, message: str, tried: Sequence[Path]) -> None:
        super().__init__(message)
        self.tried = list(tried)


def _canonical(dataset: str) -> str:
    """'fashion-mnist', 'fmnist', ... -> 'fashion_mnist'; 'cifar-10' -> 'cifar10'; only datasets read from files."""
    name = canonical_name(dataset)  # UnknownDatasetError (one line, every registered name) for anything else
    if name not in LAYOUTS:
        raise ValueError(f"dataset {name!r} is not read from data files; resolve_root knows {', '.join(LAYOUTS)}")
    return name


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


def _find_fashion_mnist(root: Path, tried: list[Path]) -> Path | None:
    """The directory under `root` holding the four IDX files, appending each path looked at."""
    for d in (root, root / "fashion-mnist", root / "FashionMNIST" / "raw"):
        tried.append(d)
        if all(_idx_file(d, s) for s in FASHION_MNIST_FILES):
            return d
    return None


def _find_cifar10(root: Path, tried: list[Path]) -> Path | None:
    """The .npz file or batches directory under `root` (or `root` itself, an .npz), appending each path looked at."""
    npzs = [root] if root.suffix == ".npz" else [root / "cifar10" / "cifar10.npz", root / "cifar10.npz"]
    for p in npzs:
        tried.append(p)
        if p.is_file():
            return p
    batches = root / "cifar-10-batches-py"
    tried.append(batches)
    return batches if all((batches / f).is_file() for f in CIFAR10_BATCH_FILES) else None


def _find_in_root(dataset: str, root: Path, tried: list[Path]) -> Path | None:
    """The data location under `root` in one of the accepted layouts (see LAYOUTS), appending each path looked at."""
    return {"fashion_mnist": _find_fashion_mnist, "cifar10": _find_cifar10}[dataset](root, tried)


def _download(dataset: str, target: Path) -> None:
    """Fetch with torchvision into `target`, bounded by a socket timeout so an offline machine fails in seconds."""
    from torchvision import datasets as tvd

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        target.mkdir(parents=True, exist_ok=True)
        {"fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[dataset](str(target), train=True, download=True)
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
    return read_cached(dataset, str(resolve_root(dataset, root).resolve()))
