"""The dataset registry: named factories returning DataLoaders, one split/subset rule, and the built-in datasets."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slowai.data import (
    DataLoaders,
    UnknownDatasetError,
    cifar10,
    create_dataset,
    dataset_factory,
    dataset_settings,
    digits,
    fashion_mnist,
    from_tensors,
    image_folder,
    list_datasets,
    load_folder,
    register_dataset,
    registry,
    resolve_root,
    subset_sizes,
)

BUILTINS = ["cifar10", "digits", "fashion_mnist", "image_folder"]


@pytest.fixture
def scratch_registry(monkeypatch):
    """Registrations made by a test vanish after it, so the built-ins stay the only global names."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def numbered(n: int, shape=(1, 4, 4)) -> torch.Tensor:
    """n uint8 images whose pixels all equal their index mod 256, so a split can be traced back to its sources."""
    return (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, *shape).contiguous()


def ids(x: torch.Tensor) -> set[int]:
    return set(x[:, 0, 0, 0].tolist())


def write_png(path: Path, value: int | tuple[int, int, int], mode: str, size=(12, 10)) -> None:
    """A flat image (PIL size is (width, height)) in its class folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


# ----------------------------------------------------------------------------------------------- the registry
def test_the_builtins_are_registered_with_one_line_descriptions():
    names = list_datasets()
    assert list(names) == BUILTINS
    assert all(desc and "\n" not in desc for desc in names.values())
    assert dataset_factory("digits") is digits and dataset_factory("image_folder") is image_folder


def test_old_spellings_are_aliases_of_the_registered_names():
    assert dataset_factory("fmnist") is dataset_factory("Fashion-MNIST") is fashion_mnist
    assert dataset_factory("cifar-10") is dataset_factory("CIFAR10") is cifar10


def test_an_unknown_name_is_one_line_naming_every_valid_one():
    with pytest.raises(UnknownDatasetError) as e:
        create_dataset("mnist")
    msg = str(e.value)
    assert msg.startswith("unknown dataset 'mnist'; registered: cifar10, digits, fashion_mnist, image_folder")
    assert "fmnist" in msg and "\n" not in msg and isinstance(e.value, ValueError)


def test_an_unknown_name_never_falls_into_a_file_dataset_branch(tmp_path):
    with pytest.raises(UnknownDatasetError):
        resolve_root("svhn", tmp_path)
    with pytest.raises(ValueError, match="not read from data files"):
        resolve_root("digits", tmp_path)


def test_settings_come_from_the_factory_signature():
    assert dataset_settings("digits") == ["bs", "device", "subset", "root", "valid_pct", "split_seed", "augment"]
    assert {"root", "size", "grayscale", "valid_pct"} <= set(dataset_settings("image_folder"))
    with pytest.raises(ValueError, match="dataset 'digits' has no setting 'val_size'; settings: bs, device"):
        create_dataset("digits", val_size=100)


def test_your_own_dataset_registers_with_the_decorator(scratch_registry):
    @register_dataset("stripes", "vertical stripes, 2 classes")
    def stripes(bs=16, device=None, subset=None, root=None, width: int = 4) -> DataLoaders:
        y = torch.arange(100) % 2
        x = torch.zeros(100, 1, 8, 8, dtype=torch.uint8)
        x[y == 1, :, :, ::width] = 255
        return from_tensors(x, y, bs=bs, device=device, subset=subset, classes=["plain", "striped"], name="stripes")

    dls = create_dataset("stripes", bs=8, device="cpu", subset=10)
    assert (dls.name, dls.classes, dls.input_shape) == ("stripes", ["plain", "striped"], (1, 8, 8))
    assert (dls.train.n, dls.valid.n, dls.test.n, dls.train.bs) == (10, 2, 2, 8)
    assert list_datasets()["stripes"] == "vertical stripes, 2 classes"
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("stripes")(stripes)


# ----------------------------------------------------------------------------------------------- splits and subset
def test_the_subset_rule_keeps_train_and_a_fifth_for_valid_and_test():
    assert subset_sizes(50_000, 10_000, 10_000, None) == (50_000, 10_000, 10_000)
    assert subset_sizes(50_000, 10_000, 10_000, 1_000) == (1_000, 200, 200)
    assert subset_sizes(50_000, 10_000, 10_000, 3) == (3, 1, 1)  # valid/test never empty
    assert subset_sizes(64, 16, 20, 1_000) == (64, 16, 20)  # capped at what each split has
    with pytest.raises(ValueError, match="subset must be >= 1"):
        subset_sizes(10, 2, 2, 0)


def test_from_tensors_carves_test_then_valid_disjointly_from_a_seeded_permutation():
    dls = from_tensors(numbered(100), torch.arange(100) % 10, bs=16, device="cpu")
    assert (dls.train.n, dls.valid.n, dls.test.n) == (64, 16, 20)  # test 20% of 100, valid 20% of the other 80
    parts = [ids(dl.x) for dl in (dls.train, dls.valid, dls.test)]
    assert set().union(*parts) == set(range(100)) and sum(map(len, parts)) == 100
    again = from_tensors(numbered(100), torch.arange(100) % 10, device="cpu")
    other = from_tensors(numbered(100), torch.arange(100) % 10, device="cpu", split_seed=7)
    assert torch.equal(again.test.x, dls.test.x) and not torch.equal(other.test.x, dls.test.x)


def test_from_tensors_keeps_a_given_test_set_and_applies_the_subset_rule():
    x, y = numbered(100), torch.arange(100) % 10
    dls = from_tensors(x[:80], y[:80], x[80:], y[80:], valid_size=10, device="cpu")
    assert (dls.train.n, dls.valid.n, dls.test.n) == (70, 10, 20) and torch.equal(dls.test.x, x[80:])
    small = from_tensors(x[:80], y[:80], x[80:], y[80:], valid_size=10, device="cpu", subset=30)
    assert (small.train.n, small.valid.n, small.test.n) == (30, 6, 6) and ids(small.test.x) <= set(range(80, 100))
    assert small.settings == {"valid_size": 10, "split_seed": 42, "augment": False, "test": "given"}


def test_from_tensors_refuses_splits_it_cannot_make():
    with pytest.raises(ValueError, match="valid_size must be in"):
        from_tensors(numbered(10), torch.zeros(10), valid_size=10, device="cpu")
    with pytest.raises(ValueError, match=r"\(N,C,H,W\)"):
        from_tensors(torch.zeros(10, 4, 4), torch.zeros(10), device="cpu")


# ----------------------------------------------------------------------------------------------- digits
def test_digits_are_1797_real_8x8_images_in_a_fixed_split():
    dls = digits(device="cpu")
    assert (dls.train.n, dls.valid.n, dls.test.n) == (1_150, 288, 359)  # test 20%, valid 20% of the rest
    assert (dls.input_shape, dls.classes, dls.train.bs) == ((1, 8, 8), [str(i) for i in range(10)], 64)
    assert dls.train.x.dtype == torch.uint8 and dls.train.x.max() == 255  # 16 -> round(16 * 255 / 16)
    assert set(torch.cat([dls.train.y, dls.valid.y, dls.test.y]).unique().tolist()) == set(range(10))
    assert "load_digits" in dls.source and "4-bit" in dls.note
    assert dls.settings == {"valid_pct": 0.2, "split_seed": 42, "augment": False}


def test_digits_split_is_deterministic_and_honours_subset():
    a, b = digits(device="cpu", subset=100), digits(device="cpu", subset=100)
    assert (a.train.n, a.valid.n, a.test.n) == (100, 20, 20)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(digits(device="cpu", subset=100, split_seed=1).train.x, a.train.x)
    assert torch.equal(a.train.x, digits(device="cpu").train.x[:100])  # a subset is a prefix of the full split


# ----------------------------------------------------------------------------------------------- image folders
def test_a_flat_grayscale_folder_is_split_three_ways_with_folder_names_as_classes(tmp_path):
    for i in range(10):
        write_png(tmp_path / "cat" / f"{i}.png", 40, "L")
        write_png(tmp_path / "dog" / f"{i}.png", 200, "L")
    dls = image_folder(tmp_path, size=8, bs=4, device="cpu")
    assert (dls.classes, dls.input_shape, dls.train.x.dtype) == (["cat", "dog"], (1, 8, 8), torch.uint8)
    assert (dls.train.n, dls.valid.n, dls.test.n) == (13, 3, 4)  # test 20% of 20, valid 20% of the other 16
    for dl in (dls.train, dls.valid, dls.test):  # every image carries its own folder's label
        assert torch.equal(dl.x[:, 0, 0, 0], torch.where(dl.y == 0, 40, 200).to(torch.uint8))
    assert dls.source == str(tmp_path.resolve()) and "decoded from 20 image files" in dls.note
    assert "resized to 8×8" in dls.note and "valid and test carved from train" in dls.note
    assert dls.settings == {"size": [8, 8], "grayscale": True, "valid_pct": 0.2, "split_seed": 42, "augment": False}


def test_train_valid_test_subfolders_are_used_as_given(tmp_path):
    colours = {"blue": (0, 0, 255), "green": (0, 255, 0), "red": (255, 0, 0)}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for name, rgb in colours.items():
            for i in range(n):
                write_png(tmp_path / split / name / f"{i}.png", rgb, "RGB")
    dls = create_dataset("image_folder", root=tmp_path, size=(6, 4), device="cpu")
    assert (dls.classes, dls.input_shape) == (["blue", "green", "red"], (3, 6, 4))
    assert (dls.train.n, dls.valid.n, dls.test.n) == (18, 6, 9) and "carved" not in dls.note
    assert torch.equal(dls.test.x[:, :, 0, 0], torch.tensor([colours[dls.classes[c]] for c in dls.test.y.tolist()]))


def test_a_missing_test_folder_is_carved_from_train_and_grayscale_can_be_forced(tmp_path):
    for name, rgb in (("a", (255, 0, 0)), ("b", (0, 0, 255))):
        for i in range(10):
            write_png(tmp_path / "train" / name / f"{i}.png", rgb, "RGB")
    dls = image_folder(tmp_path, size=4, grayscale=True, device="cpu")
    assert (dls.input_shape, dls.train.n, dls.valid.n, dls.test.n) == ((1, 4, 4), 13, 3, 4)
    assert dls.settings["grayscale"] is True and "valid and test carved from train" in dls.note


def test_a_folder_is_decoded_once_until_its_files_change(tmp_path):
    for i in range(3):
        write_png(tmp_path / "x" / f"{i}.png", 0, "L", size=(4, 4))
        write_png(tmp_path / "y" / f"{i}.png", 255, "L", size=(4, 4))
    first = load_folder(tmp_path, size=4)
    assert load_folder(tmp_path, size=4) is first and "all 4×4" in first.note
    write_png(tmp_path / "y" / "3.png", 255, "L", size=(4, 4))
    assert len(load_folder(tmp_path, size=4).splits["train"][1]) == 7


def test_16_bit_grays_are_scaled_to_8_bits_not_clipped(tmp_path):
    for name, value in (("dark", 257 * 10), ("light", 257 * 250)):
        (tmp_path / name).mkdir()
        Image.fromarray(np.full((4, 4), value, dtype=np.uint16)).save(tmp_path / name / "0.png")
    data = load_folder(tmp_path, size=4)
    x, y = data.splits["train"]
    assert data.grayscale and x.shape == (2, 1, 4, 4) and x[:, 0, 0, 0].tolist() == [10, 250]


def test_image_folder_errors_name_the_path_and_the_expected_layout(tmp_path):
    with pytest.raises(ValueError, match="image_folder needs root=.*expected root/<class>/<image>"):
        create_dataset("image_folder", device="cpu")
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'missing'} does not exist.*root/<class>/<image>"):
        image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"no images found in {tmp_path / 'empty'}.*root/<class>"):
        image_folder(tmp_path / "empty")


# ----------------------------------------------------------------------------------------------- settings
def test_the_file_datasets_record_the_settings_that_define_them(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=x, y_train=np.arange(20) % 10, x_test=x[:10], y_test=np.arange(10))
    dls = cifar10(root=tmp_path, val_size=5, bs=4, device="cpu")
    assert dls.settings == {"val_size": 5, "split_seed": 42, "augment": True}
    assert (dls.train.n, dls.valid.n, dls.test.n) == (15, 5, 10)
