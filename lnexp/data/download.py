"""Command line: fetch the data sets lnexp uses, checked, into the layouts it reads.

::

    python -m lnexp.data.download mnist [DIR] [--url URL]
    python -m lnexp.data.download senteval [DIR] [--tasks MR,CR,SUBJ,MPQA,TREC,SICK] [--url URL]
    python -m lnexp.data.download books [DIR] [--url TEMPLATE] [--list FILE] [--pause SECONDS]

``DIR`` defaults to the data set's folder in the data cache (``$LNEXP_DATA/<name>``, else
``~/.cache/lnexp/data/<name>``; :mod:`lnexp.data.cache`), where a training run without
``--config.data.dir`` looks for MNIST. What is there already is kept and not fetched again, so
a command that failed halfway can simply be run again.

* ``mnist``: the four IDX files, each checked against its pinned SHA-256
  (:func:`lnexp.data.mnist.download_mnist`); ``--url``: a mirror directory.
* ``senteval``: SentEval's downstream tasks, from the sources SentEval's own script lists, as
  its ``data/downstream`` layout (:func:`lnexp.data.senteval_sources.download_senteval`), the
  ``--data_dir`` of ``lnexp.studies.skipthought.evaluate``; ``--url``: a mirror holding the source
  files by name.
* ``books``: the project's 122 Project Gutenberg novels as ``<Author>/<Title>.txt``, the
  ``--config.data.dir`` of ``configs/skipthought.py`` (:func:`lnexp.data.gutenberg.download_books`);
  ``--url``: a template with ``{id}``; ``--list``: another CSV of ``id,author,title``.

It prints what was fetched, what was there and what failed; any failure ends with one ``error:``
paragraph saying what to do, and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lnexp.data import gutenberg, mnist, senteval_sources
from lnexp.data.cache import dataset_dir
from lnexp.data.fetch import Report
from lnexp.errors import EXIT_INTERRUPTED, UserError, command_line

_SHOWN_FAILURES = 10  # Failures listed one per line; the rest are counted.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lnexp.data.download",
        description="Fetch a data set lnexp uses into DIR (default: its folder in the data cache, "
        "$LNEXP_DATA/<name> or ~/.cache/lnexp/data/<name>).",
    )
    commands = parser.add_subparsers(
        dest="dataset", required=True, metavar="{mnist,senteval,books}"
    )

    p = commands.add_parser("mnist", help="the four MNIST IDX files, checked by SHA-256")
    p.add_argument("dir", nargs="?", type=Path, help="where the files go")
    p.add_argument("--url", default=mnist.DEFAULT_URL, help="a mirror directory URL")

    p = commands.add_parser("senteval", help="SentEval's downstream tasks (data/downstream)")
    p.add_argument("dir", nargs="?", type=Path, help="SentEval's data/downstream folder")
    p.add_argument(
        "--tasks",
        default=",".join(senteval_sources.TASKS),
        help="comma-separated tasks (default: all of %(default)s)",
    )
    p.add_argument("--url", help="a mirror holding every source file by its name")

    p = commands.add_parser("books", help="Project Gutenberg novels as <Author>/<Title>.txt")
    p.add_argument("dir", nargs="?", type=Path, help="the corpus folder")
    p.add_argument("--url", default=gutenberg.DEFAULT_URL, help="book URL template with {id}")
    p.add_argument("--list", type=Path, help="CSV of id,author,title (default: the shipped list)")
    p.add_argument(
        "--pause", type=float, default=gutenberg.PAUSE_S, help="seconds between requests"
    )
    return parser


def run(args: argparse.Namespace) -> tuple[Report, Path, str]:
    """Runs one download command; returns its report, the directory and what the things are."""
    directory = args.dir if args.dir is not None else dataset_dir(args.dataset)
    if args.dataset == "mnist":
        return mnist.download_mnist(directory, args.url), directory, "MNIST files"
    if args.dataset == "senteval":
        tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
        report = senteval_sources.download_senteval(directory, tasks, url=args.url)
        return report, directory, "SentEval tasks"
    books = gutenberg.read_book_list(args.list) if args.list else None
    report = gutenberg.download_books(directory, books=books, url=args.url, pause_s=args.pause)
    return report, directory, "books"


def failure_message(dataset: str, report: Report, directory: Path, what: str) -> str:
    """The ``error:`` paragraph of a command some of whose downloads failed."""
    total = len(report.fetched) + len(report.present) + len(report.failed)
    first = report.failed[0]
    common = (
        f"{len(report.failed)} of {total} {what} could not be fetched into {directory} (the "
        f"first: {first[0]}: {first[1]}). Nothing incomplete was kept, and what was fetched "
        "stays: running the command again fetches only what is missing."
    )
    if dataset == "senteval":
        return (
            f"{common} If the sources cannot be reached from here, pass --url naming a mirror "
            "that holds the files under their own names (datasmall_NB_ACL12.zip, "
            "train_5500.label, TREC_10.label, sick_train.zip, sick_trial.zip, "
            "sick_test_annotated.zip), or put the task folders into "
            f"{directory} by hand in SentEval's data/downstream layout (e.g. MR/rt-polarity.pos, "
            "TREC/train_5500.label, SICK/SICK_train.txt; SentEval's "
            "data/downstream/get_transfer_data.bash fetches them)."
        )
    return (
        f"{common} If the mirror cannot be reached from here, pass --url with another one "
        f"(a template with {{id}}, e.g. https://www.gutenberg.org/cache/epub/{{id}}/pg{{id}}.txt), "
        f"or put the books into {directory} by hand as <Author>/<Title>.txt (Project Gutenberg "
        "plain text; lnexp/data/gutenberg_books.csv lists their eBook numbers)."
    )


def print_report(report: Report, directory: Path, what: str) -> None:
    print(
        f"{directory}: {len(report.fetched)} {what} fetched, {len(report.present)} already "
        f"there, {len(report.failed)} failed."
    )
    for name, reason in report.failed[:_SHOWN_FAILURES]:
        print(f"  failed: {name}: {reason}")
    if len(report.failed) > _SHOWN_FAILURES:
        print(f"  ... and {len(report.failed) - _SHOWN_FAILURES} more.")


@command_line
def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 after an ``error:`` paragraph)."""
    args = build_parser().parse_args(argv)
    try:
        report, directory, what = run(args)
    except KeyboardInterrupt:
        print("Interrupted; nothing incomplete was kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_report(report, directory, what)
    if report.failed:
        raise UserError(failure_message(args.dataset, report, directory, what))
    return 0


if __name__ == "__main__":
    sys.exit(main())
