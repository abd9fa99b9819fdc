"""Shared fixtures: where the offline CIFAR-10 copy lives (../shared/data beside the checkout)."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def cifar_root() -> Path:
    """The data root holding cifar10/cifar10.npz; skips (with the path) where this checkout has no copy beside it."""
    npz = SHARED_DATA / "cifar10" / "cifar10.npz"
    if not npz.is_file():
        pytest.skip(f"offline CIFAR-10 copy not found at {npz}")
    return SHARED_DATA
