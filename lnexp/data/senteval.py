"""SentEval's downstream data sets, read from its standard ``data/downstream`` layout.

* Binary classification (``MR``, ``CR``, ``SUBJ``, ``MPQA`` and any folder laid out like them):
  two files of one sentence per line, the positive class first.
* ``TREC``: ``train_5500.label`` and ``TREC_10.label``, ``LABEL:fine question`` per line; the
  coarse label (before ``:``) is the class.
* ``SICK`` (relatedness): ``SICK_train.txt``, ``SICK_trial.txt``, ``SICK_test_annotated.txt``,
  tab-separated with a header row naming the columns.

Files are read as they come: UTF-8 when they decode as such, else latin-1 (SentEval's
encoding); ``\\r\\n`` endings; blank or whitespace-only lines are kept as (empty) sentences, as
SentEval keeps them, so a line's index is its example's index.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from lnexp.errors import UserError

# Binary tasks: (positive file, negative file). Any other folder with exactly one ``*.pos``
# and one ``*.neg`` file is read the same way.
BINARY_FILES = {
    "MR": ("rt-polarity.pos", "rt-polarity.neg"),
    "CR": ("custrev.pos", "custrev.neg"),
    "SUBJ": ("subj.objective", "subj.subjective"),
    "MPQA": ("mpqa.pos", "mpqa.neg"),
}
TREC_CLASSES = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


def read_lines(path: Path) -> list[str]:
    """The lines of a text file, decoded (UTF-8, else latin-1), without line endings; blank
    lines kept, a final newline not counted as an extra line."""
    if not path.is_file():
        raise UserError(f"{path} is missing: SentEval data is expected in its standard layout.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    # Split on \n only: str.splitlines would also split on \x85, \x0c, ... inside sentences.
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


@dataclasses.dataclass(frozen=True)
class Classification:
    """Sentences and integer labels; ``test_*`` is ``None`` for cross-validated tasks."""

    sentences: list[str]
    labels: np.ndarray
    classes: tuple[str, ...]
    test_sentences: list[str] | None = None
    test_labels: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Relatedness:
    """Sentence pairs with a relatedness score in ``[1, 5]`` per split."""

    splits: dict[str, tuple[list[str], list[str], np.ndarray]]  # name -> (a, b, score)


def binary_files(task_dir: Path) -> tuple[Path, Path]:
    """The (positive, negative) files of a binary task folder."""
    known = BINARY_FILES.get(task_dir.name.upper())
    if known and all((task_dir / f).is_file() for f in known):
        return task_dir / known[0], task_dir / known[1]
    pos, neg = sorted(task_dir.glob("*.pos")), sorted(task_dir.glob("*.neg"))
    if len(pos) == 1 and len(neg) == 1:
        return pos[0], neg[0]
    expected = " and ".join(known) if known else "one *.pos and one *.neg file"
    raise UserError(f"{task_dir} is not a binary SentEval task folder: expected {expected}.")


def load_binary(task_dir: Path) -> Classification:
    pos_file, neg_file = binary_files(task_dir)
    pos, neg = read_lines(pos_file), read_lines(neg_file)
    labels = np.r_[np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)]
    return Classification(pos + neg, labels, ("negative", "positive"))


def _read_trec(path: Path) -> tuple[list[str], list[str]]:
    sentences, labels = [], []
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue  # TREC's blank lines hold no question and no label.
        label, _, question = line.strip().partition(" ")
        coarse = label.split(":")[0]
        if coarse not in TREC_CLASSES:
            raise UserError(f"{path}:{n}: expected 'LABEL:fine question', got {line[:60]!r}.")
        sentences.append(question)
        labels.append(coarse)
    return sentences, labels


def load_trec(task_dir: Path) -> Classification:
    train, train_labels = _read_trec(task_dir / "train_5500.label")
    test, test_labels = _read_trec(task_dir / "TREC_10.label")
    index = {c: i for i, c in enumerate(TREC_CLASSES)}
    return Classification(
        train,
        np.array([index[c] for c in train_labels]),
        TREC_CLASSES,
        test,
        np.array([index[c] for c in test_labels]),
    )


def _read_sick(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    lines = read_lines(path)
    if not lines:
        raise UserError(f"{path} is empty.")
    header = lines[0].split("\t")
    try:
        a, b, s = (header.index(c) for c in ("sentence_A", "sentence_B", "relatedness_score"))
    except ValueError:
        raise UserError(
            f"{path}: the header row must name sentence_A, sentence_B and relatedness_score "
            f"columns, got {header}."
        ) from None
    first, second, scores = [], [], []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            first.append(fields[a])
            second.append(fields[b])
            scores.append(float(fields[s]))
        except (IndexError, ValueError):
            raise UserError(f"{path}:{n}: cannot read this row: {line[:80]!r}.") from None
    return first, second, np.array(scores)


def load_sick(task_dir: Path) -> Relatedness:
    files = {
        "train": "SICK_train.txt",
        "trial": "SICK_trial.txt",
        "test": "SICK_test_annotated.txt",
    }
    return Relatedness({name: _read_sick(task_dir / f) for name, f in files.items()})
