"""The book-corpus pipeline (lnexp.data.text) on tiny synthetic books, and on the real ones."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from conftest import story_sentence, write_tiny_books

from lnexp.data import text
from lnexp.errors import UserError


def test_book_text_drops_bom_and_crlf(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes("\ufeffOne line.\r\nTwo.\rThree\r\n".encode())
    assert text.book_text(path) == "One line.\nTwo.\nThree\n"


def test_book_text_survives_invalid_utf8(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"caf\xe9 ok.\n")
    assert text.book_text(path).startswith("caf") and "ok." in text.book_text(path)


def test_strip_gutenberg_keeps_only_the_body():
    raw = (
        "Title page.\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n"
        "Body one.\n\nBody two.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicence."
    )
    assert text.strip_gutenberg(raw) == "Body one.\n\nBody two.\n"


def test_strip_gutenberg_without_markers_warns_and_keeps_all(caplog):
    with caplog.at_level(logging.WARNING):
        assert text.strip_gutenberg("Just text.\n", "My Book (1).txt") == "Just text.\n"
    assert "My Book (1).txt" in caplog.text


def test_strip_gutenberg_with_only_an_end_marker():
    assert text.strip_gutenberg("Body.\n*** END OF IT ***\nLicence") == "Body.\n"


def test_paragraphs_join_hard_wrapped_lines():
    raw = "First line\nof a paragraph.\n\n  \nSecond\n   paragraph here.\n\n\n"
    assert text.paragraphs(raw) == ["First line of a paragraph.", "Second paragraph here."]


def test_split_sentences():
    got = text.split_sentences('He ran home. "Stop!" she cried. Was it Mr. Smith? Yes.')
    assert got == ["He ran home.", '"Stop!" she cried.', "Was it Mr. Smith?", "Yes."]


def test_tokenize_lowercases_and_splits_punctuation():
    got = text.tokenize("“Don’t go,” said old-fashioned O’Brien, _twice_!")
    assert got == [
        "“",
        "don't",
        "go",
        ",",
        "”",
        "said",
        "old-fashioned",
        "o'brien",
        ",",
        "twice",
        "!",
    ]


def test_vocabulary_keeps_most_frequent_with_alphabetical_ties():
    counts = {"b": 5, "a": 5, "c": 9, "d": 1}
    vocab = text.Vocabulary.from_counts(__import__("collections").Counter(counts), 3)
    assert vocab.words == ["<pad>", "<unk>", "<eos>", "c", "a", "b"]
    assert vocab.encode(["c", "d", "a", "b"], max_tokens=3) == [3, text.UNK, 4, text.EOS]


def test_vocabulary_round_trips_through_a_file(tmp_path):
    vocab = text.Vocabulary([*text.SPECIALS, "x", "y"])
    vocab.save(tmp_path / "v.txt")
    assert text.Vocabulary.load(tmp_path / "v.txt").words == vocab.words


def test_encode_sentences_pads_truncates_and_ends_with_eos():
    vocab = text.Vocabulary([*text.SPECIALS, "a", "b"])
    ids, lengths = text.encode_sentences(vocab, [["a"], ["b", "a", "b", "a"], ["zzz"]], 3)
    np.testing.assert_array_equal(ids, [[3, 2, 0, 0], [4, 3, 4, 2], [1, 2, 0, 0]])
    np.testing.assert_array_equal(lengths, [2, 4, 2])


def test_triple_centers_never_cross_books():
    centers = text.triple_centers([4, 2, 3], np.array([True, True, True]))
    np.testing.assert_array_equal(centers, [1, 2, 7])  # Book 2 (2 sentences) has no triple.
    assert len(text.triple_centers([4, 2, 3], np.array([False, True, False]))) == 0


@pytest.fixture
def corpus(tiny_books_dir, tmp_path):
    return text.load_corpus(
        tiny_books_dir, vocab_size=50, valid_books=1, cache_dir=tmp_path, show_progress=False
    )


def test_corpus_of_tiny_books(corpus):
    stats = corpus.stats
    assert stats["books"] == 4 and stats["train_books"] == 3
    assert stats["sentences"] == 4 * 60  # No licence text, no header: markers were honoured.
    vocab = set(corpus.vocab.words)
    assert "licence" not in vocab and "gutenberg" not in vocab
    assert {"anna", "o'clock", "."} <= vocab
    # Every sentence is a whole sentence of the story, in order.
    first = [corpus.vocab.words[i] for i in corpus.ids[0, : corpus.lengths[0] - 1]]
    assert first == text.tokenize(story_sentence(0))


def test_validation_is_whole_books_and_triples_stay_inside_books(corpus):
    book = np.repeat(np.arange(4), 60)  # Book of each sentence.
    for centers in (corpus.train_centers, corpus.valid_centers):
        assert np.all(book[centers - 1] == book[centers])
        assert np.all(book[centers + 1] == book[centers])
    train_books = set(book[corpus.train_centers])
    valid_books = set(book[corpus.valid_centers])
    assert len(valid_books) == 1 and not train_books & valid_books
    assert len(corpus.train_centers) == 3 * 58 and len(corpus.valid_centers) == 58


def test_second_load_comes_from_the_cache(tiny_books_dir, tmp_path, monkeypatch):
    kwargs = dict(vocab_size=50, valid_books=1, cache_dir=tmp_path, show_progress=False)
    first = text.load_corpus(tiny_books_dir, **kwargs)
    monkeypatch.setattr(text, "_build", lambda *a: pytest.fail("rebuilt despite the cache"))
    second = text.load_corpus(tiny_books_dir, **kwargs)
    np.testing.assert_array_equal(first.ids, second.ids)
    assert first.vocab.words == second.vocab.words and first.stats == second.stats


def test_cache_key_changes_with_contents_and_settings(tmp_path):
    books = write_tiny_books(tmp_path / "books", num_books=2)
    paths = text.find_books(books)
    key = text.corpus_key(paths, books, {"vocab_size": 10})
    assert text.corpus_key(paths, books, {"vocab_size": 11}) != key
    with paths[0].open("ab") as f:
        f.write(b"One more sentence.\r\n")
    assert text.corpus_key(paths, books, {"vocab_size": 10}) != key


@pytest.mark.parametrize("damage", ["not a zip", "cut short"])
def test_corrupt_cache_is_rebuilt(tiny_books_dir, tmp_path, damage):
    kwargs = dict(vocab_size=50, valid_books=1, cache_dir=tmp_path, show_progress=False)
    text.load_corpus(tiny_books_dir, **kwargs)
    (cache_file,) = tmp_path.glob("corpus-*.npz")
    whole = cache_file.read_bytes()
    cache_file.write_bytes(b"not a zip file" if damage == "not a zip" else whole[: len(whole) // 2])
    assert text.load_corpus(tiny_books_dir, **kwargs).stats["sentences"] == 240


@pytest.mark.parametrize("case", ["missing", "empty", "one_book"])
def test_unusable_book_directories_are_clear_errors(tmp_path, case):
    root = tmp_path / "books"
    if case == "empty":
        root.mkdir()
        (root / "notes.md").write_text("not a book")
    elif case == "one_book":
        write_tiny_books(root, num_books=1)
    match = {"missing": "does not exist", "empty": "No .txt files", "one_book": "at least 2"}[case]
    with pytest.raises(UserError, match=match):
        text.load_corpus(root, cache_dir=tmp_path / "cache", show_progress=False)


def test_real_books(books_dir, corpus_cache):
    """The shared Gutenberg corpus: headers stripped, sensible sentences (the settings of the
    ':tiny' config, so that the skip-thought test reuses this cache)."""
    corpus = text.load_corpus(
        books_dir, vocab_size=500, valid_books=1, cache_dir=corpus_cache, show_progress=False
    )
    stats = corpus.stats
    assert stats["books"] >= 100 and stats["sentences"] > 300_000
    assert 10 < stats["words"] / stats["sentences"] < 30
    assert 0.7 < stats["vocab_coverage"] < 0.95  # 500 words.
    assert "gutenberg" not in corpus.vocab.ids  # Licences (in all but one book) are stripped.
