"""Faults of the disk, and the noise a failed save or restore leaves behind.

Faults of the disk are the user's to fix and are reported as such: a checkpoint, config or
record that cannot be written (a full or read-only filesystem) is a :class:`UserError` naming the
workdir, what failed and the space a checkpoint takes (:func:`disk_errors_reported`); earlier
checkpoints stay intact, and orbax's temporary directories of a save cut short are removed when
the checkpoints are next opened for saving (:class:`lnexp.training.checkpoints.Checkpoints`).

Orbax reports such a fault from its background threads, with tracebacks, and the reads and
writes still in flight after a failed restore or save log theirs: the filters here drop those
(:func:`quiet_orbax_disk_errors`, :func:`quiet_restore_stragglers`), so that the run reports the
fault once, as one error paragraph or one warning line (:func:`first_line`).
"""

from __future__ import annotations

import contextlib
import errno
import logging as pylogging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from absl import logging

from lnexp.errors import UserError, first_line

if TYPE_CHECKING:
    from lnexp.training.run_dir import RunDir


@contextlib.contextmanager
def disk_errors_reported(run_dirs: Sequence[RunDir], what: str = "") -> Iterator[None]:
    """Turns a write that failed for lack of space or permission (``ENOSPC``, ``EROFS``,
    ``EACCES``, ..., raw or wrapped by orbax/tensorstore) into one :class:`UserError` naming the
    workdir, what could not be written and the size of a checkpoint."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        # Only writes into a run directory (not, say, unreadable data elsewhere).
        inside = [r for r in run_dirs if _mentions(e, r.path)]
        if not is_disk_error(e) or not inside:
            raise
        run = inside[0]
        steps = run.checkpoint_steps()
        size = _disk_size(run.checkpoint_dir / str(steps[-1])) if steps else None
        name = what or (f"{e.filename}" if getattr(e, "filename", None) else "a file")
        raise UserError(disk_message(run.path, name, e, size, None)) from None


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_CAUSES = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "File too large",
)
_DISK_WORDS = (
    "RESOURCE_EXHAUSTED",
    "No space left",
    "Read-only file system",
    "Permission denied",
    "PERMISSION_DENIED",
    "Disk quota",
    "File too large",
)


def _mentions(error: BaseException | None, path: Path) -> bool:
    """Whether ``error`` (or what it wraps) names a file under ``path``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names = [getattr(error, "filename", None), getattr(error, "filename2", None), str(error)]
        if any(name is not None and str(path) in str(name) for name in names):
            return True
        error = error.__cause__ or error.__context__
    return False


def is_disk_error(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it wraps) is a write refused by the filesystem."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
            return True
        if any(word in str(error) for word in _DISK_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_message(
    workdir: Path, what: str, error: BaseException, nbytes: int | None, keep: int | None
) -> str:
    """The error paragraph of a write into ``workdir`` refused by the filesystem: ``what``
    failed, why, and (given the size ``nbytes`` of a checkpoint and how many are kept) the free
    space the checkpoints need."""
    text = str(error)
    known = [w for w in _CAUSES if w in text]
    cause = getattr(error, "strerror", None) or (known[0] if known else first_line(error))
    if nbytes:
        kept = f", {keep} of them kept plus the one being written" if keep else ""
        need = nbytes * ((keep or 0) + 1)
        size = (
            f" A checkpoint of this run takes about {nbytes / 1e6:.2f} MB{kept}: leave at least "
            f"{need / 1e6:.2f} MB free for the checkpoints (and some for the records)."
        )
    else:
        size = ""
    return (
        f"Cannot write to the workdir {workdir}: {what} could not be written ({cause}).{size} "
        "The earlier checkpoints are intact: free some space (or make the workdir writable, or "
        "choose a --workdir elsewhere) and rerun the same command to resume from the last one."
    )


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _DiskErrorsOfOrbax(pylogging.Filter):
    """Drops orbax's own reports (with tracebacks, from its background threads) of a write
    refused by the filesystem: the run reports it as one error paragraph."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        if "orbax" not in record.pathname or not record.exc_info:
            return True
        return not is_disk_error(record.exc_info[1])


def quiet_orbax_disk_errors() -> None:
    """Drops orbax's own tracebacks of a write refused by the filesystem (from then on)."""
    logger = pylogging.getLogger("absl")
    if not any(isinstance(f, _DiskErrorsOfOrbax) for f in logger.filters):
        logger.addFilter(_DiskErrorsOfOrbax())


class _StragglersOfAFault(pylogging.Filter):
    """Drops the tracebacks that orbax's background threads and asyncio log after a save or
    restore has failed (the failure itself is reported once, as a warning or an error)."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        from_async = "orbax" in record.pathname or record.name == "asyncio"
        return not (from_async and (record.exc_info or "never retrieved" in record.getMessage()))


def quiet_restore_stragglers() -> None:
    """After a failed restore or save, tensorstore's other reads or writes of it still complete,
    into the event loop that orbax has closed by then: Python reports each as an unraisable
    'Event loop is closed' traceback, and orbax's threads and asyncio log theirs. Those (only
    those: records with a traceback from orbax or asyncio) are dropped from then on."""
    handlers = [*pylogging.getLogger().handlers, logging.get_absl_handler()]
    for handler in handlers:
        if not any(isinstance(f, _StragglersOfAFault) for f in handler.filters):
            handler.addFilter(_StragglersOfAFault())
    previous = sys.unraisablehook
    if getattr(previous, "lnexp_quiet", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.lnexp_quiet = True
    sys.unraisablehook = hook
