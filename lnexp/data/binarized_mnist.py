"""Binary MNIST for DRAW: 50,000 / 10,000 / 10,000 images, as Larochelle & Murray (2011).

Two sources:

* Their fixed binarization, when you have it: the files ``binarized_mnist_train.amat``,
  ``binarized_mnist_valid.amat`` and ``binarized_mnist_test.amat`` in one directory (each line
  784 space-separated 0/1 values), read by :func:`load_amat_dir`. Nothing downloads them.
* Otherwise MNIST's IDX files (:func:`lnexp.data.mnist.load_mnist`, cache or directory), split as
  they split it (the first 50,000 training images, the last 10,000 for validation, the 10,000 test
  images) and binarized by :func:`binarize_fixed` (validation and test, once, with a fixed seed)
  while the training images stay grey: the experiment draws them anew at every visit
  (:func:`bernoulli_pixels`, "dynamic binarization").

Either way every split holds ``uint8`` images of 0 or 255 per pixel (grey levels 0..255 for
training images that are binarized on the fly), so that ``image / 255`` is a pixel probability
and a draw from ``Bernoulli(image / 255)`` leaves a binary image as it is.

The two are not the same data set: published bounds on dynamically binarized MNIST are lower
than on the fixed binarization, by about 0.5-1 nat in the literature, so a bound from one is not
strictly comparable with a bound from the other.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from lnexp.data.mnist import NUM_PIXELS, load_mnist
from lnexp.errors import UserError

SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
AMAT_FILES = {split: f"binarized_mnist_{split}.amat" for split in SPLIT_SIZES}

Split = dict[str, np.ndarray]


def binarize_fixed(images: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli draw of every pixel, ``P(1) = grey / 255``, from ``seed``: uint8 0 or 255.

    Example:
        >>> import numpy as np
        >>> from lnexp.data.binarized_mnist import binarize_fixed
        >>> grey = np.array([[0, 255, 128]], np.uint8)
        >>> binary = binarize_fixed(grey, 0)
        >>> bool((binary == binarize_fixed(grey, 0)).all()), binary[0, :2].tolist()
        (True, [0, 255])
    """
    u = np.random.default_rng(seed).random(images.shape, dtype=np.float32)
    return np.where(u * 255 < images, 255, 0).astype(np.uint8)


def bernoulli_pixels(key: jax.Array, images: jax.Array) -> jax.Array:
    """A draw of binary images (float32 0/1) from ``Bernoulli(images / 255)``, on the device.

    Images already binary (0 or 255) come back as they are, whatever the key.
    """
    u = jax.random.uniform(key, images.shape, jnp.float32)
    return (u * 255 < images.astype(jnp.float32)).astype(jnp.float32)


def load_binarized_mnist(
    *,
    binarized_dir: str | os.PathLike[str] | None,
    mnist_dir: str | os.PathLike[str] | None,
    source: str = "cache",
    url: str | None = None,
    binarize_seed: int = 0,
    limit_train: int | None = None,
) -> tuple[dict[str, Split], bool]:
    """The three splits, ``{split: {'image': uint8 (n, 784), 'index': int32 (n,)}}``, and
    whether they are the fixed binarization (``True``) or grey training images to binarize on
    the fly (``False``).

    Args:
        binarized_dir: A directory with Larochelle & Murray's ``.amat`` files; wins when set.
        mnist_dir, source, url: MNIST's IDX files otherwise (:func:`lnexp.data.mnist.load_mnist`).
        binarize_seed: The seed of the validation and test sets' one draw (IDX source).
        limit_train: Keep only the first ``limit_train`` training images.

    Raises:
        UserError: a missing, unreadable or malformed file, or a bad ``limit_train``.
    """
    if binarized_dir:
        splits, fixed = load_amat_dir(binarized_dir), True
    else:
        mnist = load_mnist(mnist_dir, source=source, url=url)
        images = np.concatenate([mnist["train"]["image"], mnist["valid"]["image"]])
        n_train = SPLIT_SIZES["train"] * len(images) // 60_000
        splits = {
            "train": images[:n_train],
            "valid": binarize_fixed(images[n_train:], binarize_seed),
            "test": binarize_fixed(mnist["test"]["image"], binarize_seed + 1),
        }
        fixed = False
    if limit_train is not None:
        if not 1 <= limit_train <= len(splits["train"]):
            raise UserError(
                f"config.data.limit_train={limit_train} is out of range: the training split has "
                f"{len(splits['train'])} images. Pass a number from 1 to that, or leave it unset."
            )
        splits["train"] = splits["train"][:limit_train]
    out = {
        name: {"image": images, "index": np.arange(len(images), dtype=np.int32)}
        for name, images in splits.items()
    }
    return out, fixed


def load_amat_dir(directory: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Larochelle & Murray's three ``.amat`` files: ``{split: uint8 (n, 784) of 0 or 255}``."""
    directory = Path(directory).expanduser()
    return {split: read_amat(directory / name) for split, name in AMAT_FILES.items()}


def read_amat(path: Path) -> np.ndarray:
    """One ``.amat`` file: a line per image of 784 whitespace-separated 0/1 values."""
    hint = (
        "config.data.binarized_dir must hold binarized_mnist_train.amat, "
        "binarized_mnist_valid.amat and binarized_mnist_test.amat as Larochelle & Murray "
        "distribute them (a line per image, 784 values of 0 or 1); leave it unset to binarize "
        "MNIST's IDX files instead."
    )
    try:
        text = path.read_bytes()
    except OSError as e:
        raise UserError(f"Cannot read {path} ({e.strerror or e}). {hint}") from e
    try:
        values = np.array(text.split(), dtype=np.float32)
    except ValueError as e:
        raise UserError(f"{path} holds something other than numbers ({e}). {hint}") from e
    lines = len(text.splitlines())
    if values.size == 0 or values.size != lines * NUM_PIXELS:
        raise UserError(
            f"{path} holds {values.size} values on {lines} lines, not {NUM_PIXELS} per line: "
            f"the file is cut short or is not binarized MNIST. {hint}"
        )
    if not np.isin(values, (0.0, 1.0)).all():
        raise UserError(f"{path} holds values other than 0 and 1. {hint}")
    return (values.reshape(lines, NUM_PIXELS) * 255).astype(np.uint8)
