"""The skip-thought book corpus: public-domain novels fetched from Project Gutenberg.

:data:`BOOK_LIST` (``gutenberg_books.csv`` beside this module, shipped in the package) names 122
novels by eBook number, author and title: the corpus of the project's skip-thought runs, read off
the headers of the releases they were trained on. :func:`download_books` fetches them into
``<Author>/<Title>.txt``, the layout ``configs/skipthought.py`` reads
(:func:`lnexp.data.text.find_books`), as Project Gutenberg distributes them: plain text with its
header and licence around the body, which :mod:`lnexp.data.text` strips.

Politely, as Project Gutenberg asks of programs: from a mirror (:data:`DEFAULT_URL`), one request
at a time with :data:`PAUSE_S` seconds between requests, a User-Agent naming lnexp, and never
twice: books already there are skipped, so running it again fetches only what failed. Each book
is written atomically, and only when it is a Gutenberg plain-text release (it has a
``*** START OF`` line) rather than, say, an error page. When the mirror cannot be reached at all,
the remaining books are not tried. The mirror serves each book's current release, whose header
(and the odd correction) may differ from the releases in a corpus fetched earlier.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
import time
from pathlib import Path

from lnexp.data.fetch import DownloadError, Report, download
from lnexp.errors import UserError

BOOK_LIST = Path(__file__).with_name("gutenberg_books.csv")
DEFAULT_URL = "https://aleph.gutenberg.org/cache/epub/{id}/pg{id}.txt"  # A Gutenberg mirror.
PAUSE_S = 2.0  # Between requests, as Project Gutenberg asks of programs (wget -w 2).

_START = re.compile(rb"^\*\*\* ?START OF", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Book:
    """One Project Gutenberg eBook: its number and where it goes, ``<author>/<title>.txt``."""

    id: int
    author: str
    title: str

    @property
    def relative_path(self) -> Path:
        """``<author>/<title>.txt``, with any ``/`` in the names replaced by ``-``."""
        return Path(self.author.replace("/", "-")) / f"{self.title.replace('/', '-')}.txt"


def read_book_list(path: str | os.PathLike[str] = BOOK_LIST) -> list[Book]:
    """The books of a CSV file with the columns ``id,author,title`` (a header row first).

    Raises:
        UserError: The file cannot be read, lacks a column, or has a row without a whole-number
            id or with an empty author or title.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(
            f"Cannot read the book list {path} ({e}). Pass a UTF-8 CSV file with the columns "
            "id,author,title (see lnexp/data/gutenberg_books.csv)."
        ) from e
    books = []
    for line, row in enumerate(rows, 2):
        try:
            book = Book(int(row["id"]), row["author"].strip(), row["title"].strip())
        except (KeyError, TypeError, ValueError, AttributeError):
            book = None
        if book is None or book.id < 1 or not book.author or not book.title:
            raise UserError(
                f"{path}:{line}: expected a Project Gutenberg eBook number, an author and a "
                f"title (columns id,author,title), got {row}. Fix that row (see "
                "lnexp/data/gutenberg_books.csv for the format)."
            )
        books.append(book)
    if not books:
        raise UserError(
            f"The book list {path} lists no book (a header row id,author,title, then one row per "
            "book; see lnexp/data/gutenberg_books.csv)."
        )
    return books


def check_gutenberg_text(path: Path) -> None:
    """Raises ``ValueError`` unless ``path`` holds a Gutenberg plain-text book."""
    if not _START.search(path.read_bytes()):
        raise ValueError(
            "not a Project Gutenberg plain-text book (it has no '*** START OF' line; an error "
            "page or another file)"
        )


def download_books(
    directory: str | os.PathLike[str],
    *,
    books: list[Book] | None = None,
    url: str = DEFAULT_URL,
    pause_s: float = PAUSE_S,
    progress: bool = True,
) -> Report:
    """Fetches the books missing from ``directory`` as ``<Author>/<Title>.txt``.

    Args:
        directory: The corpus directory; created if needed.
        books: The books (default: :data:`BOOK_LIST`'s).
        url: The URL of a book's plain text, with ``{id}`` for its eBook number.
        pause_s: Seconds between two requests.
        progress: A progress bar over the books (on a terminal).

    Returns:
        The books fetched, already there, and failed (with the reason), as relative paths.

    Raises:
        UserError: ``url`` has no ``{id}``, or ``directory`` cannot be written.
    """
    import tqdm

    if "{id}" not in url:
        raise UserError(
            f"The book URL {url!r} has no {{id}} for the eBook number. Pass a template such as "
            f"{DEFAULT_URL!r}."
        )
    directory = Path(directory).expanduser()
    books = read_book_list() if books is None else books
    report = Report()
    last_request = None
    unreachable = None
    for book in tqdm.tqdm(books, unit="book", desc="books", disable=None if progress else True):
        name = str(book.relative_path)
        dest = directory / book.relative_path
        if dest.is_file():
            report.present.append(name)
            continue
        if unreachable is not None:
            report.failed.append((name, f"not tried: {unreachable}"))
            continue
        if last_request is not None:
            time.sleep(max(0.0, last_request + pause_s - time.monotonic()))
        last_request = time.monotonic()
        book_url = url.replace("{id}", str(book.id))
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            download(book_url, dest, check=check_gutenberg_text, progress=False)
        except DownloadError as e:
            report.failed.append((name, str(e)))
            if e.unreachable:
                unreachable = f"the mirror could not be reached ({e.reason})"
            continue
        except OSError as e:
            raise UserError(
                f"Cannot write {dest} ({e.strerror or e}). Pass a directory you can write to."
            ) from e
        report.fetched.append(name)
    return report
