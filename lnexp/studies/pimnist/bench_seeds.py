"""The seeds section: several seeds trained in one program against one after the other.

:func:`time_seeds` times steady-state training (compilation and evaluation left out) of a
config's task: one call of ``config.steps_per_call`` fused training steps of ``N`` seeds together
(:class:`lnexp.training.Trainer` of ``N`` seeds, ``jax.vmap`` over a seed axis) against the same
call for one seed (a ``Trainer`` of one, what a separate run does). After ``warmup`` calls of each,
the two are timed ``repeats`` times, round-robin; the speedup is ``N`` times the median call of
one seed over the median call of the ``N`` seeds together.

The section runs it on PI-MNIST (``configs/pimnist.py``, real MNIST from ``--data_dir``, 4 seeds,
200 steps a call) for a small MLP (784-100-100-10) and the paper's (784-1000-1000-10), each at
batch 4 and 128.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
import numpy as np

from lnexp.bench.timing import Row, note_row, prepare_chunk, time_interleaved
from lnexp.config import load_config
from lnexp.errors import UserError
from lnexp.studies import build_task
from lnexp.studies.pimnist import bench as pimnist_section
from lnexp.training.batches import Chunk, Schedule
from lnexp.training.loop import with_seed
from lnexp.training.optimizer import make_optimizer
from lnexp.training.trainer import Trainer, make_mesh

SEEDS = 4
STEPS_PER_CALL = 200
GRID = [((100, 100), 4), ((100, 100), 128), ((1000, 1000), 4), ((1000, 1000), 128)]


@dataclasses.dataclass(frozen=True)
class Settings(pimnist_section.Settings):
    """The MNIST files (``data_dir``) and the pimnist section's timed calls per row."""


def time_seeds(
    config: ml_collections.ConfigDict, num_seeds: int, *, repeats: int = 5, warmup: int = 1
) -> list[Row]:
    """Times ``config.steps_per_call`` training steps of one seed, and of ``num_seeds`` together.

    Args:
        config: The experiment's config; seeds ``config.seed, config.seed + 1, ...`` are used.
        num_seeds: Seeds trained together.
        repeats: Timed calls of each (medians are reported).
        warmup: Untimed calls of each after compiling.

    Returns:
        Two rows, ``'1 seed'`` and ``'<N> seeds in one program'``: median and minimum time per
        call, training steps per second summed over seeds, compile time, and the speedup over
        training the seeds one after the other (1.0 for the first row).

    Usage (times training, so not run as a doctest)::

        rows = time_seeds(config, 4)
        rows[1]["speedup"]
    """
    if num_seeds < 1 or repeats < 1 or warmup < 0:
        raise UserError(
            f"Need num_seeds, repeats >= 1 and warmup >= 0 (got {num_seeds}, {repeats}, {warmup})."
        )
    seeds = [config.seed + i for i in range(num_seeds)]
    configs = [with_seed(config, seed) for seed in seeds]
    task = build_task(configs[0])
    if task.lengths is not None:
        raise UserError(f"The {config.experiment} task cannot train its seeds together.")
    models = [task.model] + [build_task(c).model for c in configs[1:]]
    mesh = make_mesh()
    tx = make_optimizer(config)
    steps = config.steps_per_call
    chunks = []
    for seed in seeds:
        schedule = Schedule(task.num_train, config.batch_size, steps, seed)
        if schedule.steps_per_pass < steps:
            raise UserError(
                f"config.steps_per_call={steps} is more than one pass over the data "
                f"({schedule.steps_per_pass} steps); lower it."
            )
        chunks.append(schedule.epoch_chunks(1)[0].indices)
    programs = [
        ("1 seed", Trainer(task, tx, mesh, seeds[0]), chunks[0]),
        (
            f"{num_seeds} seeds in one program",
            Trainer(task, tx, mesh, seeds, models=models),
            np.stack(chunks, 1),
        ),
    ]
    prepared = [
        prepare_chunk(
            name, trainer, Chunk(indices), items=steps * n, steps=1,
            unit="seed_steps", extra={"seeds": n, "steps_per_call": steps},
        )
        for (name, trainer, indices), n in zip(programs, (1, num_seeds), strict=True)
    ]  # fmt: skip
    for p in prepared:
        for _ in range(warmup):
            p.step()
    rows = time_interleaved(prepared, repeats)  # median_ms: per call (steps=1)
    for row in rows:
        row["speedup"] = row["seeds"] * rows[0]["median_ms"] / row["median_ms"]
    return rows


def run(config: Settings, config_path: str = "configs/pimnist.py") -> dict[str, Any]:
    if config.data_dir is None:
        row = note_row("seeds", "jax", skipped="needs the MNIST files: pass --data_dir")
        return {"rows": [row], "goals": [], "setup": "not run"}
    rows = []
    for hidden, batch in GRID:
        overrides = [
            ("data.dir", config.data_dir),
            ("model.hidden_sizes", str(hidden)),
            ("batch_size", str(batch)),
            ("steps_per_call", str(STEPS_PER_CALL)),
        ]
        pimnist = load_config(config_path, overrides)
        one, together = time_seeds(pimnist, SEEDS, repeats=config.pimnist_repeats)
        mlp = "-".join(map(str, (784, *hidden, 10)))
        for row in (one, together):
            row["name"] = f"MLP {mlp} batch {batch}: {row['name']}"
            row.update(hidden=list(hidden), batch=batch, framework="jax")
            rows.append(row)
    return {
        "rows": rows,
        "goals": [],
        "setup": (
            f"PI-MNIST, Adam, {SEEDS} seeds, {STEPS_PER_CALL} steps per call, median of "
            f"{config.pimnist_repeats} calls (one seed and the seeds together timed round-robin); "
            "speedup = seeds x one seed's time / the seeds' time together."
        ),
    }


COLUMNS = [
    ("compile_s", "compile s", ".1f"),
    ("median_ms", "ms per call", ",.0f"),
    ("seed_steps_per_s", "training steps/s (all seeds)", ",.0f"),
    ("speedup", "speedup", ".2fx"),
]
