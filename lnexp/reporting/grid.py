"""Grids of runs: the product of ``--grid KEY=V1,V2,...`` axes and seeds, and training them.

Every cell is an ordinary run directory ``WORKDIR/<k1=v1,k2=v2>/seed=<s>/`` trained by
:func:`lnexp.training.train_and_evaluate`, or with the other seeds of its configuration by
:func:`lnexp.training.train_seeds` (so it resumes, and finished cells are skipped). A cell's
directory is named by the values as they were written; its config is the config file's, with
the shared overrides, then the cell's values, then its seed applied
(:func:`lnexp.config.load_config`). Each value is read as ``--config.KEY=VALUE`` would read it
(:func:`lnexp.config.parse_value`), and :func:`check_grid` reads them all before any training.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections

from lnexp.config import (
    apply_overrides,
    load_config,
    parse_assignment,
    parse_value,
    resolve_learning_rate,
)
from lnexp.errors import UserError
from lnexp.reporting.runs import read_metrics
from lnexp.training.run_dir import RunDir, RunInUseError

FAILURE_FILE = "failed.txt"
"""Written into a cell's run directory when its training stops with an error (a divergence, say);
removed when the cell finishes."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a grid: the grid values it sets and its seed."""

    values: tuple[tuple[str, str], ...]
    seed: int

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values) or "base"

    def run_dir(self, workdir: Path) -> Path:
        return workdir / self.name / f"seed={self.seed}"


def expand_grid(grid: Sequence[str], seeds: int) -> list[Cell]:
    """``['model.norm=none,layer', 'batch_size=128,4']`` x seeds -> every cell."""
    axes = []
    for text in grid:
        key, values = parse_assignment(text)
        axes.append([(key, v.strip()) for v in values.split(",") if v.strip()])
    return [
        Cell(tuple(values), seed) for values in itertools.product(*axes) for seed in range(seeds)
    ]


def check_grid(config: ml_collections.ConfigDict, grid: Sequence[str]) -> None:
    """Reads every value of every ``--grid KEY=V1,V2,...`` axis against ``config``'s fields, as
    ``--config.KEY=V1`` would be read, then every cell's config as a run checks it
    (:func:`lnexp.studies.check_config`: ranges, names, the model), so that a misspelled key, a
    value of the wrong type or out of range stops the grid before its first cell trains.

    Raises:
        UserError: naming the axis and the key, for a key the config does not have, a value its
            field's type cannot read, or an axis without values; naming the cell, for a cell
            whose config a run would refuse.
    """
    from lnexp.studies import check_config  # Here: reading a grid's runs needs no study.

    axes = []
    for text in grid:
        key, values = parse_assignment(text)
        given = [v.strip() for v in values.split(",") if v.strip()]
        if not given:
            raise UserError(f"--grid {text}: the axis has no values (KEY=V1,V2,...).")
        for value in given:
            try:
                parse_value(config, key, value)
            except UserError as e:
                raise UserError(f"--grid {text}: {e}") from None
        axes.append([(key, value) for value in given])
    for cell in itertools.product(*axes):
        try:
            check_config(apply_overrides(copy.deepcopy(config), cell))
        except UserError as e:
            name = ",".join(f"{k}={v}" for k, v in cell)
            raise UserError(f"--grid cell {name}: {e}") from None


def _finished(run_dir: Path, config: ml_collections.ConfigDict) -> bool:
    """Whether the run has all its epochs; a finished run trained with another config (in a
    field that may not change on resuming; fields its config.json predates aside) is refused,
    so that a grid never counts another experiment's run as its own."""
    records = read_metrics(run_dir)
    if not records or records[-1]["epoch"] < config.num_epochs:
        return False
    _, changed = RunDir(run_dir).config_changes(resolve_learning_rate(config))
    if changed:
        raise UserError(
            f"{run_dir} is finished but was trained with another config than this grid's "
            f"cell (changed: {', '.join(changed)}): counting it would mix two experiments. "
            "Move it out of the grid directory, or pass the overrides it was trained with."
        )
    return True


def run_grid(
    config_path: str,
    workdir: Path,
    cells: Sequence[Cell],
    shared: Sequence[tuple[str, Any]] = (),
    log=print,
    *,
    vectorize_seeds: bool = False,
) -> list[tuple[Cell, str]]:
    """Trains every unfinished cell, one after the other; returns the cells that failed.

    A cell whose run directory another process is training (its lock is held: e.g. the same
    grid command started again in a second terminal) is skipped, not failed: the same command
    run in N processes trains N cells at a time, each process taking the next free cell.

    ``config_path`` is the config file (``path[:arg]``); ``shared`` are the overrides every cell
    shares, ``(key, value)`` pairs applied before the cell's own values (a text is read by
    :func:`lnexp.config.parse_value`, any other value set as it is: what
    :func:`lnexp.cli.config_source` gives for the command line's ``--config.KEY=VALUE``).

    With ``vectorize_seeds``, the unfinished seeds of a configuration that resume from the same
    step are trained together in one program (:func:`lnexp.training.train_seeds`). If that fails
    (e.g. one seed diverges), they are trained one after the other, so that the other seeds
    still finish and each failure is reported for its own seed.
    """
    from lnexp.training import loop

    pending = []
    for i, cell in enumerate(cells, 1):
        config = load_config(config_path, [*shared, *cell.values, ("seed", str(cell.seed))])
        run_dir = cell.run_dir(workdir)
        if _finished(run_dir, config):
            log(f"[{i}/{len(cells)}] {run_dir} is finished; skipped.")
            continue
        pending.append((i, cell, config, run_dir))
    groups: dict[Any, list[tuple[int, Cell, ml_collections.ConfigDict, Path]]] = {}
    for i, cell, config, run_dir in pending:
        resume_step = max(RunDir(run_dir).checkpoint_steps(), default=0)
        key = (cell.values, resume_step) if vectorize_seeds else i
        groups.setdefault(key, []).append((i, cell, config, run_dir))

    def finished_meanwhile(
        i: int, cell: Cell, config: ml_collections.ConfigDict, run_dir: Path
    ) -> bool:
        """Whether the cell is finished now (another process of the same grid trained it)."""
        if _finished(run_dir, config):
            log(f"[{i}/{len(cells)}] {run_dir} is finished now; skipped.")
            return True
        return False

    failures, busy = [], []
    for group in groups.values():
        if len(group) > 1:  # Seeds to train together: drop those another process finished.
            group = [g for g in group if not finished_meanwhile(*g)]
        if len(group) > 1:
            seeds = [cell.seed for _, cell, _, _ in group]
            where = f"[{group[0][0]}-{group[-1][0]}/{len(cells)}] {group[0][1].name}"
            log(f"{where}: training seeds {', '.join(map(str, seeds))} together")
            try:
                loop.train_seeds(group[0][2], seeds, [run_dir for *_, run_dir in group])
                continue
            except RunInUseError as e:
                log(f"{where}: {e.holder} is training one of these seeds; the others one by one.")
            except UserError as e:
                log(f"{where}: training the seeds together failed: {e} Training them one by one.")
        for i, cell, config, run_dir in group:
            if finished_meanwhile(i, cell, config, run_dir):
                continue  # Another process finished it while the cells before it trained.
            log(f"[{i}/{len(cells)}] training {run_dir}")
            failure = run_dir / FAILURE_FILE
            try:
                loop.train_and_evaluate(config, run_dir)
                failure.unlink(missing_ok=True)
            except RunInUseError as e:
                log(f"[{i}/{len(cells)}] {run_dir} is being trained by {e.holder}; skipped.")
                busy.append(cell)
            except UserError as e:
                log(f"[{i}/{len(cells)}] {run_dir} failed: {e}")
                failures.append((cell, str(e)))
                if run_dir.is_dir():  # The reports say why the cell stopped (e.g. divergence).
                    failure.write_text(str(e) + "\n")
    if busy:
        log(
            f"{len(busy)} cell(s) were being trained by other processes: a report now counts "
            "them as far as they got; the last process to finish reports them complete."
        )
    return failures


def failure(run_dir: Path) -> str | None:
    """Why the last training of a grid's cell stopped with an error, or ``None``."""
    path = Path(run_dir) / FAILURE_FILE
    return path.read_text().strip() if path.exists() else None
