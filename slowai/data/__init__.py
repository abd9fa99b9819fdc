"""Tensor-only data: each dataset is decoded once into uint8 tensors that live on the training device.

Datasets are a registry, like models: `create_dataset("digits", bs=64)`, `list_datasets()`, and
`@register_dataset("name")` on your own factory. Modules: `loader` (TensorLoader, DataLoaders, augmentation),
`splits` (seeded splits and the one `subset` rule), `sources` (finding and reading Fashion-MNIST/CIFAR-10 files),
`folder` (image folders), `registry`, and `builtin` (the registered datasets and `from_tensors`).
"""

from slowai.data.builtin import cifar10, clear_cache, digits, fashion_mnist, from_tensors, image_folder
from slowai.data.folder import load_folder
from slowai.data.loader import (
    DataLoaders,
    TensorLoader,
    augment_setting,
    channel_stats,
    pick_augment,
    random_resized_crop_flip,
)
from slowai.data.registry import (
    UnknownDatasetError,
    create_dataset,
    dataset_factory,
    dataset_options,
    dataset_settings,
    list_datasets,
    register_dataset,
)
from slowai.data.sources import (
    CIFAR10_BATCH_FILES,
    CIFAR10_CLASSES,
    DOWNLOAD_TIMEOUT_S,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    IDX_IMAGES,
    IDX_LABELS,
    LAYOUTS,
    SYSTEM_ROOTS,
    DatasetNotFoundError,
    RawData,
    cache_dir,
    candidate_roots,
    load_raw,
    read_cifar10_batches,
    read_cifar10_npz,
    read_fashion_mnist,
    read_idx,
    resolve_root,
)
from slowai.data.splits import split_indices, split_pairs, subset_sizes

__all__ = [
    "CIFAR10_BATCH_FILES",
    "CIFAR10_CLASSES",
    "DOWNLOAD_TIMEOUT_S",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "IDX_IMAGES",
    "IDX_LABELS",
    "LAYOUTS",
    "SYSTEM_ROOTS",
    "DataLoaders",
    "DatasetNotFoundError",
    "RawData",
    "TensorLoader",
    "UnknownDatasetError",
    "augment_setting",
    "cache_dir",
    "candidate_roots",
    "channel_stats",
    "cifar10",
    "clear_cache",
    "create_dataset",
    "dataset_factory",
    "dataset_options",
    "dataset_settings",
    "digits",
    "fashion_mnist",
    "from_tensors",
    "image_folder",
    "list_datasets",
    "load_folder",
    "load_raw",
    "pick_augment",
    "random_resized_crop_flip",
    "read_cifar10_batches",
    "read_cifar10_npz",
    "read_fashion_mnist",
    "read_idx",
    "register_dataset",
    "resolve_root",
    "split_indices",
    "split_pairs",
    "subset_sizes",
]
