"""A directory of books as one stream of characters, for character-level language models.

Each book is read as the skip-thought corpus reads it (:mod:`lnexp.data.text`: UTF-8, the
Gutenberg header and licence cut off, hard-wrapped lines joined), one paragraph per line; the
books are joined with a blank line between them. The same whole books are held out for
validation as in the skip-thought corpus (:func:`lnexp.data.text.split_books` with the same
count and seed), so the two experiments never train on each other's validation text.

The vocabulary is every character of the training books; id 0 stands for any character that is
not in it (one seen only in the validation books, or in a prompt)::

    >>> chars = vocabulary("abca")
    >>> chars
    'abc'
    >>> encode("cab?", chars).tolist()
    [3, 1, 2, 0]
    >>> decode([3, 1, 2, 0], chars)
    'cab\ufffd'
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lnexp.data.text import book_text, find_books, paragraphs, split_books, strip_gutenberg
from lnexp.errors import UserError

UNKNOWN = 0
"""The id of every character outside the vocabulary."""

UNKNOWN_CHAR = "\ufffd"
"""What :func:`decode` writes for :data:`UNKNOWN`."""


@dataclasses.dataclass(frozen=True)
class CharCorpus:
    """The training and validation books as character ids.

    Attributes:
        chars: The vocabulary: id ``i + 1`` is ``chars[i]`` (id 0 is :data:`UNKNOWN`).
        train_ids: ``int32`` ids of the training books, one after the other.
        valid_ids: The same for the validation books.
        stats: Counts (books, characters, vocabulary, unknown characters) for reports.
    """

    chars: str
    train_ids: np.ndarray
    valid_ids: np.ndarray
    stats: dict

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1


def book_body(path: Path, name: str | None = None) -> str:
    """A book's text without the Gutenberg header and licence, one paragraph per line."""
    return "\n".join(paragraphs(strip_gutenberg(book_text(path), name or str(path))))


def vocabulary(text: str) -> str:
    """The distinct characters of ``text``, sorted by code point."""
    return "".join(sorted(set(text)))


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def encode(text: str, chars: str) -> np.ndarray:
    """``int32`` ids of ``text``'s characters (:data:`UNKNOWN` for those not in ``chars``)."""
    table = _code_points(chars)
    points = _code_points(text)
    pos = np.minimum(np.searchsorted(table, points), max(len(table) - 1, 0))
    known = table[pos] == points if len(table) else np.zeros(len(points), bool)
    return np.where(known, pos + 1, UNKNOWN).astype(np.int32)


def decode(ids: Iterable[int], chars: str) -> str:
    """The text of ``ids`` (:data:`UNKNOWN_CHAR` for :data:`UNKNOWN`)."""
    return "".join(chars[i - 1] if 0 < i <= len(chars) else UNKNOWN_CHAR for i in ids)


def load_char_corpus(
    data_dir: str | os.PathLike, *, valid_books: int = 4, split_seed: int = 0
) -> CharCorpus:
    """Every book under ``data_dir`` as characters, split into training and validation books.

    Args:
        data_dir: A directory tree of ``.txt`` books.
        valid_books: Whole books held out for validation (as the skip-thought corpus's).
        split_seed: Seed of the choice of validation books (as the skip-thought corpus's).

    Raises:
        UserError: No such directory, no books, fewer than two books, or empty training text.
    """
    root = Path(data_dir).resolve()
    books = find_books(root)
    held_out = split_books(len(books), valid_books, split_seed)
    bodies = [book_body(p, str(p.relative_to(root))) for p in books]
    train_text = "\n\n".join(b for b, v in zip(bodies, held_out, strict=True) if not v)
    valid_text = "\n\n".join(b for b, v in zip(bodies, held_out, strict=True) if v)
    if not train_text or not valid_text:
        split = "validation" if train_text else "training"
        raise UserError(
            f"The books under {root} hold no text in the {split} split once the Gutenberg "
            "headers are cut off: check that the .txt files are books."
        )
    chars = vocabulary(train_text)
    train_ids, valid_ids = encode(train_text, chars), encode(valid_text, chars)
    stats = dict(
        books=len(books),
        valid_books=int(held_out.sum()),
        train_chars=len(train_ids),
        valid_chars=len(valid_ids),
        vocab_size=len(chars) + 1,
        valid_unknown_chars=int(np.sum(valid_ids == UNKNOWN)),
    )
    return CharCorpus(chars, train_ids, valid_ids, stats)
