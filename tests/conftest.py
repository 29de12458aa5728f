"""Shared fixtures. Real data comes from lnexp's data root: $LNEXP_DATA (CI sets it to
../shared/data), else ~/.cache/lnexp/data, where the first training run downloads MNIST."""

import gzip
import os
import subprocess
import tempfile
from pathlib import Path

# JAX's persistent compilation cache, for this process and the command lines tests start (they
# inherit the environment): many tests compile the same small programs (a resumed run, the same
# tiny config in another test or process), and on 2 cores compiling is most of their time. The
# key is the program, JAX's version and its flags, so a hit is the very executable a compile
# would give. Set before JAX is imported; a developer's own settings win.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(tempfile.gettempdir()) / "lnexp-tests-jax-cache")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The tests' programs are tiny and run a few steps, so with an empty cache compiling is most of
# the suite's time: LLVM's optimization level 0 compiles them about 30 % faster. It changes only
# the machine code XLA:CPU emits, not the HLO passes (fusion, what tests/test_norms.py counts) nor
# what a test asserts; the benchmarks and real runs keep XLA's default. A developer's own
# XLA_FLAGS win (the test processes and the command lines they start inherit these).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import ml_collections
import numpy as np
import pytest

from lnexp import config as config_files
from lnexp.data import cache

REPO = Path(__file__).resolve().parents[1]

# The slowest test files, slowest first (`pytest --durations=0`, summed per file, with an empty
# compilation cache and with a full one). pytest-xdist hands whole files to its workers in
# collection order; had these come last (as their few tests put them by default), one worker
# would still run them while the other waits. Only the order changes: a file missing here
# runs after them, in its usual place.
SLOWEST_FILES = (
    "test_multihost.py",
    "test_preemption.py",
    "test_precision.py",
    "test_train.py",
    "test_docs.py",
    "test_transformer.py",
    "test_skipthought.py",  # Early, so test_text.py later finds the real books' corpus cached.
    "test_faults.py",
    "test_bench.py",
    "test_compare.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: order kept within.


def data_root() -> Path:
    """Where the real data sets live: lnexp's data root (:func:`lnexp.data.cache.data_root`)."""
    return cache.data_root()


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
        write_idx_split(directory, prefix, images, labels)
    return directory


def write_idx_split(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``<prefix>-images-idx3-ubyte.gz`` and ``<prefix>-labels-idx1-ubyte.gz`` in ``directory``."""
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        path = directory / f"{prefix}-{kind}-ubyte.gz"
        path.write_bytes(gzip.compress(idx_bytes(array)))


@pytest.fixture(scope="session")
def tiny_mnist_dir(tmp_path_factory) -> Path:
    """600 training / 100 test images in MNIST's IDX format (shared, read-only)."""
    return write_tiny_mnist(tmp_path_factory.mktemp("tiny_mnist"))


def write_tiny_strokes(directory: Path, n_train: int = 600, n_test: int = 100) -> Path:
    """MNIST IDX files of images that are black but for a bright bar in one of ten places, so
    that a generative model's bound falls far below 784 log 2 within a few steps (the random
    grey images of :func:`write_tiny_mnist` are close to that bound from the start)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28), np.uint8)
        for image, label in zip(images, labels, strict=True):
            image[4 + 2 * label : 7 + 2 * label, 6:22] = rng.integers(200, 256)
        write_idx_split(directory, prefix, images, labels)
    return directory


@pytest.fixture(scope="session")
def tiny_strokes_dir(tmp_path_factory) -> Path:
    """600 training / 100 test mostly black images in MNIST's IDX format (shared, read-only)."""
    return write_tiny_strokes(tmp_path_factory.mktemp("tiny_strokes"))


def load_config(name: str, variant: str | None = None, /, **overrides) -> ml_collections.ConfigDict:
    """``configs/<name>.py[:variant]`` through lnexp's one loader (:func:`lnexp.config.load_config`:
    unknown keys are errors); a keyword ``a__b=v`` is the override ``a.b=v``."""
    path = f"{REPO / 'configs' / name}.py" + (f":{variant}" if variant else "")
    return config_files.load_config(path, {k.replace("__", "."): v for k, v in overrides.items()})


GUTENBERG_HEAD = (
    "The Project Gutenberg eBook of {title}\n\nLicence text.\n\n"
    "*** START OF THE PROJECT GUTENBERG EBOOK {title} ***\n"
)
GUTENBERG_TAIL = (
    "\n*** END OF THE PROJECT GUTENBERG EBOOK {title} ***\n\nMore licence text. Donate.\n"
)
NAMES = ["anna", "ben", "cora", "dan", "eve", "finn"]
VERBS = ["sees", "helps", "calls", "meets"]


def story_sentence(i: int) -> str:
    """Sentence ``i`` of a deterministic story: each sentence predicts its neighbours."""
    return f"{NAMES[i % 6].title()} {VERBS[i % 4]} {NAMES[(i + 1) % 6]} at {i % 5} o'clock."


def write_tiny_books(directory: Path, num_books: int = 4, sentences: int = 60) -> Path:
    """A tree of Gutenberg-style books: CRLF, a BOM, hard-wrapped paragraphs, markers around
    the body (the last book has none), names with spaces, commas and parentheses."""
    for b in range(num_books):
        author = directory / f"Author {b}, A. (Anon)"
        author.mkdir(parents=True, exist_ok=True)
        title = f"Book {b} (vol. {b})"
        body = []
        for p in range(0, sentences, 3):
            paragraph = " ".join(story_sentence(b * 7 + i) for i in range(p, p + 3))
            words = paragraph.split()
            body.append("\n".join(" ".join(words[k : k + 7]) for k in range(0, len(words), 7)))
        text = "\n\n".join(body)
        if b < num_books - 1:
            text = (
                GUTENBERG_HEAD.format(title=title)
                + "\n"
                + text
                + "\n"
                + GUTENBERG_TAIL.format(title=title)
            )
        data = ("\ufeff" + text).replace("\n", "\r\n").encode("utf-8")
        (author / f"{title}.txt").write_bytes(data)
    return directory


@pytest.fixture(scope="session")
def tiny_books_dir(tmp_path_factory) -> Path:
    """Four tiny books (shared, read-only)."""
    return write_tiny_books(tmp_path_factory.mktemp("tiny_books"))


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """One corpus cache for the test run, so the real books are processed once: shared by the
    run's pytest-xdist workers (their run id names it), new for every run."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        return tmp_path_factory.mktemp("corpus_cache")
    path = Path(tempfile.gettempdir()) / f"lnexp-tests-corpus-{run}"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def books_dir() -> Path:
    """The real book corpus; skips the test when it is not there."""
    path = data_root() / "books"
    if not path.is_dir():
        pytest.skip(f"real books not found at {path} (set LNEXP_DATA to the data directory)")
    return path


@pytest.fixture
def scale_only_norm(monkeypatch) -> str:
    """A new normalization added the one way lnexp allows: an entry of lnexp.norms.REGISTRY.

    ``'scale_only'`` is a hypothetical layer norm with a gain and no bias, ``g * (a - mu) /
    sigma``; the tests that use it show that the layers, the models, the configs and the
    training loop pick it up with no other change. The registry is restored after the test.
    """
    import functools

    from lnexp import norms

    entry = norms.NormMethod(
        "scale_only",
        norms.SUMMED_INPUTS,
        functools.partial(norms.LayerNorm, use_bias=False),
        hyperparameters=("epsilon",),
        recurrent=True,
    )
    monkeypatch.setitem(norms.REGISTRY, entry.name, entry)
    return entry.name


def wait_all(processes: list[subprocess.Popen], timeout_s: float) -> None:
    """Waits for every process; kills (and reaps) those still running when a wait fails."""
    try:
        for process in processes:
            process.wait(timeout=timeout_s)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
