"""The fig6 section: wall time of the paper's Figure 6 grid beside what the machine allows.

Trains the real grid, ``scripts/compare.py``'s way (:func:`lnexp.reporting.grid.run_grid`): 4
methods (none, batch, layer, weight) x batch sizes 128 and 4, one seed, ``fig6_epochs`` epochs
each (64 in the paper; fewer keep the benchmark short: every epoch costs the same), on the real
MNIST files (``--data_dir``), each epoch evaluated on the training, validation and test splits
as the runs of the README are. It reports per run and in all

* the measured wall time (``wall_s`` of the run's last record: training, evaluation and
  compilation, without loading the data), and the compile time within it;
* the time the machine's limits allow for the same work: every training step at its roofline
  bound (:func:`lnexp.studies.pimnist.bench.roofline`) plus every evaluation pass's forward
  products at the matmul rate;
* the 64-epoch grid's wall time extrapolated from the measured per-epoch time (compile once).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import Row, note_row
from lnexp.errors import UserError
from lnexp.reporting.grid import expand_grid, run_grid
from lnexp.reporting.runs import read_metrics
from lnexp.studies.pimnist import bench as pimnist

METHODS = ("none", "batch", "layer", "weight")
BATCHES = (128, 4)
EVAL_EXAMPLES = 55_000 + 5_000 + 10_000  # train, valid, test splits after every epoch
PAPER_EPOCHS = 64
GOAL_X_LIMIT = 1.3


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """The grid's epochs and where its runs go (``data_dir``: the MNIST files)."""

    fig6_epochs: int = setting(2, "fig6: epochs per run of the grid.")
    fig6_workdir: str = setting(
        "runs/bench_fig6", "fig6: run directory (emptied first: fresh runs).", path="out"
    )


def forward_flops_per_example(sizes=pimnist.SIZES) -> int:
    return sum(2 * i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True))


def limit_seconds(norm: str, batch: int, steps: int, epochs: int, lim: dict[str, Any]) -> float:
    """Seconds the machine's limits allow for ``steps`` training steps and ``epochs``
    evaluations of the three splits."""
    step_s = batch / pimnist.roofline(norm, batch, lim)["limit_examples_per_s"]
    eval_s = epochs * EVAL_EXAMPLES * forward_flops_per_example() / lim["matmul_flops_per_s"]
    return steps * step_s + eval_s


def run(
    config: Settings,
    config_path: str = "configs/pimnist.py",
    overrides: tuple[tuple[str, str], ...] = (),
) -> dict[str, Any]:
    """Trains the grid (``overrides`` are extra ``(key, value)`` settings, for tests)."""
    if config.data_dir is None:
        row = note_row("Figure 6 grid", "jax", skipped="needs the MNIST files: pass --data_dir")
        return {"rows": [row], "goals": [], "setup": "not run"}
    if not Path(config_path).is_file():
        raise UserError(f"The fig6 section reads {config_path}: run it from the repository root.")
    workdir = Path(config.fig6_workdir)
    shutil.rmtree(workdir, ignore_errors=True)  # Fresh runs: a resumed one would be faster.
    cells = expand_grid(
        [f"model.norm={','.join(METHODS)}", f"batch_size={','.join(map(str, BATCHES))}"], 1
    )
    shared = [("num_epochs", str(config.fig6_epochs)), ("data.dir", config.data_dir), *overrides]
    failures = run_grid(config_path, workdir, cells, shared)
    if failures:
        raise UserError(f"The Figure 6 grid failed: {failures[0][1]}")
    lim = pimnist.limits(config)
    rows: list[Row] = []
    for cell in cells:
        values = dict(cell.values)
        norm, batch = values["model.norm"], int(values["batch_size"])
        last = read_metrics(cell.run_dir(workdir))[-1]
        wall, compile_s = last["wall_s"], last["compile_s"]
        limit = limit_seconds(norm, batch, last["step"], config.fig6_epochs, lim)
        per_epoch = (wall - compile_s) / config.fig6_epochs
        rows.append(
            {
                "name": f"norm={norm} batch={batch}",
                "framework": "jax",
                "norm": norm,
                "batch": batch,
                "epochs": config.fig6_epochs,
                "wall_s": wall,
                "compile_s": compile_s,
                "limit_s": limit,
                "x_limit": wall / limit,
                "wall_64_epochs_s": compile_s + PAPER_EPOCHS * per_epoch,
                "limit_64_epochs_s": limit * PAPER_EPOCHS / config.fig6_epochs,
            }
        )
    total = {
        key: sum(r[key] for r in rows)
        for key in ("wall_s", "compile_s", "limit_s", "wall_64_epochs_s", "limit_64_epochs_s")
    }
    rows.append(
        {"name": "whole grid", "framework": "jax", "epochs": config.fig6_epochs, **total}
        | {"x_limit": total["wall_s"] / total["limit_s"]}
    )
    ratio = rows[-1]["x_limit"]
    verdict = "met" if ratio <= GOAL_X_LIMIT else "NOT met"
    return {
        "rows": rows,
        "goals": [
            f"Goal Figure 6 grid within {GOAL_X_LIMIT}x of the machine's limits: {verdict} "
            f"({ratio:.2f}x over {config.fig6_epochs} epochs per run)."
        ],
        "setup": (
            f"4 methods x batch 128 and 4, seed 0, {config.fig6_epochs} epochs per run on real "
            f"MNIST ({config.data_dir}), every epoch evaluated on train/valid/test; the 64-epoch "
            "columns are extrapolated from the measured per-epoch time."
        ),
    }


COLUMNS = [
    ("epochs", "epochs", "d"),
    ("wall_s", "wall s", ",.1f"),
    ("compile_s", "compile s", ".1f"),
    ("limit_s", "limit s", ",.1f"),
    ("x_limit", "x limit", ".2fx"),
    ("wall_64_epochs_s", "64 epochs: wall s (extrapolated)", ",.0f"),
    ("limit_64_epochs_s", "64 epochs: limit s", ",.0f"),
]
