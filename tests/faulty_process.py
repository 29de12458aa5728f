"""``python tests/faulty_process.py FAULT PROCESS ARGS...``: ``python -m lnexp.main ARGS`` with one
disk fault injected into process ``PROCESS`` of a run over several processes (the others run the
plain command), for tests/test_multihost.py. The fault is an ``OSError`` (no space left, or an
I/O error while reading) raised where the real one would be:

* ``lock``: opening the lock file ``.lock``;
* ``config``: writing ``config.json``;
* ``record``: appending the first record to ``metrics.jsonl``;
* ``checkpoint``: writing the first checkpoint (inside orbax's save);
* ``restore``: reading a checkpoint back, part-way (after orbax has begun: its first array read).
"""

from __future__ import annotations

import builtins
import errno
import os
import sys


def no_space(path, *args, **kwargs):
    """What a full disk raises when ``path`` is written."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def inject(fault: str) -> None:
    from lnexp.training import metric_writers, run_dir

    if fault == "lock":
        real_open = builtins.open

        def open_(file, *args, **kwargs):
            if str(file).endswith(".lock"):
                no_space(file)
            return real_open(file, *args, **kwargs)

        builtins.open = open_
    elif fault == "config":
        run_dir.write_atomically = no_space
    elif fault == "record":
        metric_writers.append_line = no_space
    elif fault == "checkpoint":
        import orbax.checkpoint as ocp

        def async_save(self, directory, *args, **kwargs):  # Inside orbax, as a write fails.
            no_space(directory)

        ocp.StandardCheckpointHandler.async_save = async_save
    elif fault == "restore":
        import orbax.checkpoint as ocp

        real = ocp.CheckpointManager.restore

        def restore(self, step, *args, **kwargs):
            real(self, step, *args, **kwargs)  # The read begins (and ends) here ...
            # ... and fails at its end.
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(self.directory / str(step)))

        ocp.CheckpointManager.restore = restore
    else:
        raise SystemExit(f"unknown fault {fault!r}")


if __name__ == "__main__":
    fault, process, *args = sys.argv[1:]
    if any(a == f"--process_id={process}" for a in args):
        inject(fault)
    from lnexp import cli
    from lnexp import main as command

    sys.argv = ["lnexp.main", *args]
    command.define_flags()
    cli.run(command.main)
