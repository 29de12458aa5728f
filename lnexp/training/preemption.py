"""Stopping a run cleanly on SIGTERM (preemption) or SIGINT (Ctrl-C), and resuming it mid-epoch.

SLURM and Cloud TPUs send SIGTERM some seconds before they kill a job. While the training loop
runs, :class:`StopSignals` turns SIGTERM and the first SIGINT into a request: the loop finishes
the chunk of steps in flight, checkpoints that step (inside an epoch, usually), and raises
:class:`~lnexp.errors.Interrupted`, which the command line reports as one paragraph with exit
status 143 (SIGTERM) or 130 (SIGINT). A second Ctrl-C stops at once (``KeyboardInterrupt``, no
checkpoint of that step: the run resumes from the one before).

Over several processes every process asks every other after each chunk
(:func:`lnexp.training.distributed.all_processes`, one small all-gather), so they all stop after
the same chunk, whichever of them received the signal; this is what
``jax.experimental.multihost_utils.reached_preemption_sync_point`` does for SIGTERM, and it covers
Ctrl-C (delivered to one process only) too.

A checkpoint inside an epoch holds the step; its ``epoch`` is the last one finished. The epoch's
per-step training metrics so far (its record averages them over the whole epoch), training
seconds and wall time are kept beside it in ``WORKDIR/partial_epochs/<step>.npz``
(:func:`save_partial_epoch`), so that the resumed run writes the very record that an
uninterrupted run writes. The directory exists only in runs that were stopped inside an epoch.
"""

from __future__ import annotations

import os
import signal
import threading
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from lnexp.errors import UserError
from lnexp.training import distributed
from lnexp.training.durable import replace_synced

SIGNALS = (signal.SIGTERM, signal.SIGINT)
PARTIAL_DIR = "partial_epochs"


class StopSignals:
    """While entered (in the main thread only; elsewhere it does nothing), SIGTERM and SIGINT
    set :attr:`signum` instead of ending the process; the previous handlers come back on exit.

    A second SIGINT raises ``KeyboardInterrupt`` at once.
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            # None: a handler not installed from Python (e.g. by a C library); the default then.
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum:
            return
        self.signum = signum
        again = (
            " (Ctrl-C again to stop at once, without that checkpoint)"
            if signum == signal.SIGINT
            else ""
        )
        # os.write: safe in a signal handler, unlike print or logging (buffered, locked).
        os.write(
            2,
            f"\n{signal.Signals(signum).name} received: stopping after the current steps and "
            f"writing a checkpoint{again}.\n".encode(),
        )

    def poll(self) -> tuple[str, int] | None:
        """``(signal name, the first process that received it)`` once any process received
        SIGTERM or SIGINT, else ``None``. Every process must call it at the same points (over
        several processes it is a collective)."""
        received = [signum for (signum,) in distributed.all_processes([self.signum])]
        for process, signum in enumerate(received):
            if signum:
                return signal.Signals(signum).name, process
        return None


def partial_path(workdir: Path, step: int) -> Path:
    return workdir / PARTIAL_DIR / f"{step}.npz"


def save_partial_epoch(
    workdir: Path,
    step: int,
    train_metrics: Mapping[str, np.ndarray],
    train_seconds: float,
    wall_s: float,
) -> None:
    """Keeps an unfinished epoch's per-step training metrics (exact bits), training seconds and
    wall time for the checkpoint at ``step`` (atomically: a kill leaves the old file or none)."""
    path = partial_path(workdir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"metric/{k}": np.asarray(v) for k, v in train_metrics.items()}
    tmp = path.with_name(f"{step}.tmp.npz")
    np.savez(tmp, train_seconds=train_seconds, wall_s=wall_s, **arrays)
    replace_synced(tmp, path)


def load_partial_epoch(workdir: Path, step: int) -> tuple[dict[str, np.ndarray], float, float]:
    """What :func:`save_partial_epoch` kept for ``step``: ``(metrics, train_seconds, wall_s)``.

    Raises:
        UserError: When the file is missing or damaged (the checkpoint is inside an epoch, but
            its epoch's metrics so far are gone).
    """
    path = partial_path(workdir, step)
    try:
        with np.load(path) as data:
            metrics = {k.split("/", 1)[1]: data[k] for k in data.files if k.startswith("metric/")}
            return metrics, float(data["train_seconds"]), float(data["wall_s"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        why = "missing" if not path.exists() else f"damaged ({type(e).__name__}: {e})"
    raise UserError(
        f"The last checkpoint of {workdir} (step {step}) lies inside an epoch, but {path}, which "
        f"holds that epoch's training metrics so far, is {why}, so the epoch's record cannot be "
        f"completed. Move {workdir / 'checkpoints' / str(step)} out of checkpoints/ to resume "
        "from the checkpoint before it (the run ends the same, bit for bit)."
    )


def drop_stale_partial_epochs(workdir: Path, checkpoint_steps: Sequence[int]) -> None:
    """Removes the kept metrics of checkpoints that no longer exist (process 0's job)."""
    directory = workdir / PARTIAL_DIR
    if not directory.is_dir():
        return
    keep = {f"{s}.npz" for s in checkpoint_steps}
    for path in directory.iterdir():
        if path.name not in keep:
            path.unlink(missing_ok=True)
    if not any(directory.iterdir()):
        directory.rmdir()
