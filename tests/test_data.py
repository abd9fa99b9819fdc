"""slowai.data: datasets decoded once into device tensors, fixed seeded splits, batched on-device augmentation."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from slowai import data as D
from slowai.data import DataLoaders, TensorLoader, random_resized_crop_flip, sources
from slowai.utils import set_seed

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_NPZ = SHARED_DATA / "cifar10" / "cifar10.npz"
FMNIST_SYSTEM = Path("/usr/share/datasets/fashion-mnist")

needs_cifar = pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason=f"offline CIFAR-10 copy not found at {CIFAR_NPZ}")
needs_fmnist = pytest.mark.skipif(
    not (FMNIST_SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test sees the caller's SLOWAI_DATA or user cache."""
    monkeypatch.delenv("SLOWAI_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def fmnist() -> DataLoaders:
    return D.fashion_mnist(root=FMNIST_SYSTEM, device="cpu")


@pytest.fixture(scope="module")
def cifar() -> DataLoaders:
    return D.cifar10(root=SHARED_DATA, device="cpu")


def write_idx(path: Path, arr: np.ndarray, magic: int) -> Path:
    """A tiny IDX file (gzip-compressed when the name ends in .gz)."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_fake_fmnist(d: Path, n: int = 6) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        write_idx(d / f"{split}-images-idx3-ubyte", np.zeros((n, 28, 28)), D.IDX_IMAGES)
        write_idx(d / f"{split}-labels-idx1-ubyte", np.arange(n) % 10, D.IDX_LABELS)
    return d


def write_fake_cifar_npz(path: Path, n: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    y = np.arange(n) % 10
    np.savez(path, x_train=x, y_train=y, x_test=x[:10], y_test=y[:10], classes=np.array(D.CIFAR10_CLASSES))
    return path


# ----------------------------------------------------------------------------------------------- Fashion-MNIST
@needs_fmnist
def test_fashion_mnist_batches_are_normalized_float_images_with_int64_labels(fmnist):
    xb, yb = next(iter(fmnist.train))
    assert xb.shape == (512, 1, 28, 28) and xb.dtype == torch.float32
    assert yb.shape == (512,) and yb.dtype == torch.int64
    assert abs(xb.mean().item()) < 0.1 and abs(xb.std().item() - 1) < 0.1
    assert (fmnist.name, fmnist.input_shape, fmnist.n_classes) == ("fashion_mnist", (1, 28, 28), 10)
    assert fmnist.classes[0] == "T-shirt/top" and fmnist.classes[9] == "Ankle boot"
    assert fmnist.source == str(FMNIST_SYSTEM) and fmnist.device == torch.device("cpu")


@needs_fmnist
def test_fashion_mnist_is_normalized_with_the_training_splits_stats(fmnist):
    assert fmnist.mean == pytest.approx((0.286,), abs=2e-3) and fmnist.std == pytest.approx((0.353,), abs=2e-3)
    whole = TensorLoader(fmnist.train.x, fmnist.train.y, bs=fmnist.train.n, mean=fmnist.mean, std=fmnist.std)
    xb, _ = whole.one_batch()
    assert xb.mean().item() == pytest.approx(0, abs=1e-4) and xb.std().item() == pytest.approx(1, abs=1e-4)


@needs_fmnist
def test_fashion_mnist_default_split_is_50k_10k_plus_official_10k_test(fmnist):
    assert (fmnist.train.n, fmnist.valid.n, fmnist.test.n) == (50_000, 10_000, 10_000)
    assert len(fmnist.train) == 98 and len(fmnist.valid) == 20  # ceil(50_000 / 512), ceil(10_000 / 512)
    assert torch.equal(fmnist.test.y, D.load_raw("fashion_mnist").y_test)  # official test set, canonical order


@needs_fmnist
def test_val_size_0_validates_on_the_official_test_set():
    dls = D.fashion_mnist(device="cpu", val_size=0)
    assert (dls.train.n, dls.valid.n) == (60_000, 10_000)
    assert dls.valid.x is dls.test.x and dls.valid.y is dls.test.y


@needs_fmnist
def test_subset_keeps_a_prefix_of_each_splits_fixed_order(fmnist):
    small = D.fashion_mnist(device="cpu", subset=1000)
    assert (small.train.n, small.valid.n, small.test.n) == (1000, 200, 200)  # valid/test: max(1000 // 5, 1)
    assert torch.equal(small.train.x, fmnist.train.x[:1000]) and torch.equal(small.valid.y, fmnist.valid.y[:200])
    tiny = D.fashion_mnist(device="cpu", subset=3)
    assert (tiny.train.n, tiny.valid.n, tiny.test.n) == (3, 1, 1)


@needs_fmnist
def test_split_depends_only_on_split_seed_not_on_the_global_rng(fmnist):
    torch.manual_seed(123)
    again = D.fashion_mnist(device="cpu", subset=500)
    assert torch.equal(again.train.x, fmnist.train.x[:500])
    other = D.fashion_mnist(device="cpu", subset=500, split_seed=7)
    assert not torch.equal(other.train.x, again.train.x)


def test_split_indices_are_disjoint_and_cover_the_training_set():
    train, valid = D.split_indices(100, 20, seed=42)
    assert (len(train), len(valid)) == (80, 20)
    assert torch.equal(torch.cat([train, valid]).sort().values, torch.arange(100))
    assert all(torch.equal(a, b) for a, b in zip(D.split_indices(100, 20, seed=42), (train, valid)))
    with pytest.raises(ValueError, match="val_size"):
        D.split_indices(100, 100, seed=0)


@needs_fmnist
def test_set_seed_repeats_the_shuffled_first_batch(fmnist):
    set_seed(0)
    x1, y1 = next(iter(fmnist.train))
    set_seed(0)
    x2, y2 = next(iter(fmnist.train))
    set_seed(1)
    x3, _ = next(iter(fmnist.train))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)


@needs_fmnist
def test_one_batch_is_the_first_stored_items_and_consumes_no_random_numbers(fmnist):
    state = torch.get_rng_state()
    xb, yb = fmnist.one_batch("valid")
    assert torch.equal(torch.get_rng_state(), state)
    assert xb.shape == (512, 1, 28, 28) and torch.equal(yb, fmnist.valid.y[:512])
    with pytest.raises(ValueError, match="no 'nope' split"):
        fmnist.one_batch("nope")


# ----------------------------------------------------------------------------------------------- TensorLoader
def test_a_trailing_single_item_training_batch_is_dropped_for_batchnorm():
    x, y = torch.zeros(1025, 1, 2, 2, dtype=torch.uint8), torch.arange(1025)
    assert len(TensorLoader(x, y, bs=512, shuffle=True)) == 2  # 512 + 512, the lone 1025th item waits
    assert len(TensorLoader(x, y, bs=512)) == 3  # evaluation keeps every item
    assert len(TensorLoader(x, y, bs=512, drop_last=True)) == 2
    assert len(TensorLoader(x[:1], y[:1], bs=512, shuffle=True)) == 1  # unless it is the only batch


def test_a_shuffled_epoch_visits_every_item_once():
    x, y = torch.zeros(1000, 1, 2, 2, dtype=torch.uint8), torch.arange(1000)
    seen = torch.cat([yb for _, yb in TensorLoader(x, y, bs=64, shuffle=True)])
    assert not torch.equal(seen, y) and torch.equal(seen.sort().values, y)


def test_uint8_is_scaled_then_normalized_and_float_is_left_alone_without_stats():
    x = torch.full((4, 2, 3, 3), 255, dtype=torch.uint8)
    xb, _ = next(iter(TensorLoader(x, torch.zeros(4), bs=4, mean=(0.5, 1.0), std=(0.25, 1.0))))
    assert torch.allclose(xb[:, 0], torch.tensor(2.0)) and torch.allclose(xb[:, 1], torch.tensor(0.0))
    xf = torch.randn(4, 2, 3, 3)
    assert torch.equal(next(iter(TensorLoader(xf, torch.zeros(4), bs=4)))[0], xf)
    copy = xf.clone()
    next(iter(TensorLoader(xf, torch.zeros(4), bs=4, mean=(1, 1), std=(2, 2))))
    assert torch.equal(xf, copy)  # normalizing never writes into the stored tensor


def test_from_tensors_uses_train_stats_and_augments_only_train():
    calls = []

    def aug(xb):
        calls.append(xb.shape)
        return xb

    x = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    y = torch.arange(40) % 4
    dls = DataLoaders.from_tensors(x[:30], y[:30], x[30:], y[30:], bs=8, device="cpu", augment=aug)
    assert dls.mean == pytest.approx(tuple((x[:30].float() / 255).mean((0, 2, 3)).tolist()))
    assert (dls.classes, dls.n_classes, dls.input_shape, dls.test) == (["0", "1", "2", "3"], 4, (3, 8, 8), None)
    list(dls.valid)
    assert calls == []
    list(dls.train)
    assert len(calls) == len(dls.train) == 4


# ----------------------------------------------------------------------------------------------- augmentation
def test_crop_flip_keeps_shape_and_changes_pixels():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    out = random_resized_crop_flip(x)
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.allclose(out, x, atol=1e-2)


def test_crop_flip_with_degenerate_parameters_is_identity_or_mirror():
    x = torch.rand(16, 3, 32, 32)
    same = random_resized_crop_flip(x, scale=(1, 1), ratio=(1, 1), flip=False)
    assert torch.allclose(same, x, atol=1e-5)
    flipped = random_resized_crop_flip(x, scale=(1, 1), ratio=(1, 1), flip=True)
    is_id = (flipped - x).abs().amax((1, 2, 3)) < 1e-5
    is_mirror = (flipped - x.flip(-1)).abs().amax((1, 2, 3)) < 1e-5
    assert (is_id | is_mirror).all() and is_id.any() and is_mirror.any()


def test_crops_stay_inside_the_image_so_no_padding_leaks_in():
    x = torch.full((64, 1, 28, 28), 3.0)
    assert torch.allclose(random_resized_crop_flip(x, scale=(0.5, 1.0), ratio=(0.5, 2.0)), x)


# ----------------------------------------------------------------------------------------------- CIFAR-10
@needs_cifar
def test_cifar10_offline_copy_splits_45k_5k_10k_with_per_channel_normalization(cifar):
    assert (cifar.train.n, cifar.valid.n, cifar.test.n) == (45_000, 5_000, 10_000)
    assert cifar.source == str(CIFAR_NPZ.resolve()) and cifar.classes[0] == "airplane"
    assert "90% of the images JPEG-decoded" in cifar.note  # the offline copy's 6,102 of 60,000 exact images
    assert cifar.mean == pytest.approx((0.4913, 0.4821, 0.4465), abs=2e-3)
    assert cifar.train.augment is D.random_resized_crop_flip and cifar.valid.augment is None
    xb, yb = cifar.one_batch()
    assert xb.shape == (512, 3, 32, 32) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert xb.mean((0, 2, 3)).abs().max() < 0.15 and (xb.std((0, 2, 3)) - 1).abs().max() < 0.15


@needs_cifar
def test_cifar10_augmented_batches_repeat_under_set_seed(cifar):
    set_seed(3)
    x1, _ = next(iter(cifar.train))
    set_seed(3)
    x2, _ = next(iter(cifar.train))
    assert torch.equal(x1, x2)


@needs_cifar
def test_cifar10_subset():
    dls = D.cifar10(root=SHARED_DATA, device="cpu", subset=100)
    assert (dls.train.n, dls.valid.n, dls.test.n) == (100, 20, 20)


def write_cifar_batches(root: Path, per_batch: int = 2) -> Path:
    """A miniature torchvision cifar-10-batches-py/: data rows are 3072 uint8 values in CHW order."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i, name in enumerate(D.CIFAR10_BATCH_FILES):
        data = np.full((per_batch, 3072), i, dtype=np.uint8)
        data[:, 1024:2048] = 100  # the green plane
        with open(d / name, "wb") as f:
            pickle.dump({"data": data, "labels": [i] * per_batch}, f)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return d


def test_torchvision_batches_layout_is_read(tmp_path):
    d = write_cifar_batches(tmp_path)
    raw = D.read_cifar10_batches(d)
    assert raw.x_train.shape == (10, 3, 32, 32) and raw.x_test.shape == (2, 3, 32, 32)
    assert raw.y_train.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4] and raw.y_test.tolist() == [5, 5]
    assert (raw.x_train[:, 1] == 100).all() and (raw.x_train[2, 0] == 1).all()
    dls = D.cifar10(root=tmp_path, device="cpu", val_size=2, bs=4)
    assert (dls.train.n, dls.valid.n, dls.test.n, dls.classes[1]) == (8, 2, 2, "class1")
    assert dls.source == str(d.resolve()) and "original pixels" in dls.note


def test_npz_note_says_how_much_of_the_copy_is_lossy(tmp_path):
    x = np.zeros((4, 32, 32, 3), np.uint8)
    y = np.arange(4)
    exact = np.array([True, False, False, False])
    np.savez(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x, y_test=y, exact_train=exact, exact_test=exact)
    assert "75% of the images JPEG-decoded" in D.read_cifar10_npz(tmp_path / "c.npz").note
    np.savez(tmp_path / "e.npz", x_train=x, y_train=y, x_test=x, y_test=y, exact_train=~exact | exact)
    assert "every image byte-exact" in D.read_cifar10_npz(tmp_path / "e.npz").note


# ----------------------------------------------------------------------------------------------- readers
def test_idx_reader_reads_gz_and_plain_and_rejects_bad_magic_or_length(tmp_path):
    labels = np.arange(7)
    for name in ("l.gz", "l"):
        assert D.read_idx(write_idx(tmp_path / name, labels, D.IDX_LABELS)).tolist() == labels.tolist()
    with pytest.raises(ValueError, match="bad IDX magic number 1234"):
        D.read_idx(write_idx(tmp_path / "bad", labels, 1234))
    with pytest.raises(ValueError, match="expected 2051"):
        D.read_idx(tmp_path / "l", expect_magic=D.IDX_IMAGES)
    (tmp_path / "short").write_bytes((tmp_path / "l").read_bytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        D.read_idx(tmp_path / "short")
    (tmp_path / "broken.gz").write_bytes(b"\x1f\x8bnot gzip")
    with pytest.raises(ValueError, match="corrupt"):
        D.read_idx(tmp_path / "broken.gz")


# ----------------------------------------------------------------------------------------------- finding the data
@needs_fmnist
def test_slowai_data_is_searched_per_dataset_before_system_locations(tmp_path, monkeypatch):
    npz = write_fake_cifar_npz(tmp_path / "mine" / "cifar10.npz")
    monkeypatch.setenv("SLOWAI_DATA", str(tmp_path / "mine"))
    assert D.resolve_root("cifar10") == npz
    assert D.resolve_root("fashion_mnist") == FMNIST_SYSTEM  # SLOWAI_DATA has no Fashion-MNIST: system copy


def test_accepted_layouts_under_a_root(tmp_path):
    write_fake_fmnist(tmp_path / "FashionMNIST" / "raw")
    npz = write_fake_cifar_npz(tmp_path / "cifar10" / "cifar10.npz")
    assert D.resolve_root("fashion-mnist", tmp_path) == tmp_path / "FashionMNIST" / "raw"
    assert D.resolve_root("cifar10", tmp_path) == npz
    assert D.resolve_root("cifar10", npz) == npz  # pointing straight at the file works too
    assert D.load_raw("fmnist", tmp_path).x_train.shape == (6, 1, 28, 28)


def test_an_explicit_root_that_does_not_exist_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_download", lambda *a: pytest.fail("must not try to download"))
    with pytest.raises(FileNotFoundError, match="does not exist") as e:
        D.cifar10(root=tmp_path / "missing")
    assert str(tmp_path / "missing") in str(e.value)


def test_no_copy_anywhere_gives_one_error_listing_every_path_tried(tmp_path, monkeypatch):
    def offline(dataset, target):
        raise OSError("network unreachable")

    monkeypatch.setattr(sources, "_download", offline)
    with pytest.raises(D.DatasetNotFoundError) as e:
        D.resolve_root("cifar10", tmp_path)  # explicit root: searched alone, no fallback
    msg = str(e.value)
    assert e.value.tried == [tmp_path / "cifar10" / "cifar10.npz", tmp_path / "cifar10.npz",
                             tmp_path / "cifar-10-batches-py"]  # fmt: skip
    assert all(str(p) in msg for p in e.value.tried)
    assert "network unreachable" in msg and "SLOWAI_DATA" in msg and "--data-root" in msg

    monkeypatch.setenv("SLOWAI_DATA", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError) as e:
        D.resolve_root("cifar10")
    for p in ("/usr/share/datasets/cifar10", str(tmp_path / "empty"), str(tmp_path / "xdg-cache" / "slowai")):
        assert p in str(e.value)
