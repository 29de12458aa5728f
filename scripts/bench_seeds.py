"""How much faster seeds train together in one program than one after the other.

:func:`time_seeds` times steady-state training (compilation and evaluation left out) of a
config's task: one call of ``config.steps_per_call`` fused training steps of ``N`` seeds together
(:class:`lnexp.seeds.SeedTrainer`, ``jax.vmap`` over a seed axis) against the same call for one
seed (:class:`lnexp.train.Trainer`, what a separate run does). After ``--warmup`` calls of each,
the two are timed ``--repeats`` times, round-robin (so that other tenants of the machine slow
both alike); the speedup is ``N`` times the median call of one seed over the median call of the
``N`` seeds together.

The README's numbers (PI-MNIST, 4 seeds, 200 steps a call)::

    python scripts/bench_seeds.py --seeds 4 --set data.dir=PATH_TO_MNIST \\
        --set model.hidden_sizes="(100,100)" --set batch_size=128 --set steps_per_call=200
    python scripts/bench_seeds.py --seeds 4 --set data.dir=PATH_TO_MNIST \\
        --set batch_size=4 --set steps_per_call=200

Prints a markdown table; ``--out`` also writes the rows and the machine's load as JSON.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags

from lnexp import compare
from lnexp.batches import Chunk, Schedule
from lnexp.errors import UserError
from lnexp.experiments import build_task
from lnexp.metric_writers import quiet_library_logs
from lnexp.seeds import SeedTrainer
from lnexp.train import Trainer, make_mesh, make_optimizer

_CONFIG = flags.DEFINE_string("config", "configs/pimnist.py", "Config file ([:arg]).")
_SET = flags.DEFINE_multi_string("set", [], "KEY=VALUE: a config override.")
_SEEDS = flags.DEFINE_integer("seeds", 4, "Seeds trained together.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed calls of each (the median is kept).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed calls of each after compiling.")
_OUT = flags.DEFINE_string("out", None, "Also write the rows as JSON here.")

Row = dict[str, Any]


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


def to_markdown(rows: list[Row]) -> str:
    lines = [
        "| program | median per call | training steps/s (all seeds) | speedup | compile |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['median_ms']:.0f} ms | {r['seed_steps_per_s']:,.0f} | "
            f"{r['speedup']:.2f}x | {r['compile_s']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    quiet_library_logs()
    load = os.getloadavg()
    try:
        config = compare.load_config(
            _CONFIG.value, [compare.parse_assignment(s) for s in _SET.value]
        )
        rows = time_seeds(config, _SEEDS.value, repeats=_REPEATS.value, warmup=_WARMUP.value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"load average at the start: {load[0]:.2f} (1 min) on {os.cpu_count()} cores")
    print(to_markdown(rows))
    if _OUT.value:
        out = Path(_OUT.value)
        out.parent.mkdir(parents=True, exist_ok=True)
        result = {"config": json.loads(config.to_json_best_effort()), "load_average": load}
        out.write_text(json.dumps(result | {"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
