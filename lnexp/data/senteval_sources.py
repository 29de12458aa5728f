"""SentEval's downstream data sets, fetched from the sources SentEval's own script lists.

SentEval's ``data/downstream/get_transfer_data.bash`` downloads every task from its distributor;
:func:`download_senteval` fetches the same files for the tasks lnexp evaluates (:data:`TASKS`)
and lays them out as that script does, in the ``data/downstream`` layout that
:mod:`lnexp.data.senteval` (and so ``lnexp.studies.skipthought.evaluate --data_dir``) reads:

* MR, CR, SUBJ, MPQA: ``datasmall_NB_ACL12.zip`` (Wang & Manning's data, on SentEval's S3
  bucket): its ``data/rt10662/rt-polarity.pos|neg``, ``data/customerr/custrev.pos|neg``,
  ``data/subj/subj.objective|subjective`` and ``data/mpqa/mpqa.pos|neg`` become
  ``MR/rt-polarity.pos|neg``, ``CR/custrev.pos|neg``, ``SUBJ/...`` and ``MPQA/...``.
* TREC: ``train_5500.label`` and ``TREC_10.label`` (Li & Roth, from cogcomp; the site's new
  address as a fallback) become ``TREC/train_5500.label`` and ``TREC/TREC_10.label``, with
  backquotes and apostrophes removed as SentEval's script removes them.
* SICK: ``sick_train.zip``, ``sick_trial.zip`` and ``sick_test_annotated.zip`` (SemEval 2014
  task 1) hold ``SICK_train.txt``, ``SICK_trial.txt`` and ``SICK_test_annotated.txt``, which
  go into ``SICK/``.

Unlike SentEval's script, sentences are kept as distributed: it runs the binary sets through a
PTB-style sed tokenizer and the SICK sentences through Moses, and lnexp tokenizes every sentence
itself (:func:`lnexp.data.text.tokenize`).

Each archive is checked whole before it is used (a truncated download is refused). Each task is
assembled in a temporary folder (``.lnexp-download-*``, removed at the end, or by a later run
if the command was killed), read back with :mod:`lnexp.data.senteval`'s loaders, and only then
moved into place file by file, each atomically; tasks whose files are all there already are
skipped. ``url`` replaces every source by ``<url>/<file name>`` (a lab's mirror, or tests).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
from collections.abc import Sequence
from pathlib import Path

from lnexp.data import senteval
from lnexp.data.fetch import STALE_PART_S, DownloadError, Report, download, join_url
from lnexp.errors import UserError

TASKS = ("MR", "CR", "SUBJ", "MPQA", "TREC", "SICK")

_BINARY_ZIP = "datasmall_NB_ACL12.zip"
_TREC = ("http://cogcomp.cs.illinois.edu/Data/QA/QC/", "https://cogcomp.seas.upenn.edu/Data/QA/QC/")
_SICK = "http://alt.qcri.org/semeval2014/task1/data/uploads/"


@dataclasses.dataclass(frozen=True)
class Source:
    """A file to download: its ``name`` (also its name under a mirror ``url``) and the URLs to
    try, in order."""

    name: str
    urls: tuple[str, ...]


SOURCES = {
    source.name: source
    for source in (
        Source(_BINARY_ZIP, (f"https://s3.amazonaws.com/senteval/senteval_data/{_BINARY_ZIP}",)),
        Source("train_5500.label", tuple(join_url(u, "train_5500.label") for u in _TREC)),
        Source("TREC_10.label", tuple(join_url(u, "TREC_10.label") for u in _TREC)),
        Source("sick_train.zip", (join_url(_SICK, "sick_train.zip"),)),
        Source("sick_trial.zip", (join_url(_SICK, "sick_trial.zip"),)),
        Source("sick_test_annotated.zip", (join_url(_SICK, "sick_test_annotated.zip"),)),
    )
}

# Task -> its files: (file in the task folder, source name, member of the archive or None).
TASK_FILES: dict[str, tuple[tuple[str, str, str | None], ...]] = {
    "MR": (
        ("rt-polarity.pos", _BINARY_ZIP, "data/rt10662/rt-polarity.pos"),
        ("rt-polarity.neg", _BINARY_ZIP, "data/rt10662/rt-polarity.neg"),
    ),
    "CR": (
        ("custrev.pos", _BINARY_ZIP, "data/customerr/custrev.pos"),
        ("custrev.neg", _BINARY_ZIP, "data/customerr/custrev.neg"),
    ),
    "SUBJ": (
        ("subj.objective", _BINARY_ZIP, "data/subj/subj.objective"),
        ("subj.subjective", _BINARY_ZIP, "data/subj/subj.subjective"),
    ),
    "MPQA": (
        ("mpqa.pos", _BINARY_ZIP, "data/mpqa/mpqa.pos"),
        ("mpqa.neg", _BINARY_ZIP, "data/mpqa/mpqa.neg"),
    ),
    "TREC": (
        ("train_5500.label", "train_5500.label", None),
        ("TREC_10.label", "TREC_10.label", None),
    ),
    "SICK": (
        ("SICK_train.txt", "sick_train.zip", "SICK_train.txt"),
        ("SICK_trial.txt", "sick_trial.zip", "SICK_trial.txt"),
        ("SICK_test_annotated.txt", "sick_test_annotated.zip", "SICK_test_annotated.txt"),
    ),
}

_TREC_LINE = re.compile(rb"^[A-Z]+:\S+ ")
_WORK_PREFIX = ".lnexp-download-"  # Temporary folders in the target directory.


def download_senteval(
    directory: str | os.PathLike[str],
    tasks: Sequence[str] = TASKS,
    *,
    url: str | None = None,
    progress: bool = True,
) -> Report:
    """Fetches the SentEval ``tasks`` missing from ``directory`` (SentEval's ``data/downstream``).

    Args:
        directory: Where the task folders go; created if needed.
        tasks: Task names from :data:`TASKS`.
        url: A mirror holding every source file under its own name; ``None``: the original
            sources (SentEval's script's).
        progress: Progress bars (on a terminal).

    Returns:
        The tasks fetched, already there, and failed (with the reasons).

    Raises:
        UserError: An unknown task, or ``directory`` cannot be written.
    """
    tasks = [t.upper() for t in tasks]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise UserError(
            f"Unknown SentEval task(s) {unknown or list(tasks)}: lnexp fetches {', '.join(TASKS)}. "
            "Pass some of these (e.g. --tasks MR,SUBJ,TREC,SICK), or leave --tasks out for all."
        )
    directory = Path(directory).expanduser()
    report = Report()
    pending = []
    for task in dict.fromkeys(tasks):
        if all((directory / task / f).is_file() for f, _, _ in TASK_FILES[task]):
            report.present.append(task)
        else:
            pending.append(task)
    if not pending:
        return report
    _remove_stale_work_dirs(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=_WORK_PREFIX, dir=directory))
    except OSError as e:
        raise UserError(
            f"Cannot write into {directory} ({e.strerror or e}). Pass a directory you can write to."
        ) from e
    try:
        needed = dict.fromkeys(s for t in pending for _, s, _ in TASK_FILES[t])
        downloaded, problems = {}, {}
        unreachable: set[str] = set()
        for name in needed:
            try:
                downloaded[name] = _fetch(name, work, url, progress, unreachable)
            except DownloadError as e:
                problems[name] = e.reason
        for task in pending:
            failed = [f"{s}: {problems[s]}" for s in _task_sources(task) if s in problems]
            if failed:
                report.failed.append((task, "; ".join(failed)))
                continue
            try:
                _assemble(task, downloaded, work, directory)
            except (UserError, ValueError) as e:
                report.failed.append((task, str(e)))
                continue
            report.fetched.append(task)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _remove_stale_work_dirs(directory: Path) -> None:
    """Removes the temporary folders of commands that were killed a while ago."""
    for old in directory.glob(f"{_WORK_PREFIX}*"):
        try:
            if time.time() - old.stat().st_mtime > STALE_PART_S:
                shutil.rmtree(old)
        except OSError:
            pass  # Gone already, or not ours to remove: nothing reads it either way.


def _task_sources(task: str) -> list[str]:
    return list(dict.fromkeys(s for _, s, _ in TASK_FILES[task]))


def _fetch(name: str, work: Path, url: str | None, progress: bool, unreachable: set[str]) -> Path:
    """Downloads source ``name`` into ``work`` from the first URL that serves it intact; skips
    hosts found unreachable before (their names in ``unreachable``).

    Raises:
        DownloadError: Every URL failed; ``reason`` lists them.
    """
    urls = (join_url(url, name),) if url else SOURCES[name].urls
    members = [m for task in TASK_FILES.values() for _, s, m in task if s == name and m]
    dest = work / name

    def check(path: Path) -> None:
        if members:
            _extract(path, members)
        else:
            _check_trec(path)

    failures = []
    for file_url in urls:
        host = urllib.parse.urlsplit(file_url).netloc
        if host in unreachable:
            failures.append(f"{file_url}: not tried ({host} could not be reached)")
            continue
        try:
            download(file_url, dest, check=check, progress=progress, desc=name)
            return dest
        except DownloadError as e:
            failures.append(str(e))
            if e.unreachable:
                unreachable.add(host)
        except OSError as e:
            raise UserError(
                f"Cannot write into {work.parent} ({e.strerror or e}). Pass a directory you can "
                "write to."
            ) from e
    raise DownloadError(name, "; ".join(failures))


def _check_trec(path: Path) -> None:
    first = path.read_bytes().lstrip()[:200]
    if not _TREC_LINE.match(first):
        raise ValueError(
            f"not a TREC label file (it starts with {first[:40]!r}, not 'LABEL:fine question')"
        )


def _extract(archive: Path, members: Sequence[str]) -> dict[str, bytes]:
    """The contents of ``members`` of a zip or tar archive (a member may also be found as the one
    path ending with ``/member``); ``ValueError`` if the archive is damaged or lacks one."""
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                if bad is not None:
                    raise ValueError(f"damaged archive: its member {bad} fails its CRC check")
                names = z.namelist()
                return {m: z.read(_find_member(names, m)) for m in members}
        with tarfile.open(archive) as t:
            names = [m.name for m in t.getmembers() if m.isfile()]
            out = {}
            for m in members:
                f = t.extractfile(_find_member(names, m))
                assert f is not None
                out[m] = f.read()
            return out
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(
            f"not a complete zip or tar archive (truncated or corrupt: {type(e).__name__}: {e})"
        ) from e


def _find_member(names: list[str], member: str) -> str:
    if member in names:
        return member
    matches = [n for n in names if n.endswith("/" + member) and "__MACOSX" not in n]
    if len(matches) != 1:
        raise ValueError(f"the archive holds no {member}")
    return matches[0]


def _assemble(task: str, downloaded: dict[str, Path], work: Path, directory: Path) -> None:
    """Writes ``task``'s files into ``work/task``, reads them back with lnexp's loaders, then
    moves them into ``directory/task``, each atomically."""
    staging = work / task
    staging.mkdir()
    for filename, source, member in TASK_FILES[task]:
        path = downloaded[source]
        data = path.read_bytes() if member is None else _extract(path, [member])[member]
        if task == "TREC":
            data = data.replace(b"`", b"").replace(b"'", b"")  # As SentEval's script does.
        (staging / filename).write_bytes(data)
    _check_task(task, staging)
    target = directory / task
    target.mkdir(exist_ok=True)
    for filename, _, _ in TASK_FILES[task]:
        os.replace(staging / filename, target / filename)


def _check_task(task: str, folder: Path) -> None:
    """Reads a task folder as lnexp.studies.skipthought.evaluate will; ``ValueError`` if it is
    empty or unreadable."""
    if task == "TREC":
        data = senteval.load_trec(folder)
        sizes = [len(data.sentences), len(data.test_sentences or [])]
    elif task == "SICK":
        sizes = [len(a) for a, _, _ in senteval.load_sick(folder).splits.values()]
    else:
        labels = senteval.load_binary(folder).labels
        sizes = [int((labels == 1).sum()), int((labels == 0).sum())]
    if min(sizes) == 0:
        raise ValueError(f"{task}: a file holds no examples (sizes {sizes})")
