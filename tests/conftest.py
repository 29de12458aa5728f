"""Shared fixtures. Real data comes from $LNEXP_DATA (CI sets it to ../shared/data)."""

import gzip
import importlib.util
import os
from pathlib import Path

import ml_collections
import numpy as np
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


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` as an IDX file: magic ``0x08nn`` (unsigned bytes, n dims), big-endian dims."""
    header = (0x0800 | array.ndim).to_bytes(4, "big") + np.asarray(array.shape, ">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_tiny_mnist(directory: Path, n_train: int = 600, n_test: int = 100, seed: int = 0) -> Path:
    """Writes the four gzipped MNIST IDX files of a tiny learnable data set.

    Each class is a random prototype plus noise, so a small model's loss falls within an epoch.
    lnexp splits the last ``n_train * 5000 // 60000`` training images off as validation.
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (10, 784))
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        noisy = prototypes[labels] + rng.normal(0.0, 80.0, (n, 784))
        images = np.clip(noisy, 0, 255).astype(np.uint8).reshape(n, 28, 28)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            path = directory / f"{prefix}-{kind}-ubyte.gz"
            path.write_bytes(gzip.compress(idx_bytes(array)))
    return directory


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory) -> Path:
    """600 training / 100 test images in MNIST's IDX format (shared, read-only)."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


def load_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """``configs/<name>.py``'s ``get_config()``; ``a__b=v`` sets ``config.a.b = v``."""
    spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        *parents, leaf = key.split("__")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config
