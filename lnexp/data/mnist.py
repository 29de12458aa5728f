"""MNIST as uint8 NumPy arrays, split into train / valid / test.

:func:`load_mnist` returns ``{"train": ..., "valid": ..., "test": ...}``; each split is a dict with
``"image"`` (uint8, shape ``(N, 784)``, pixels 0..255, rows of the 28x28 image flattened) and
``"label"`` (int32, shape ``(N,)``, digits 0..9). Pixels stay uint8 on the host so that a batch is
small to move; the training step converts them on device with :func:`pixels_to_unit_interval`.

Split: ``train`` is the first 55,000 examples of the official 60,000-example training set,
``valid`` its last 5,000, and ``test`` the official 10,000-example test set (:data:`SPLIT_SIZES`).
A training file with another number of examples ``n`` (tiny files written by tests) is split the
same way in proportion: ``valid`` is its last ``max(1, n * 5000 // 60000)`` examples and ``train``
the rest.

Sources:

* ``data_dir`` given: a directory with the four standard IDX files ``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each
  plain or gzipped (``.gz``), as published at https://storage.googleapis.com/cvdf-datasets/mnist/.
  They are parsed with NumPy and checked (magic number, shape, exact file size, labels 0..9).
* ``data_dir`` not given: TensorFlow Datasets' TensorFlow-free ``tfds.data_source("mnist")``. If
  MNIST is not yet prepared in the TFDS data directory, preparing it needs both network access and
  TensorFlow (for the ``Image`` feature); when either is missing we fail within seconds with a
  :class:`~lnexp.errors.UserError` instead of letting TFDS retry its download for minutes. Note that
  TFDS shuffles the examples when it prepares a dataset, so its 55,000 / 5,000 partition of the
  training set holds different examples than the partition of the IDX files (same sizes).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import socket
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lnexp.errors import UserError

if TYPE_CHECKING:
    import jax

SPLIT_SIZES = {"train": 55_000, "valid": 5_000, "test": 10_000}

IMAGE_SIDE = 28
NUM_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_OFFICIAL_TRAIN_SIZE = 60_000

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DOWNLOAD_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_TFDS_HOST = "storage.googleapis.com"
_NETWORK_TIMEOUT_S = 3.0

Split = dict[str, np.ndarray]


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, limit_train: int | None = None
) -> dict[str, Split]:
    """Loads MNIST and splits it into train (55,000), valid (5,000) and test (10,000).

    Args:
        data_dir: Directory with the four standard MNIST IDX files (plain or ``.gz``). ``None`` or
            an empty string reads MNIST through TensorFlow Datasets instead.
        limit_train: If given, keep only the first ``limit_train`` training examples (for smoke
            runs); ``valid`` and ``test`` are unchanged. Must be in ``1..55000`` (and no larger
            than the training split actually loaded).

    Returns:
        ``{"train": s, "valid": s, "test": s}`` where each ``s`` is
        ``{"image": uint8 array (N, 784), "label": int32 array (N,)}``.

    Raises:
        UserError: If ``limit_train`` is out of range, the data directory or one of its files is
            missing or malformed, or (without ``data_dir``) TFDS cannot provide MNIST here.
    """
    _check_limit_train(limit_train, SPLIT_SIZES["train"])
    if data_dir is None or str(data_dir) == "":
        train_images, train_labels, test_images, test_labels = _load_tfds()
        source = "the TFDS mnist 'train' split"
    else:
        directory = Path(data_dir).expanduser()
        train_images, train_labels, test_images, test_labels = _load_idx_dir(directory)
        source = f"the training files in {directory}"

    n = len(train_labels)
    n_valid = max(1, n * SPLIT_SIZES["valid"] // _OFFICIAL_TRAIN_SIZE)
    n_train = n - n_valid
    if n_train < 1:
        raise UserError(
            f"MNIST: {source} hold only {n} example(s), too few to split into a training and a "
            "validation part (the validation part is the last 1/12 of them, at least 1). Use the "
            "full MNIST training files (60,000 examples)."
        )
    if limit_train is not None:
        _check_limit_train(limit_train, n_train)
        n_train = limit_train
    return {
        "train": {"image": train_images[:n_train], "label": train_labels[:n_train]},
        "valid": {"image": train_images[n - n_valid :], "label": train_labels[n - n_valid :]},
        "test": {"image": test_images, "label": test_labels},
    }


def pixels_to_unit_interval(images: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """Converts uint8 pixels (0..255) to float32 in [0, 1]; works on NumPy arrays and inside jit.

    Args:
        images: uint8 pixel array of any shape (NumPy or JAX).

    Returns:
        A float32 array of the same shape and kind, ``images / 255``.
    """
    return images.astype(np.float32) / np.float32(255.0)


def _check_limit_train(limit_train: int | None, available: int) -> None:
    """Raises UserError unless ``limit_train`` is None or an int in ``1..available``."""
    if limit_train is None:
        return
    if isinstance(limit_train, bool) or not isinstance(limit_train, int | np.integer):
        raise UserError(
            f"MNIST: limit_train must be a whole number of training examples or None, got "
            f"{limit_train!r} ({type(limit_train).__name__}). Pass an integer between 1 and "
            f"{available}, or leave it unset to train on all {available} examples."
        )
    if not 1 <= limit_train <= available:
        raise UserError(
            f"MNIST: limit_train={limit_train} is out of range: the training split has "
            f"{available} examples, so limit_train must be between 1 and {available}. Pass a "
            "value in that range, or leave it unset to train on the whole split."
        )


# --------------------------------------------------------------------------------------------
# Source 1: IDX files in a directory.


def _load_idx_dir(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads and checks the four IDX files; returns train/test images (N, 784) and labels (N,)."""
    if not directory.exists():
        raise UserError(
            f"MNIST data directory {directory} does not exist. Pass --config.data.dir=DIR with a "
            "directory holding the four MNIST IDX files (train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or "
            f".gz; download them from {_DOWNLOAD_URL}), or leave it unset to use TFDS."
        )
    if not directory.is_dir():
        raise UserError(
            f"MNIST data directory {directory} is a file, not a directory. Pass "
            "--config.data.dir=DIR naming the directory that holds the four MNIST IDX files."
        )

    stems = [stem for pair in _IDX_FILES.values() for stem in pair]
    found = {stem: _find_idx_file(directory, stem) for stem in stems}
    missing = [stem for stem in stems if found[stem] is None]
    if missing:
        looked_for = ", ".join(f"{stem} or {stem}.gz" for stem in missing)
        raise UserError(
            f"MNIST data directory {directory} is missing {len(missing)} of the 4 IDX files: "
            f"looked for {looked_for}. Put the four standard files there under these exact names "
            f"(plain or gzipped; download them from {_DOWNLOAD_URL}), or point "
            "--config.data.dir at the directory that has them."
        )

    arrays = []
    for images_stem, labels_stem in _IDX_FILES.values():
        images_path, labels_path = found[images_stem], found[labels_stem]
        assert images_path is not None and labels_path is not None
        images = _read_idx(images_path, _IMAGES_MAGIC)
        labels = _read_idx(labels_path, _LABELS_MAGIC)
        if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
            raise UserError(
                f"MNIST file {images_path} holds images of {images.shape[1]}x{images.shape[2]} "
                f"pixels, expected {IMAGE_SIDE}x{IMAGE_SIDE}. It is not an MNIST image file; "
                f"replace it with the original from {_DOWNLOAD_URL}."
            )
        if len(images) != len(labels):
            raise UserError(
                f"MNIST files {images_path} and {labels_path} do not match: {len(images)} images "
                f"but {len(labels)} labels. Replace both with a matching pair of original files "
                f"from {_DOWNLOAD_URL}."
            )
        if len(labels) == 0:
            raise UserError(
                f"MNIST file {labels_path} holds no examples. Replace it and {images_path} with "
                f"the original files from {_DOWNLOAD_URL}."
            )
        bad = np.flatnonzero(labels >= NUM_CLASSES)
        if bad.size:
            raise UserError(
                f"MNIST file {labels_path} has {bad.size} label(s) outside 0..9 (the first is "
                f"{int(labels[bad[0]])} at index {int(bad[0])}); the file is corrupt or not an "
                f"MNIST label file. Replace it with the original from {_DOWNLOAD_URL}."
            )
        arrays.append(images.reshape(len(images), NUM_PIXELS))
        arrays.append(labels.astype(np.int32))
    train_images, train_labels, test_images, test_labels = arrays
    return train_images, train_labels, test_images, test_labels


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    """Returns ``directory/stem`` or ``directory/stem.gz`` (plain preferred), or None."""
    for name in (stem, f"{stem}.gz"):
        path = directory / name
        if path.is_file():
            return path
    return None


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Reads an unsigned-byte IDX file (plain or gzipped) and checks its header and size."""
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise UserError(
            f"MNIST file {path} is not a valid gzip file ({type(e).__name__}: {e}); it is "
            f"probably truncated or corrupted by an interrupted download. Download it again from "
            f"{_DOWNLOAD_URL}, or store it decompressed without the .gz suffix."
        ) from e
    except OSError as e:
        raise UserError(
            f"MNIST file {path} cannot be read ({e}). Check its permissions, or replace it with "
            f"the original from {_DOWNLOAD_URL}."
        ) from e

    ndim = magic & 0xFF
    kind = "image" if magic == _IMAGES_MAGIC else "label"
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise UserError(
            f"MNIST file {path} is truncated: it has {len(data)} bytes, fewer than the "
            f"{header_size}-byte header of an IDX {kind} file. Download it again from "
            f"{_DOWNLOAD_URL}."
        )
    found_magic = int.from_bytes(data[:4], "big")
    if found_magic != magic:
        raise UserError(
            f"MNIST file {path} starts with magic number 0x{found_magic:08x}, expected "
            f"0x{magic:08x} for an IDX {kind} file; it is not an MNIST {kind} file (or it is "
            f"still gzipped without a .gz suffix). Replace it with the original from "
            f"{_DOWNLOAD_URL}."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">i4", count=ndim, offset=4))
    expected_size = header_size + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected_size:
        problem = "truncated" if len(data) < expected_size else "longer than its header says"
        raise UserError(
            f"MNIST file {path} is {problem}: its header declares dimensions {dims}, so it should "
            f"hold {expected_size} bytes{' after decompression' if path.suffix == '.gz' else ''}, "
            f"but it holds {len(data)}. Download it again from {_DOWNLOAD_URL}."
        )
    # Copy so that callers get writable arrays that do not pin the raw bytes.
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()


# --------------------------------------------------------------------------------------------
# Source 2: TensorFlow Datasets (no data_dir given).


def _load_tfds() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads MNIST through ``tfds.data_source``, failing fast when it cannot be prepared here."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError(
            f"MNIST: no data directory was given, so MNIST would be read through TensorFlow "
            f"Datasets, but it cannot be imported ({e}). Install it with `pip install "
            f"tensorflow-datasets importlib_resources array_record`, or pass "
            f"--config.data.dir=DIR with the four MNIST IDX files (download them from "
            f"{_DOWNLOAD_URL})."
        ) from e

    builder = tfds.builder("mnist")
    if not builder.is_prepared():
        problems = []
        if not _network_reachable():
            problems.append(f"{_TFDS_HOST}:443 cannot be reached (no network access)")
        if not _tensorflow_available():
            problems.append("TensorFlow is not installed (TFDS needs it to prepare MNIST images)")
        if problems:
            raise UserError(
                f"MNIST: no data directory was given, MNIST is not prepared in the TFDS data "
                f"directory ({builder.data_dir}), and TFDS cannot download and prepare it here: "
                f"{'; '.join(problems)}. "
                f"Pass --config.data.dir=DIR with the four MNIST IDX files "
                f"(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                f"t10k-labels-idx1-ubyte, plain or .gz; download them from {_DOWNLOAD_URL}), or "
                f"prepare TFDS mnist on a machine with TensorFlow and network access "
                f"(`tfds.data_source('mnist')`, or `tfds build mnist --file_format=array_record`) "
                f"and copy the resulting directory into the TFDS data directory here "
                f"(TFDS_DATA_DIR)."
            )
    try:
        train, test = tfds.data_source("mnist", split=["train", "test"])
    except (NotImplementedError, ValueError) as e:
        raise UserError(
            f"MNIST: TFDS cannot read mnist from {builder.data_dir} with random access ({e}). "
            f"Prepare it there with file_format='array_record' (e.g. `tfds build mnist "
            f"--file_format=array_record` on a machine with TensorFlow), or pass "
            f"--config.data.dir=DIR with the four MNIST IDX files from {_DOWNLOAD_URL}."
        ) from e
    train_images, train_labels = _records_to_arrays(train)
    test_images, test_labels = _records_to_arrays(test)
    return train_images, train_labels, test_images, test_labels


def _records_to_arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
    """Turns a TFDS data source of ``{"image": (28, 28, 1), "label": int}`` into two arrays."""
    records = source.__getitems__(range(len(source)))
    images = np.stack([np.asarray(r["image"], dtype=np.uint8) for r in records])
    labels = np.array([r["label"] for r in records], dtype=np.int32)
    return images.reshape(len(images), NUM_PIXELS), labels


def _network_reachable(host: str = _TFDS_HOST, port: int = 443) -> bool:
    """Whether a TCP connection to ``host:port`` opens within a few seconds (DNS included)."""
    reachable: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=_NETWORK_TIMEOUT_S):
                reachable.append(True)
        except OSError:
            reachable.append(False)

    # A thread bounds the DNS lookup too, which socket timeouts do not cover.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(_NETWORK_TIMEOUT_S)
    return bool(reachable) and reachable[0]


def _tensorflow_available() -> bool:
    """Whether TensorFlow is installed (without importing it)."""
    return importlib.util.find_spec("tensorflow") is not None
