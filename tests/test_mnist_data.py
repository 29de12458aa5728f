"""Tests for lnexp.data.mnist: IDX parsing, the train/valid/test split, errors and the TFDS source.

The data cache (the default source) and its downloads are tested in tests/test_download.py.
"""

from __future__ import annotations

import gzip
import socket
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from lnexp.data import mnist
from lnexp.data.mnist import SPLIT_SIZES, load_mnist, pixels_to_unit_interval
from lnexp.errors import UserError

N_TRAIN_FILE = 120  # -> valid = 120 * 5000 // 60000 = 10, train = 110
N_TEST_FILE = 20
N_VALID = 10


TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encodes a uint8 array as an IDX file (magic 0x08nn, big-endian int32 dims)."""
    if magic is None:
        magic = 0x0800 | array.ndim
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, dtype=">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, *, compress: bool, magic: int | None = None) -> Path:
    """Writes ``array`` as an IDX file at ``path`` (``.gz`` appended if compressed); returns it."""
    data = idx_bytes(array, magic)
    if compress:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """Random tiny MNIST-shaped arrays, keyed by IDX file stem."""
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (N_TRAIN_FILE, 28, 28), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, (N_TRAIN_FILE,), dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (N_TEST_FILE, 28, 28), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, (N_TEST_FILE,), dtype=np.uint8),
    }


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def tiny_mnist(request, tmp_path: Path) -> tuple[Path, dict[str, np.ndarray], bool]:
    """A directory with four tiny IDX files, plain or gzipped; returns (dir, arrays, compressed)."""
    arrays = make_arrays()
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array, compress=request.param)
    return tmp_path, arrays, request.param


def file_path(directory: Path, stem: str, compressed: bool) -> Path:
    return directory / (stem + ".gz" if compressed else stem)


def test_load_shapes_dtypes_and_values(tiny_mnist):
    directory, arrays, _ = tiny_mnist
    data = load_mnist(str(directory))

    assert set(data) == {"train", "valid", "test"}
    sizes = {"train": N_TRAIN_FILE - N_VALID, "valid": N_VALID, "test": N_TEST_FILE}
    for split, n in sizes.items():
        assert set(data[split]) == {"image", "label"}
        assert data[split]["image"].shape == (n, 784)
        assert data[split]["image"].dtype == np.uint8
        assert data[split]["label"].shape == (n,)
        assert data[split]["label"].dtype == np.int32

    train_images = arrays[TRAIN_IMAGES].reshape(N_TRAIN_FILE, 784)
    train_labels = arrays[TRAIN_LABELS]
    # train = first part of the training file, valid = its last part.
    np.testing.assert_array_equal(data["train"]["image"], train_images[:-N_VALID])
    np.testing.assert_array_equal(data["train"]["label"], train_labels[:-N_VALID])
    np.testing.assert_array_equal(data["valid"]["image"], train_images[-N_VALID:])
    np.testing.assert_array_equal(data["valid"]["label"], train_labels[-N_VALID:])
    np.testing.assert_array_equal(data["test"]["image"], arrays[TEST_IMAGES].reshape(-1, 784))
    np.testing.assert_array_equal(data["test"]["label"], arrays[TEST_LABELS])
    # Row-major flattening: pixel (row, col) lands at row * 28 + col.
    assert data["train"]["image"][3, 5 * 28 + 7] == arrays[TRAIN_IMAGES][3, 5, 7]


def test_accepts_path_objects_and_returns_writable_arrays(tiny_mnist):
    directory, _, _ = tiny_mnist
    data = load_mnist(directory)
    for split in data.values():
        assert split["image"].flags.writeable
        assert split["label"].flags.writeable


def test_limit_train_keeps_first_examples(tiny_mnist):
    directory, arrays, _ = tiny_mnist
    full = load_mnist(directory)
    data = load_mnist(directory, limit_train=7)

    assert data["train"]["image"].shape == (7, 784)
    np.testing.assert_array_equal(data["train"]["image"], full["train"]["image"][:7])
    np.testing.assert_array_equal(data["train"]["label"], arrays[TRAIN_LABELS][:7])
    for split in ("valid", "test"):
        np.testing.assert_array_equal(data[split]["image"], full[split]["image"])
        np.testing.assert_array_equal(data[split]["label"], full[split]["label"])


@pytest.mark.parametrize("limit", [0, -3, SPLIT_SIZES["train"] + 1, 2.5, True])
def test_limit_train_out_of_range_is_rejected_before_reading(tmp_path, limit):
    # The directory does not exist: the limit must be checked first.
    with pytest.raises(UserError, match="limit_train"):
        load_mnist(tmp_path / "nowhere", limit_train=limit)


def test_limit_train_larger_than_small_training_file(tiny_mnist):
    directory, _, _ = tiny_mnist
    with pytest.raises(UserError, match=r"limit_train=111 .*between 1 and 110"):
        load_mnist(directory, limit_train=N_TRAIN_FILE - N_VALID + 1)


def test_plain_file_is_preferred_over_gz(tmp_path):
    arrays = make_arrays()
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array, compress=False)
    (tmp_path / (TEST_LABELS + ".gz")).write_bytes(b"not used")
    data = load_mnist(tmp_path)
    np.testing.assert_array_equal(data["test"]["label"], arrays[TEST_LABELS])


# ---------------------------------------------------------------------------------------------
# Bad inputs: each error names the offending file or directory.


def test_nonexistent_directory(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(UserError, match="does not exist") as info:
        load_mnist(missing)
    assert str(missing) in str(info.value)
    assert "--config.data.dir" in str(info.value)


def test_directory_is_a_file(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(UserError, match="not a directory") as info:
        load_mnist(a_file)
    assert str(a_file) in str(info.value)


def test_missing_file_lists_what_was_looked_for(tiny_mnist):
    directory, _, compressed = tiny_mnist
    file_path(directory, TEST_LABELS, compressed).unlink()
    with pytest.raises(UserError, match="missing 1 of the 4") as info:
        load_mnist(directory)
    message = str(info.value)
    assert f"{TEST_LABELS} or {TEST_LABELS}.gz" in message
    assert str(directory) in message
    assert TRAIN_IMAGES + " or" not in message  # present files are not listed


@pytest.mark.parametrize("delta", [-5, +3], ids=["truncated", "overlong"])
def test_wrong_file_size(tiny_mnist, delta):
    directory, arrays, compressed = tiny_mnist
    data = idx_bytes(arrays[TRAIN_IMAGES])
    expected = len(data)
    data = data[:delta] if delta < 0 else data + b"\0" * delta
    path = file_path(directory, TRAIN_IMAGES, compressed)
    path.write_bytes(gzip.compress(data) if compressed else data)
    with pytest.raises(UserError, match="truncated" if delta < 0 else "longer") as info:
        load_mnist(directory)
    message = str(info.value)
    assert str(path) in message
    assert str(expected) in message and str(expected + delta) in message


def test_file_shorter_than_header(tiny_mnist):
    directory, _, compressed = tiny_mnist
    path = file_path(directory, TEST_LABELS, compressed)
    path.write_bytes(gzip.compress(b"\0\0") if compressed else b"\0\0")
    with pytest.raises(UserError, match="truncated") as info:
        load_mnist(directory)
    assert str(path) in str(info.value)


def test_wrong_magic_number(tiny_mnist):
    directory, arrays, compressed = tiny_mnist
    # A label file where an image file belongs.
    path = file_path(directory, TEST_IMAGES, compressed)
    path.unlink()
    write_idx(directory / TEST_IMAGES, arrays[TEST_LABELS], compress=compressed)
    with pytest.raises(UserError, match="magic number 0x00000801, expected 0x00000803") as info:
        load_mnist(directory)
    assert str(path) in str(info.value)


def test_gzipped_file_without_gz_suffix_fails_on_magic(tmp_path):
    arrays = make_arrays()
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array, compress=False)
    path = tmp_path / TRAIN_LABELS
    path.write_bytes(gzip.compress(idx_bytes(arrays[TRAIN_LABELS])))
    with pytest.raises(UserError, match="magic number") as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_wrong_image_size(tiny_mnist):
    directory, arrays, compressed = tiny_mnist
    path = file_path(directory, TRAIN_IMAGES, compressed)
    path.unlink()
    write_idx(directory / TRAIN_IMAGES, arrays[TRAIN_IMAGES][:, :27, :], compress=compressed)
    with pytest.raises(UserError, match="27x28 pixels, expected 28x28") as info:
        load_mnist(directory)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "content", [b"this is not gzip data at all", None], ids=["garbage", "cut_short"]
)
def test_corrupt_gzip(tmp_path, content):
    arrays = make_arrays()
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array, compress=True)
    path = tmp_path / (TRAIN_IMAGES + ".gz")
    if content is None:
        content = path.read_bytes()[:200]
    path.write_bytes(content)
    with pytest.raises(UserError, match="not a valid gzip file") as info:
        load_mnist(tmp_path)
    assert str(path) in str(info.value)


def test_label_out_of_range(tiny_mnist):
    directory, arrays, compressed = tiny_mnist
    labels = arrays[TEST_LABELS].copy()
    labels[4] = 10
    path = file_path(directory, TEST_LABELS, compressed)
    path.unlink()
    write_idx(directory / TEST_LABELS, labels, compress=compressed)
    with pytest.raises(UserError, match=r"outside 0\.\.9 \(the first is 10 at index 4\)") as info:
        load_mnist(directory)
    assert str(path) in str(info.value)


def test_image_label_count_mismatch(tiny_mnist):
    directory, arrays, compressed = tiny_mnist
    labels_path = file_path(directory, TRAIN_LABELS, compressed)
    labels_path.unlink()
    write_idx(directory / TRAIN_LABELS, arrays[TRAIN_LABELS][:-1], compress=compressed)
    with pytest.raises(UserError, match="120 images but 119 labels") as info:
        load_mnist(directory)
    message = str(info.value)
    assert str(labels_path) in message
    assert str(file_path(directory, TRAIN_IMAGES, compressed)) in message


def test_training_file_too_small_to_split(tmp_path):
    arrays = make_arrays()
    arrays[TRAIN_IMAGES] = arrays[TRAIN_IMAGES][:1]
    arrays[TRAIN_LABELS] = arrays[TRAIN_LABELS][:1]
    for stem, array in arrays.items():
        write_idx(tmp_path / stem, array, compress=False)
    with pytest.raises(UserError, match="only 1 example"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------------------------------
# Pixel conversion.


def test_pixels_to_unit_interval_numpy_and_jit():
    import jax
    import jax.numpy as jnp

    pixels = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    expected = np.array([[0.0, 1 / 255, 128 / 255, 1.0]], dtype=np.float32)

    out = pixels_to_unit_interval(pixels)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)

    out_jit = jax.jit(pixels_to_unit_interval)(jnp.asarray(pixels))
    assert out_jit.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out_jit), expected, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# TFDS source (source="tfds"). Nothing here touches the network.


def test_tfds_offline_and_not_prepared_fails_fast(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # empty: nothing prepared
    monkeypatch.setattr(mnist, "_network_reachable", lambda *a, **k: False)
    monkeypatch.setattr(mnist, "_tensorflow_available", lambda: False)
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        load_mnist(None, source="tfds")
    elapsed = time.monotonic() - start
    assert elapsed < 10, f"took {elapsed:.1f} s"
    message = str(info.value)
    assert "config.data.source is 'tfds'" in message
    assert "no network access" in message
    assert "TensorFlow is not installed" in message
    assert "--config.data.dir" in message
    assert "https://storage.googleapis.com/cvdf-datasets/mnist/" in message


class FakeSource:
    """Stands in for a TFDS random-access data source of MNIST records."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, keys):
        return [
            {"image": self.images[i][..., None], "label": np.int64(self.labels[i])} for i in keys
        ]


def fake_tfds(prepared: bool, sources=None) -> types.ModuleType:
    """A stand-in ``tensorflow_datasets`` module."""
    module = types.ModuleType("tensorflow_datasets")

    class Builder:
        data_dir = "/fake/tfds/mnist/3.0.1"

        def is_prepared(self) -> bool:
            return prepared

    def data_source(name, *, split):
        assert name == "mnist" and list(split) == ["train", "test"]
        if sources is None:
            raise AssertionError("data_source must not be called")
        return sources

    module.builder = lambda name: Builder()
    module.data_source = data_source
    return module


@pytest.mark.parametrize("offline, no_tf", [(True, False), (False, True)])
def test_tfds_not_prepared_says_why(monkeypatch, offline, no_tf):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(prepared=False))
    monkeypatch.setattr(mnist, "_network_reachable", lambda *a, **k: not offline)
    monkeypatch.setattr(mnist, "_tensorflow_available", lambda: not no_tf)
    with pytest.raises(UserError, match="config.data.source is 'tfds'") as info:
        load_mnist(source="tfds")
    message = str(info.value)
    assert ("no network access" in message) == offline
    assert ("TensorFlow is not installed" in message) == no_tf
    assert "/fake/tfds/mnist/3.0.1" in message


def test_tfds_prepared_is_read_and_split(monkeypatch):
    arrays = make_arrays(seed=1)
    sources = [
        FakeSource(arrays[TRAIN_IMAGES], arrays[TRAIN_LABELS]),
        FakeSource(arrays[TEST_IMAGES], arrays[TEST_LABELS]),
    ]
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(True, sources))
    monkeypatch.setattr(mnist, "_network_reachable", lambda *a, **k: pytest.fail("probed net"))

    data = load_mnist(limit_train=50, source="tfds")
    train_images = arrays[TRAIN_IMAGES].reshape(-1, 784)
    np.testing.assert_array_equal(data["train"]["image"], train_images[:50])
    np.testing.assert_array_equal(data["valid"]["image"], train_images[-N_VALID:])
    np.testing.assert_array_equal(data["valid"]["label"], arrays[TRAIN_LABELS][-N_VALID:])
    np.testing.assert_array_equal(data["test"]["image"], arrays[TEST_IMAGES].reshape(-1, 784))
    assert data["test"]["label"].dtype == np.int32
    assert data["train"]["image"].dtype == np.uint8


def test_tfds_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install tensorflow-datasets"):
        load_mnist(source="tfds")


def test_network_probe_is_local_and_quick():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert mnist._network_reachable("127.0.0.1", port)
    # Nothing listens on the port any more: connection refused, reported as unreachable.
    start = time.monotonic()
    assert not mnist._network_reachable("127.0.0.1", port)
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------------------------------------
# The real files, where the shared data directory has them.


def test_real_mnist(mnist_dir):
    data = load_mnist(mnist_dir)
    for split, n in SPLIT_SIZES.items():
        assert data[split]["image"].shape == (n, 784)
        assert data[split]["image"].dtype == np.uint8
        assert data[split]["label"].shape == (n,)
        assert data[split]["label"].dtype == np.int32
        assert data[split]["image"].min() == 0 and data[split]["image"].max() == 255
        assert set(np.unique(data[split]["label"])) == set(range(10))
    counts = np.bincount(data["train"]["label"], minlength=10)
    assert np.all((counts >= 4000) & (counts <= 7000)), counts
    # The official training file starts with a 5, then 0, 4, 1.
    assert list(data["train"]["label"][:4]) == [5, 0, 4, 1]
    assert data["test"]["label"][0] == 7
