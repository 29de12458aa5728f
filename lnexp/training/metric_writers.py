"""Where a run's numbers go: ``metrics.jsonl``, TensorBoard, and a console progress line.

``WORKDIR/metrics.jsonl`` holds one JSON object per evaluation (the file the comparison tooling
reads; :class:`lnexp.training.run_dir.RunDir` reads and truncates it); TensorBoard event files go
to ``WORKDIR/tensorboard/``. Only process 0 of a multi-host run writes.
"""

from __future__ import annotations

import json
import logging as std_logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from absl import logging

from lnexp.errors import UserError
from lnexp.training import distributed
from lnexp.training.durable import append_line


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file (empty when there is none).

    A last line cut short by a crash mid-write is left out (:func:`read_records_and_tail`
    returns it; a resumed run puts its record back from the checkpoint that keeps a copy).

    Raises:
        UserError: for a line before the last that is no record (the file is damaged).
    """
    return read_records_and_tail(path)[0]


def missing_epochs(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """The epochs before the last one that ``records`` lack (a hole a torn ``metrics.jsonl``
    left, when no checkpoint kept a copy of the record)."""
    epochs = {r["epoch"] for r in records if r.get("epoch")}
    return sorted(set(range(1, max(epochs, default=0))) - epochs)


def read_records_and_tail(path: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The records of a ``metrics.jsonl`` file and its last line when that was cut short (a
    crash mid-write), else ``None``.

    Raises:
        UserError: for a line before the last that is no record (the file is damaged).
    """
    if not path.exists():
        return [], None
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            record, reason = None, e.msg
        else:
            reason = "" if isinstance(record, dict) else "not a JSON object"
        if not reason:
            records.append(record)
        elif i == len(lines) - 1:
            return records, line  # Torn: the write of the last record was cut short.
        else:
            raise UserError(
                f"{path}, line {number}, is not an evaluation record ({reason}): the file is "
                "damaged (a crash tears at most its last line). Its checkpoints are untouched. "
                "Remove the damaged line, or put back the record from a copy (each checkpoint "
                "keeps its epoch's, under checkpoints/STEP/record), and run again."
            )
    return records, None


class MetricWriter:
    """Appends evaluation records to ``metrics.jsonl`` and TensorBoard.

    Args:
        workdir: The run directory.
        enabled: Whether this process writes (only process 0 does).
        purge_after: TensorBoard events past this step (from an interrupted run that resumes
            from the checkpoint at this step) are dropped.
    """

    def __init__(self, workdir: Path, *, enabled: bool = True, purge_after: int = 0):
        self.path = workdir / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(
                str(workdir / "tensorboard"), purge_step=purge_after + 1, flush_secs=30
            )

    def write(self, record: dict[str, Any]) -> None:
        """Appends one record (must hold ``step``) to the JSONL file and TensorBoard."""
        error = None
        if self.enabled:
            try:
                append_line(self.path, json.dumps(record))  # Synced: as durable as the checkpoint.
                for key, value in record.items():
                    if key != "step" and isinstance(value, int | float) and math.isfinite(value):
                        self._tb.add_scalar(key, value, record["step"])
            except OSError as e:
                error = e
        # Every process calls it: a failed write stops them all (none waits for process 0).
        distributed.agree(error, f"append to {self.path}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def format_duration(seconds: float) -> str:
    """``3725 -> '1h02m'``, ``95 -> '1m35s'``, ``7.2 -> '7s'``."""
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


class ProgressLine:
    """A one-line console progress report with throughput and ETA.

    The ETA extrapolates the wall time per step since the line was created (evaluation and
    checkpointing included). On a terminal the line is redrawn in place; otherwise (logs, CI) it
    is logged at most every ``every_s`` seconds.
    """

    def __init__(
        self, total_steps: int, *, start_step: int = 0, every_s: float = 30.0, enabled: bool = True
    ):
        self.total_steps = total_steps
        self.start_step = start_step
        self.every_s = every_s
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._t0 = time.monotonic()
        self._last = 0.0

    def update(self, text: str, step: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self._t0
        per_step = elapsed / max(step - self.start_step, 1)
        eta = format_duration((self.total_steps - step) * per_step)
        line = f"step {step}/{self.total_steps} | {text} | ETA {eta}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif time.monotonic() - self._last >= self.every_s:
            logging.info(line)
            self._last = time.monotonic()

    def done(self) -> None:
        """Ends the in-place line so the next log message starts on its own line."""
        if self.enabled and self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


_PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # lnexp/


class _OnlyLnexpInfo(std_logging.Filter):
    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def quiet_library_logs() -> None:
    """Keeps lnexp's INFO lines on the console; libraries only warn (orbax logs every step of
    every checkpoint at INFO). For the command-line entry points; library users keep control."""
    logging.get_absl_handler().addFilter(_OnlyLnexpInfo())
