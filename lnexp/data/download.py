"""Command line: fetch the data sets lnexp uses, checked, into the layouts it reads.

usage: python -m lnexp.data.download {mnist,senteval,books} [DIR] [flags]

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

Flags (``--url URL`` and ``--url=URL`` alike) may come before or after the data set and ``DIR``;
a flag of another data set is refused. It prints what was fetched, what was there and what
failed; any failure ends with one ``error:`` paragraph saying what to do, and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from lnexp import cli, flag_kinds
from lnexp.data import gutenberg, mnist, senteval_sources
from lnexp.data.cache import dataset_dir
from lnexp.data.fetch import Report
from lnexp.errors import EXIT_INTERRUPTED, UserError, command_line

_SHOWN_FAILURES = 10  # Failures listed one per line; the rest are counted.


DATASETS = ("mnist", "senteval", "books")
"""The data sets the command fetches, the first argument of its command line."""

_OPTIONS = {"mnist": ("url",), "senteval": ("tasks", "url"), "books": ("url", "list", "pause")}
"""The flags each data set takes."""


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.text(
        "url",
        None,
        f"mnist: a mirror directory URL (default {mnist.DEFAULT_URL}); senteval: a mirror holding "
        "every source file by its name (default: the sources SentEval's script lists); books: "
        f"a book URL template with {{id}} (default {gutenberg.DEFAULT_URL}).",
    )
    flag_kinds.names(
        "tasks",
        list(senteval_sources.TASKS),
        "senteval: comma-separated tasks (default: all of them).",
        senteval_sources.TASKS,
    )
    flag_kinds.path(
        "list",
        None,
        "books: a CSV of id,author,title (default: the shipped list).",
        kind="file",
        must_exist=True,
    )
    flag_kinds.number("pause", gutenberg.PAUSE_S, "books: seconds between requests.", low=0.0)


def parse_arguments(argv: Sequence[str]) -> tuple[str, Path | None]:
    """``[program, DATASET, DIR?]`` -> ``(DATASET, DIR or None)``; a usage error otherwise,
    also for a flag of another data set."""
    args = list(argv[1:])
    if not args:
        raise UserError(
            f"Name the data set to fetch: one of {', '.join(DATASETS)} "
            "(python -m lnexp.data.download mnist [DIR]; see --help)."
        )
    dataset, rest = args[0], args[1:]
    if dataset not in DATASETS:
        raise UserError(
            f"Unknown data set {dataset!r}: the command fetches one of {', '.join(DATASETS)}."
        )
    if len(rest) > 1:
        raise UserError(
            f"Unexpected arguments: {' '.join(rest[1:])}. The command takes a data set and at "
            f"most one directory (python -m lnexp.data.download {dataset} [DIR])."
        )
    if rest:
        try:  # DIR is checked as a flag naming a directory to write is.
            flag_kinds.PathParser("dir", must_exist=False).parse(rest[0])
        except ValueError as e:
            raise UserError(
                f"DIR {rest[0]!r}: {e} (python -m lnexp.data.download {dataset} [DIR])."
            ) from None
    others = [
        f"--{name}"
        for name in ("url", "tasks", "list", "pause")
        if flags.FLAGS[name].present and name not in _OPTIONS[dataset]
    ]
    if others:
        takes = ", ".join(f"--{name}" for name in _OPTIONS[dataset])
        raise UserError(
            f"{', '.join(others)}: not an option of {dataset} (it takes {takes}); see --help."
        )
    return dataset, Path(rest[0]) if rest else None


def run(dataset: str, directory: Path | None = None) -> tuple[Report, Path, str]:
    """Runs one download command with the parsed flags; returns its report, the directory and
    what the things are."""
    FLAGS = flags.FLAGS
    directory = directory if directory is not None else dataset_dir(dataset)
    if dataset == "mnist":
        url = FLAGS.url or mnist.DEFAULT_URL
        return mnist.download_mnist(directory, url), directory, "MNIST files"
    if dataset == "senteval":
        tasks = [t.strip() for t in FLAGS.tasks if t.strip()]
        report = senteval_sources.download_senteval(directory, tasks, url=FLAGS.url)
        return report, directory, "SentEval tasks"
    books = gutenberg.read_book_list(Path(FLAGS.list)) if FLAGS.list else None
    url = FLAGS.url or gutenberg.DEFAULT_URL
    report = gutenberg.download_books(directory, books=books, url=url, pause_s=FLAGS.pause)
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
def main(argv: Sequence[str]) -> int:
    """The command line (``argv``: the program, the data set, maybe DIR; the flags parsed);
    returns the exit status (0, or 2 after an ``error:`` paragraph)."""
    dataset, directory = parse_arguments(argv)
    try:
        report, directory, what = run(dataset, directory)
    except KeyboardInterrupt:
        print("Interrupted; nothing incomplete was kept.", file=sys.stderr)
        return EXIT_INTERRUPTED
    print_report(report, directory, what)
    if report.failed:
        raise UserError(failure_message(dataset, report, directory, what))
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main, takes_arguments=True)
