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
  This is the user's own copy: nothing is downloaded into it, and any IDX files of MNIST's shape
  are accepted (tests write tiny ones).
* ``source="cache"`` (the default, no ``data_dir``): the same four files in lnexp's data cache,
  ``dataset_dir("mnist")`` (``$LNEXP_DATA/mnist``, else ``~/.cache/lnexp/data/mnist``; see
  :mod:`lnexp.data.cache`). A file that is not there is downloaded from ``url`` (by default
  :data:`DEFAULT_URL`, the mirror TFDS uses, then :data:`FALLBACK_URLS`) with
  :func:`lnexp.data.fetch.download`: written atomically, and kept only when the SHA-256 of its
  *uncompressed* contents is the one pinned in :data:`SHA256`, so that a mirror (or a copy) that
  recompressed the files still passes. Every load checks the digests again (the parser
  decompresses the files anyway; it adds about 0.2 s): a cached file that no longer matches is
  downloaded again, or reported when the cache cannot be written. :func:`download_mnist` fills
  the cache (or any directory) without loading.
* ``source="tfds"``: TensorFlow Datasets' TensorFlow-free ``tfds.data_source("mnist")``. If
  MNIST is not yet prepared in the TFDS data directory, preparing it needs both network access and
  TensorFlow (for the ``Image`` feature); when either is missing we fail within seconds with a
  :class:`~lnexp.errors.UserError` instead of letting TFDS retry its download for minutes. Note that
  TFDS shuffles the examples when it prepares a dataset, so its 55,000 / 5,000 partition of the
  training set holds different examples than the partition of the IDX files (same sizes).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import socket
import threading
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import logging

from lnexp.data.cache import dataset_dir
from lnexp.data.fetch import DownloadError, Report, download, join_url
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
_STEMS = tuple(stem for pair in _IDX_FILES.values() for stem in pair)

SOURCES = ("cache", "tfds")
DEFAULT_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # The mirror TFDS uses.
FALLBACK_URLS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)  # torchvision's.
# SHA-256 of the uncompressed IDX files (what is downloaded is their .gz).
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_DOWNLOAD_URL = DEFAULT_URL
_TFDS_HOST = "storage.googleapis.com"
_NETWORK_TIMEOUT_S = 3.0

Split = dict[str, np.ndarray]


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    limit_train: int | None = None,
    source: str = "cache",
    url: str | None = DEFAULT_URL,
    progress: bool = True,
) -> dict[str, Split]:
    """Loads MNIST and splits it into train (55,000), valid (5,000) and test (10,000).

    Args:
        data_dir: Directory with your own copy of the four standard MNIST IDX files (plain or
            ``.gz``); nothing is downloaded into it. ``None`` or an empty string: ``source``.
        limit_train: If given, keep only the first ``limit_train`` training examples (for smoke
            runs); ``valid`` and ``test`` are unchanged. Must be in ``1..55000`` (and no larger
            than the training split actually loaded).
        source: Without ``data_dir``: ``"cache"`` (lnexp's data cache, filled from ``url`` on
            first use) or ``"tfds"`` (TensorFlow Datasets' ``mnist``).
        url: Where the cache source downloads missing files from: a directory URL holding the
            four ``.gz`` files. The default also falls back to :data:`FALLBACK_URLS`; ``None``
            means the default.
        progress: Progress bars while downloading (on a terminal).

    Returns:
        ``{"train": s, "valid": s, "test": s}`` where each ``s`` is
        ``{"image": uint8 array (N, 784), "label": int32 array (N,)}``.

    Raises:
        UserError: If ``limit_train`` or ``source`` is invalid, the data directory or one of its
            files is missing or malformed, the cache cannot be filled (no network, a mirror that
            fails or serves files with other digests, a cache that cannot be written), or TFDS
            cannot provide MNIST here.
    """
    _check_limit_train(limit_train, SPLIT_SIZES["train"])
    if source not in SOURCES:
        raise UserError(
            f"Unknown MNIST source {source!r} in config.data.source: expected 'cache' (the four "
            "IDX files in lnexp's data cache, downloaded on first use) or 'tfds' (TensorFlow "
            "Datasets' mnist). Pass --config.data.source=cache or --config.data.source=tfds, or "
            "--config.data.dir=DIR for your own copy of the files."
        )
    if data_dir is not None and str(data_dir) != "":
        if source == "tfds":
            raise UserError(
                f"MNIST: both config.data.dir ({data_dir}) and config.data.source='tfds' are set, "
                "which ask for two different copies of MNIST. Leave out --config.data.dir to read "
                "TFDS's mnist, or --config.data.source=tfds to read the IDX files in the directory."
            )
        directory = Path(data_dir).expanduser()
        files = _idx_dir_files(directory)
        source_text = f"the training files in {directory}"
    elif source == "cache":
        directory = dataset_dir("mnist")
        files = _cached_files(directory, url, progress, Report())
        source_text = f"the training files in {directory}"
    else:
        files = None
        source_text = "the TFDS mnist 'train' split"
    if files is None:
        train_images, train_labels, test_images, test_labels = _load_tfds()
    else:
        train_images, train_labels, test_images, test_labels = _idx_arrays(files)

    n = len(train_labels)
    n_valid = max(1, n * SPLIT_SIZES["valid"] // _OFFICIAL_TRAIN_SIZE)
    n_train = n - n_valid
    if n_train < 1:
        raise UserError(
            f"MNIST: {source_text} hold only {n} example(s), too few to split into a training "
            "and a validation part (the validation part is the last 1/12 of them, at least 1). "
            "Use the full MNIST training files (60,000 examples)."
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


IdxFiles = dict[str, tuple[Path, bytes]]  # IDX file stem -> (the file, its uncompressed bytes)


def _idx_dir_files(directory: Path) -> IdxFiles:
    """The four IDX files of a user's directory, read and decompressed."""
    if not directory.exists():
        raise UserError(
            f"MNIST data directory {directory} does not exist. Pass --config.data.dir=DIR with a "
            "directory holding the four MNIST IDX files (train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, plain or "
            f".gz; download them from {_DOWNLOAD_URL}), or leave it unset to use lnexp's data "
            "cache (where they are downloaded on first use)."
        )
    if not directory.is_dir():
        raise UserError(
            f"MNIST data directory {directory} is a file, not a directory. Pass "
            "--config.data.dir=DIR naming the directory that holds the four MNIST IDX files."
        )

    found = {stem: _find_idx_file(directory, stem) for stem in _STEMS}
    missing = [stem for stem in _STEMS if found[stem] is None]
    if missing:
        looked_for = ", ".join(f"{stem} or {stem}.gz" for stem in missing)
        raise UserError(
            f"MNIST data directory {directory} is missing {len(missing)} of the 4 IDX files: "
            f"looked for {looked_for}. Put the four standard files there under these exact names "
            f"(plain or gzipped; download them from {_DOWNLOAD_URL}), or point "
            "--config.data.dir at the directory that has them."
        )
    files = {}
    for stem, path in found.items():
        assert path is not None
        files[stem] = (path, _idx_data(path))
    return files


def _idx_arrays(files: IdxFiles) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Parses and checks the four IDX files; returns train/test images (N, 784) and labels."""
    arrays = []
    for images_stem, labels_stem in _IDX_FILES.values():
        images_path, labels_path = files[images_stem][0], files[labels_stem][0]
        images = _parse_idx(files[images_stem][1], images_path, _IMAGES_MAGIC)
        labels = _parse_idx(files[labels_stem][1], labels_path, _LABELS_MAGIC)
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


def _idx_data(path: Path) -> bytes:
    """The contents of an IDX file, decompressed when its name ends in ``.gz``."""
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
    return data


def _parse_idx(data: bytes, path: Path, magic: int) -> np.ndarray:
    """Parses the (uncompressed) contents of an unsigned-byte IDX file, checking its header and
    size; ``path`` names the file in messages."""
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
# Source 2: lnexp's data cache, filled from a mirror.


def download_mnist(
    directory: str | os.PathLike[str] | None = None,
    url: str | None = DEFAULT_URL,
    *,
    progress: bool = True,
) -> Report:
    """Makes sure ``directory`` holds the four MNIST files, each matching :data:`SHA256`.

    Files already there (plain or ``.gz``) that match are left alone; missing ones, and ones
    that do not match, are downloaded as ``<stem>.gz`` from ``url`` (the default also tries
    :data:`FALLBACK_URLS`), each checked before it is kept.

    Args:
        directory: Where the files go; created if needed. ``None``: the data cache,
            ``dataset_dir("mnist")``.
        url: A directory URL holding the four ``.gz`` files; ``None`` means the default.
        progress: Progress bars (on a terminal).

    Returns:
        What was fetched and what was there already (file names).

    Raises:
        UserError: A file cannot be downloaded from any mirror (no network, an HTTP error, a
            broken connection, or contents with another digest), or the directory cannot be
            written. Files that were completed and checked before the failure are kept.
    """
    report = Report()
    directory = dataset_dir("mnist") if directory is None else Path(directory).expanduser()
    _cached_files(directory, url, progress, report)
    return report


def _cached_files(directory: Path, url: str | None, progress: bool, report: Report) -> IdxFiles:
    """The four checked IDX files of ``directory``, downloading those missing or not matching."""
    mirrors = _mirrors(url)
    files = {}
    for stem in _STEMS:
        path = _find_idx_file(directory, stem) if directory.is_dir() else None
        if path is not None:
            data, problem = _checked_idx_data(path, stem)
            if data is not None:
                files[stem] = (path, data)
                report.present.append(path.name)
                continue
            logging.warning("MNIST: %s %s; downloading it again.", path, problem)
        files[stem] = _download_idx(directory, stem, mirrors, progress, replaces=path)
        report.fetched.append(files[stem][0].name)
    return files


def _mirrors(url: str | None) -> list[str]:
    """The URLs to try, in order: the default mirror and its fallbacks, or the one given."""
    if not url or url.rstrip("/") == DEFAULT_URL.rstrip("/"):
        return [DEFAULT_URL, *FALLBACK_URLS]
    return [url]


def _checked_idx_data(path: Path, stem: str) -> tuple[bytes | None, str]:
    """``(contents, "")`` of a cached file that matches its pinned digest, else
    ``(None, what is wrong)``."""
    try:
        data = _idx_data(path)
    except UserError:
        return None, "cannot be read whole (truncated, corrupt or unreadable)"
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[stem]:
        return None, (
            f"does not match its pinned SHA-256 (uncompressed contents {digest[:12]}..., "
            f"expected {SHA256[stem][:12]}...)"
        )
    return data, ""


def _download_idx(
    directory: Path, stem: str, mirrors: list[str], progress: bool, replaces: Path | None
) -> tuple[Path, bytes]:
    """Downloads ``<stem>.gz`` into ``directory`` from the first mirror that serves it intact;
    moves that mirror to the front of ``mirrors``. ``replaces``: a bad file it supersedes."""
    name = f"{stem}.gz"
    dest = directory / name
    contents: list[bytes] = []

    def check(part: Path) -> None:
        try:
            data = gzip.decompress(part.read_bytes())
        except (gzip.BadGzipFile, EOFError, zlib.error) as e:
            raise ValueError(
                f"not a complete gzip file (truncated or corrupt: {type(e).__name__}: {e})"
            ) from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[stem]:
            raise ValueError(
                f"its uncompressed contents have SHA-256 {digest}, not the {SHA256[stem]} "
                "pinned in lnexp/data/mnist.py (a corrupted or different file)"
            )
        contents.append(data)

    failures = []
    tries = list(mirrors)
    for i, base in enumerate(tries):
        file_url = join_url(base, name)
        logging.info("MNIST: downloading %s into %s.", file_url, directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            download(file_url, dest, check=check, progress=progress, desc=name)
            if replaces is not None and replaces != dest:
                replaces.unlink()  # A bad plain file would otherwise be read before the .gz.
        except DownloadError as e:
            failures.append(str(e))
            if i + 1 < len(tries):
                logging.warning("MNIST: %s; trying %s instead.", e, tries[i + 1])
            continue
        except OSError as e:
            raise UserError(
                f"MNIST: cannot write {name} into the data cache {directory} "
                f"({e.strerror or e}). Make that directory writable, or set LNEXP_DATA to a "
                "writable directory (the data sets go into $LNEXP_DATA/mnist etc.), or pass "
                "--config.data.dir=DIR naming your own copy of the four MNIST files."
            ) from e
        mirrors.remove(base)
        mirrors.insert(0, base)  # The next files come from the mirror that worked.
        return dest, contents[-1]

    names = ", ".join(f"{s}.gz" for s in _STEMS)
    raise UserError(
        f"MNIST: cannot download {name} into {directory}: {'; '.join(failures)}. Nothing "
        "incomplete or unchecked was kept. Check the network connection (a proxy is read from "
        "https_proxy), or name a mirror that has the files (--config.data.url=URL for a run, "
        f"--url URL for lnexp.data.download), or put the four files ({names}, from "
        f"{DEFAULT_URL}) into {directory} by hand, or pass --config.data.dir=DIR naming your own "
        "copy."
    )


# --------------------------------------------------------------------------------------------
# Source 3: TensorFlow Datasets (config.data.source="tfds").


def _load_tfds() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reads MNIST through ``tfds.data_source``, failing fast when it cannot be prepared here."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise UserError(
            f"MNIST: config.data.source is 'tfds', so MNIST would be read through TensorFlow "
            f"Datasets, but it cannot be imported ({e}). Install it with `pip install "
            f"tensorflow-datasets importlib_resources array_record`, or use the default "
            f"--config.data.source=cache (lnexp downloads the four MNIST IDX files from "
            f"{_DOWNLOAD_URL} into its data cache), or pass --config.data.dir=DIR with your own "
            f"copy of them."
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
                f"MNIST: config.data.source is 'tfds', MNIST is not prepared in the TFDS data "
                f"directory ({builder.data_dir}), and TFDS cannot download and prepare it here: "
                f"{'; '.join(problems)}. "
                f"Use the default --config.data.source=cache (lnexp's data cache, which needs "
                f"no TensorFlow), or pass --config.data.dir=DIR with the four MNIST IDX files "
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
