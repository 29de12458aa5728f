"""The seeds section: several seeds trained in one program against one after the other.

:func:`time_seeds` times steady-state training (compilation and evaluation left out) of a
config's task: one call of ``config.steps_per_call`` fused training steps of ``N`` seeds together
(:class:`lnexp.seeds.SeedTrainer`, ``jax.vmap`` over a seed axis) against the same call for one
seed (:class:`lnexp.train.Trainer`, what a separate run does). After ``warmup`` calls of each,
the two are timed ``repeats`` times, round-robin; the speedup is ``N`` times the median call of
one seed over the median call of the ``N`` seeds together.

The section runs it on PI-MNIST (``configs/pimnist.py``, real MNIST from ``--data_dir``, 4 seeds,
200 steps a call) for a small MLP (784-100-100-10) and the paper's (784-1000-1000-10), each at
batch 4 and 128.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

from lnexp import compare
from lnexp.batches import Chunk, Schedule
from lnexp.bench.timing import BenchConfig, Row, note_row
from lnexp.errors import UserError
from lnexp.experiments import build_task
from lnexp.seeds import SeedTrainer
from lnexp.train import Trainer, make_mesh, make_optimizer

SEEDS = 4
STEPS_PER_CALL = 200
GRID = [((100, 100), 4), ((100, 100), 128), ((1000, 1000), 4), ((1000, 1000), 128)]


def _prepare(trainer: Trainer, indices, train_data) -> tuple[Callable[[], None], float]:
    """Compiles ``trainer``'s chunk of ``indices``; returns a synchronous call and compile time."""
    state = jax.device_put(trainer.initial_state, trainer.replicated)
    chunk = Chunk(indices)
    before = trainer.compile_seconds
    state, _ = trainer.train_chunk(state, train_data, chunk)  # Compiles, then runs once.
    jax.block_until_ready(state)

    def call():
        nonlocal state
        state, metrics = trainer.train_chunk(state, train_data, chunk)
        jax.block_until_ready((state, metrics))

    return call, trainer.compile_seconds - before


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

    Example:
        >>> rows = time_seeds(config, 4)  # doctest: +SKIP
        >>> rows[1]["speedup"]  # doctest: +SKIP
    """
    if num_seeds < 1 or repeats < 1 or warmup < 0:
        raise UserError(
            f"Need num_seeds, repeats >= 1 and warmup >= 0 (got {num_seeds}, {repeats}, {warmup})."
        )
    seeds = [config.seed + i for i in range(num_seeds)]
    configs = []
    for seed in seeds:
        seed_config = config.copy_and_resolve_references()
        seed_config.seed = seed
        configs.append(seed_config)
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
    one = Trainer(task, tx, mesh, seeds[0])
    together = SeedTrainer(task, models, tx, mesh, seeds)
    train_data = {
        "examples": jax.device_put(task.train_data, one.replicated),
        "constants": jax.device_put(task.constants, one.replicated),
    }
    calls = {
        "1 seed": _prepare(one, chunks[0], train_data),
        f"{num_seeds} seeds in one program": _prepare(together, np.stack(chunks, 1), train_data),
    }
    for call, _ in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, (call, _) in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    rows = []
    single = statistics.median(times["1 seed"])
    for (name, (_, compile_s)), n in zip(calls.items(), (1, num_seeds), strict=True):
        median = statistics.median(times[name])
        rows.append(
            {
                "name": name,
                "seeds": n,
                "steps_per_call": steps,
                "median_ms": 1e3 * median,
                "min_ms": 1e3 * min(times[name]),
                "seed_steps_per_s": n * steps / median,
                "compile_s": compile_s,
                "speedup": n * single / median,
                "repeats": repeats,
            }
        )
    return rows


def run(config: BenchConfig, config_path: str = "configs/pimnist.py") -> dict[str, Any]:
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
        pimnist = compare.load_config(config_path, overrides)
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
