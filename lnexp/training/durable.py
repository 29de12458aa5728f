"""Writing a run's files so that a crash (a kill, a power cut, a full disk) leaves each one
whole: the old version or the new one, never a mix (:func:`write_atomically`), or, for the
records appended every epoch, at most the record being written torn (:func:`append_line`).

Both flush the data to the disk (``fsync``) before they return, as orbax does for the
checkpoints: a checkpoint is never on the disk while the record written before it is still only
in the page cache.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, text: str, *, shared: bool = False) -> None:
    """Replaces ``path`` by ``text`` (UTF-8): written beside it, synced, then renamed over it.

    ``shared``: several processes may write ``path`` at once (a grid's report), so each writes
    its own temporary file (:func:`shared_temporary`) and the last rename wins whole.
    """
    tmp = shared_temporary(path) if shared else path.with_name(f"{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    replace_synced(tmp, path)


def shared_temporary(path: Path) -> Path:
    """Where this process writes a new ``path`` that other processes may write too: beside it,
    named by the pid, to be renamed over it by :func:`replace_synced`."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def replace_synced(tmp: Path, path: Path) -> None:
    """Renames ``tmp`` (a finished file that a writer closed) over ``path``, synced first."""
    with tmp.open("rb+") as f:
        os.fsync(f.fileno())
    tmp.replace(path)
    _sync_directory(path.parent)


def append_line(path: Path, line: str) -> None:
    """Appends ``line`` and a newline to ``path`` (UTF-8), synced before it returns."""
    with path.open("a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def _sync_directory(directory: Path) -> None:
    """Makes a rename in ``directory`` durable (where the filesystem allows opening one)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
