"""A directory of books as consecutive tokenized sentences, for skip-thought training.

The pipeline, one book (``.txt`` file) at a time::

    bytes -> text            UTF-8 (a BOM dropped, undecodable bytes replaced), CRLF -> LF
          -> body            between the Gutenberg ``*** START OF`` / ``*** END OF`` marker lines
                             when present; otherwise the whole file, with a warning naming it
          -> paragraphs      blank-line separated; hard-wrapped lines joined with spaces
          -> sentences       ``sentencex`` (Wikimedia's rule-based splitter: nothing to download)
          -> tokens          lowercase words (inner apostrophes and hyphens kept) and
                             punctuation marks

Then a vocabulary of the ``vocab_size`` most frequent training words after ``<pad>``, ``<unk>``,
``<eos>``; every sentence truncated at ``max_tokens`` words and ended by ``<eos>``; training
examples are the sentences whose previous and next sentences are in the same book (the
triples never cross books); whole books are held out for validation.

Processing a corpus takes minutes, so the result is cached on disk under a key made of the
contents of every book and the settings: the second run loads it in seconds, and any edit to a
book or a setting builds a new one.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from absl import logging

from lnexp.data.cache import cache_root
from lnexp.errors import UserError

PAD, UNK, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<unk>", "<eos>")
PIPELINE_VERSION = 1  # Part of the cache key: bump when the processing changes.

_START = re.compile(r"^\*\*\* ?START OF", re.MULTILINE)
_END = re.compile(r"^\*\*\* ?END OF", re.MULTILINE)
_TOKEN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*|[^\w\s]")


# --------------------------------------------------------------------------------------------
# Text -> sentences -> tokens.


def book_text(path: Path) -> str:
    """The decoded text of a book file, with ``\\n`` line endings and no BOM."""
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg(text: str, name: str = "<text>") -> str:
    """The body between the ``*** START OF`` and ``*** END OF`` marker lines.

    A missing start (end) marker keeps the text from the beginning (to the end); a text with
    neither is used whole, with a warning naming ``name``.
    """
    start = _START.search(text)
    begin = 0
    if start:
        newline = text.find("\n", start.end())
        begin = len(text) if newline < 0 else newline + 1
    end = _END.search(text, begin)
    if start is None and end is None:
        logging.warning("%s has no Gutenberg *** START OF / *** END OF lines: used whole.", name)
    return text[begin : end.start() if end else len(text)]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs, each with its hard-wrapped lines joined by spaces."""
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        joined = " ".join(block.split())
        if joined:
            out.append(joined)
    return out


def split_sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph (``sentencex``, English rules)."""
    from sentencex import segment

    return [s.strip() for s in segment("en", paragraph) if s.strip()]


def tokenize(sentence: str) -> list[str]:
    """Lowercase word and punctuation tokens: ``"Don't go!"`` -> ``["don't", "go", "!"]``."""
    return _TOKEN.findall(sentence.lower().replace("’", "'"))


def book_sentences(path: Path, name: str | None = None) -> list[list[str]]:
    """The tokenized sentences of one book file, in order (empty sentences dropped)."""
    body = strip_gutenberg(book_text(path), name or str(path))
    sentences = []
    for paragraph in paragraphs(body):
        for sentence in split_sentences(paragraph):
            tokens = tokenize(sentence)
            if tokens:
                sentences.append(tokens)
    return sentences


# --------------------------------------------------------------------------------------------
# Vocabulary and encoding.


class Vocabulary:
    """Words <-> ids; ids 0, 1, 2 are ``<pad>``, ``<unk>``, ``<eos>``.

    Args:
        words: Every entry, the three special tokens first.
    """

    def __init__(self, words: Sequence[str]):
        if tuple(words[:3]) != SPECIALS:
            raise ValueError(f"A vocabulary starts with {SPECIALS}, got {tuple(words[:3])}.")
        self.words = list(words)
        self.ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_counts(cls, counts: collections.Counter, size: int) -> Vocabulary:
        """The ``size`` most frequent words (ties alphabetical) after the special tokens."""
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls([*SPECIALS, *(w for w, _ in ranked[:size] if w not in SPECIALS)])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Iterable[str], max_tokens: int) -> list[int]:
        """Ids of the first ``max_tokens`` tokens (unknown words -> ``<unk>``), then ``<eos>``."""
        ids = [self.ids.get(t, UNK) for t in tokens]
        return [*ids[:max_tokens], EOS]

    def save(self, path: Path) -> None:
        path.write_text("\n".join(self.words) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        return cls(path.read_text(encoding="utf-8").splitlines())


def encode_sentences(
    vocab: Vocabulary, sentences: Sequence[Sequence[str]], max_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> ``(ids, lengths)``: ids ``(n, max_tokens + 1)`` int32 padded with
    ``<pad>``, each row ending in ``<eos>``; lengths count ``<eos>``."""
    ids = np.zeros((len(sentences), max_tokens + 1), np.int32)
    lengths = np.zeros(len(sentences), np.int32)
    for i, tokens in enumerate(sentences):
        row = vocab.encode(tokens, max_tokens)
        ids[i, : len(row)] = row
        lengths[i] = len(row)
    return ids, lengths


def sentence_ids_from_text(
    vocab: Vocabulary, texts: Sequence[str], max_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Raw sentences (any text) -> ``(ids, lengths)`` as :func:`encode_sentences`."""
    return encode_sentences(vocab, [tokenize(t) for t in texts], max_tokens)


# --------------------------------------------------------------------------------------------
# The corpus.


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A tokenized book corpus.

    Attributes:
        vocab: The vocabulary (built from the training books only).
        ids: ``(num_sentences, max_tokens + 1)`` int32 token ids of every sentence of every book,
            book after book.
        lengths: Tokens per sentence, ``<eos>`` included.
        train_centers: Indices into ``ids`` of the training examples: sentences whose previous
            and next sentence are in the same (training) book.
        valid_centers: The same for the validation books.
        stats: Counts (books, sentences, words, ...) for reports.
    """

    vocab: Vocabulary
    ids: np.ndarray
    lengths: np.ndarray
    train_centers: np.ndarray
    valid_centers: np.ndarray
    stats: dict


def find_books(root: str | os.PathLike) -> list[Path]:
    """Every ``.txt`` file under ``root``, sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(
            f"Book directory {root} does not exist. Point config.data.dir at a directory of "
            "books as .txt files (any depth), e.g. --config.data.dir=PATH/books."
        )
    books = sorted(p for p in root.rglob("*.txt") if p.is_file())
    if not books:
        raise UserError(
            f"No .txt files under {root}: the skip-thought corpus is a directory tree of books "
            "as plain-text .txt files. Point config.data.dir at one."
        )
    return books


def split_books(num_books: int, valid_books: int, seed: int) -> np.ndarray:
    """A boolean mask of the books held out for validation (a seeded choice of whole books)."""
    if num_books < 2:
        raise UserError(
            f"The corpus has {num_books} book: at least 2 are needed, one for training and one "
            "held out for validation."
        )
    n = min(max(valid_books, 1), num_books - 1)
    mask = np.zeros(num_books, bool)
    mask[np.random.default_rng(seed).choice(num_books, n, replace=False)] = True
    return mask


def triple_centers(book_sizes: Sequence[int], keep: np.ndarray) -> np.ndarray:
    """Indices of sentences with a previous and a next sentence in the same book, over the books
    where ``keep`` is true (sentences numbered book after book)."""
    centers, start = [], 0
    for size, k in zip(book_sizes, keep, strict=True):
        if k and size >= 3:
            centers.append(np.arange(start + 1, start + size - 1))
        start += size
    return np.concatenate(centers).astype(np.int32) if centers else np.zeros(0, np.int32)


def corpus_key(books: Sequence[Path], root: Path, settings: dict) -> str:
    """A hash of every book's relative path and contents and of the settings."""
    h = hashlib.sha256(json.dumps({**settings, "v": PIPELINE_VERSION}, sort_keys=True).encode())
    for path in books:
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$LNEXP_CACHE`` or ``$XDG_CACHE_HOME/lnexp`` (``~/.cache/lnexp``); see
    :func:`lnexp.data.cache.cache_root`."""
    return cache_root()


def load_corpus(
    data_dir: str | os.PathLike,
    *,
    vocab_size: int = 20_000,
    max_tokens: int = 30,
    valid_books: int = 4,
    split_seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> Corpus:
    """The corpus of every book under ``data_dir``, from the cache when it was built before.

    Args:
        data_dir: A directory tree of ``.txt`` books.
        vocab_size: Words in the vocabulary besides the three special tokens.
        max_tokens: Words kept per sentence (``<eos>`` comes after them).
        valid_books: Whole books held out for validation (at least 1, at most all but 1).
        split_seed: Seed of the choice of validation books.
        cache_dir: Where processed corpora are kept; see :func:`default_cache_dir`.
        show_progress: A progress bar while building.

    Raises:
        UserError: No such directory, no books, fewer than two books, or no training examples.
    """
    root = Path(data_dir).resolve()
    books = find_books(root)
    settings = dict(
        vocab_size=vocab_size, max_tokens=max_tokens, valid_books=valid_books, seed=split_seed
    )
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    path = cache / f"corpus-{corpus_key(books, root, settings)}.npz"
    if path.exists():
        try:
            return _read_cache(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            logging.warning("Rebuilding the corpus: the cache file %s is unreadable (%s).", path, e)
    corpus = _build(root, books, settings, show_progress)
    _write_cache(corpus, path)
    logging.info("Cached the processed corpus in %s.", path)
    return corpus


def _build(root: Path, books: list[Path], settings: dict, show_progress: bool) -> Corpus:
    import tqdm

    per_book = []
    for path in tqdm.tqdm(books, desc="reading books", unit="book", disable=not show_progress):
        per_book.append(book_sentences(path, str(path.relative_to(root))))
    valid = split_books(len(books), settings["valid_books"], settings["seed"])
    counts = collections.Counter(
        t for sents, v in zip(per_book, valid, strict=True) if not v for s in sents for t in s
    )
    vocab = Vocabulary.from_counts(counts, settings["vocab_size"])
    sentences = [s for sents in per_book for s in sents]
    ids, lengths = encode_sentences(vocab, sentences, settings["max_tokens"])
    sizes = [len(s) for s in per_book]
    train_centers = triple_centers(sizes, ~valid)
    valid_centers = triple_centers(sizes, valid)
    if not len(train_centers) or not len(valid_centers):
        raise UserError(
            f"The corpus under {root} gives {len(train_centers)} training and "
            f"{len(valid_centers)} validation examples (sentences with a neighbour on each side "
            "in the same book): it needs more text."
        )
    words = sum(len(s) for s in sentences)
    known = sum(1 for s in sentences for t in s if t in vocab.ids)
    stats = dict(
        books=len(books),
        train_books=int((~valid).sum()),
        validation_books=[str(p.relative_to(root)) for p, v in zip(books, valid, strict=True) if v],
        sentences=len(sentences),
        words=words,
        distinct_words=len(counts),
        vocab_coverage=known / max(words, 1),
        truncated_sentences=int(sum(len(s) > settings["max_tokens"] for s in sentences)),
        train_examples=len(train_centers),
        valid_examples=len(valid_centers),
        **settings,
    )
    return Corpus(vocab, ids, lengths, train_centers, valid_centers, stats)


def _write_cache(corpus: Corpus, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        vocab=np.array(corpus.vocab.words),
        ids=corpus.ids,
        lengths=corpus.lengths,
        train_centers=corpus.train_centers,
        valid_centers=corpus.valid_centers,
        stats=np.array(json.dumps(corpus.stats)),
    )
    tmp.replace(path)  # Atomic: a killed build never leaves a half-written cache.


def _read_cache(path: Path) -> Corpus:
    with np.load(path) as f:
        return Corpus(
            vocab=Vocabulary([str(w) for w in f["vocab"]]),
            ids=f["ids"],
            lengths=f["lengths"],
            train_centers=f["train_centers"],
            valid_centers=f["valid_centers"],
            stats=json.loads(str(f["stats"])),
        )
