"""Shared fixtures. Real data comes from $LNEXP_DATA (CI sets it to ../shared/data)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Where the real data sets live: $LNEXP_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("LNEXP_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def mnist_dir() -> Path:
    """The real MNIST IDX directory; skips the test when it is not there."""
    path = data_root() / "mnist"
    if not (path / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {path} (set LNEXP_DATA to the data directory)")
    return path
