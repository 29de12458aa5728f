"""Several seeds of one configuration trained together in one program: :func:`train_seeds`.

The training step of a small model is mostly fixed costs (dispatching many small operations)
rather than arithmetic. :func:`train_seeds` stacks the training states of ``N`` seeds on a
leading seed axis and runs the training step and the evaluation under :func:`jax.vmap`, so that
``N`` seeds pay those costs once; it also compiles once instead of ``N`` times. Whether that is
faster depends on the model and the machine: a step bound by arithmetic or by memory bandwidth
(large layers) gains nothing and can lose (``scripts/bench.py --sections seeds`` measures it;
the README has the numbers). Everything else is the ordinary training loop of
:mod:`lnexp.train`, per seed:

* the task's model built with the seed, the batch schedule ``Schedule(seed=s)`` and the random
  stream ``fold_in(key(s), step)``, exactly as ``train_and_evaluate`` with ``config.seed = s``;
  the data is on the devices once, shared by every seed;
* a run directory per seed holding what a separate run writes: ``config.json`` (with its seed),
  ``metrics.jsonl``, ``tensorboard/`` and ``checkpoints/`` (the seed's own, unstacked state), so
  reports, figures and resuming (by either function) work unchanged.

The seeds' numbers match separate runs up to float rounding, not bit for bit: batched matrix
products may sum in another order (``tests/test_seeds.py`` bounds the difference over a few
steps). Over many steps the difference grows as any rounding difference does (as between one
and several devices): after 2 epochs of PI-MNIST (784-100-100-10, layer norm), four seeds'
test errors were within 0.08 points of their separate runs' at batch 128 (858 steps) and within
0.25 points at batch 4 (27,500 steps; the four seeds' standard deviation was 0.45). The timing
fields of a record (``examples_per_sec``, ``wall_s``, ``compile_s``) are those of the program
that trains all the seeds; ``examples_per_sec`` counts the seed's own examples.

Limits. The seeds must resume from the same step (:func:`lnexp.compare.run_grid` groups them so).
Tasks with sequence lengths (skip-thoughts) are refused: their schedules cut each seed's chunks
to other widths and lengths, which one program cannot share (PI-MNIST and sequential MNIST,
whose sequences all have one length, are fine). A non-finite loss or evaluation in
one seed stops every seed, naming it; as in a separate run, nothing is written for that epoch
and the checkpoints of earlier epochs are kept.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lnexp import distributed
from lnexp.batches import Chunk, Schedule
from lnexp.errors import UserError
from lnexp.experiments import Task, build_task
from lnexp.metric_writers import MetricWriter, ProgressLine
from lnexp.train import (
    Trainer,
    TrainState,
    _check_config,
    _check_finite,
    _put,
    _save_config,
    _summary,
    check_enough_data,
    epoch_record,
    make_mesh,
    make_optimizer,
    make_train_state,
)
from lnexp.tuning import resolve_learning_rate


class SeedTrainer(Trainer):
    """A :class:`~lnexp.train.Trainer` of several seeds: state, keys and chunks have a seed axis.

    The training state is stacked on a leading seed axis (replicated; the batch axis stays
    sharded over ``'data'``); chunk indices are ``(steps, seeds, batch_size)``.

    Args:
        task: The task of the first seed: data, loss and evaluation, shared by every seed.
        models: One freshly initialized model per seed (the first is ``task.model``), all of one
            structure.
        tx: The optimizer.
        mesh: The ``('data',)`` mesh.
        seeds: The seeds, in the order of ``models``.

    Example:
        >>> models = [task.model, build_task(config_of_seed_1).model]  # doctest: +SKIP
        >>> trainer = SeedTrainer(task, models, tx, mesh, seeds=[0, 1])  # doctest: +SKIP
        >>> indices = np.stack([chunk_of_seed_0, chunk_of_seed_1], axis=1)  # doctest: +SKIP
        >>> state, metrics = trainer.train_chunk(state, data, Chunk(indices))  # doctest: +SKIP
    """

    def __init__(
        self,
        task: Task,
        models: Sequence[nnx.Module],
        tx: optax.GradientTransformation,
        mesh: Mesh,
        seeds: Sequence[int],
    ):
        super().__init__(task, tx, mesh, seeds[0])
        self.seeds = list(seeds)
        states = []
        for model in models:
            model.train()
            _, params, rest = nnx.split(model, nnx.Param, ...)
            states.append(make_train_state(params, rest, tx))
        self.initial_state = jax.tree.map(lambda *leaves: np.stack(leaves), *states)
        self.rng = jnp.stack([jax.random.key(seed) for seed in self.seeds])
        self.index_sharding = NamedSharding(mesh, P(None, None, "data"))
        self.unstack = jax.jit(self._unstack_impl, out_shardings=self.replicated)
        self.stack = jax.jit(self._stack_impl, out_shardings=self.replicated)

    def _train_chunk_impl(self, state: TrainState, data, indices: jax.Array, *, width):
        step = jax.vmap(functools.partial(self._train_step, data, width))
        return jax.lax.scan(lambda s, idx: step(self.rng, s, idx), state, indices)

    def _evaluate_impl(self, params, rest, constants, split):
        evaluate_one = functools.partial(super()._evaluate_impl, constants=constants, split=split)
        return jax.vmap(evaluate_one)(params, rest)

    def evaluate(self, state: TrainState, constants, split) -> list[dict[str, float]]:
        """Evaluates every seed on ``split`` in one pass; one dict of means per seed."""
        out = jax.device_get(self._evaluate(state["params"], state["rest"], constants, split))
        means = [{k: float(v[i]) for k, v in out.items()} for i in range(len(self.seeds))]
        summarize = self.task.summarize_eval
        return means if summarize is None else [summarize(m) for m in means]

    def _unstack_impl(self, state: TrainState) -> list[TrainState]:
        return [jax.tree.map(lambda a, i=i: a[i], state) for i in range(len(self.seeds))]

    def _stack_impl(self, states: Sequence[TrainState]) -> TrainState:
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``seed``."""
    config = config.copy_and_resolve_references()
    config.seed = seed
    return config


def train_seeds(
    config: ml_collections.ConfigDict, seeds: Sequence[int], workdirs: Sequence[str | Path]
) -> list[dict[str, Any]]:
    """Trains ``config`` once per seed, every seed in one program; one run directory per seed.

    Each seed's run directory ends up as :func:`lnexp.train.train_and_evaluate` with
    ``config.seed`` set to it would leave it (up to float rounding; see the module docstring),
    and resumes the same way.

    Args:
        config: The experiment's config (see ``configs/``); its ``seed`` is replaced by each seed.
        seeds: Distinct seeds.
        workdirs: One run directory per seed, in the order of ``seeds``.

    Returns:
        The last evaluation record of each seed, in the order of ``seeds``.

    Raises:
        UserError: For a config, data or divergence problem the user can fix, a task with
            sequence lengths, or seeds whose run directories resume from different steps.

    Example:
        >>> records = train_seeds(config, [0, 1, 2], [f"runs/ln/seed={s}" for s in range(3)])
        ... # doctest: +SKIP
    """
    seeds = [int(s) for s in seeds]
    workdirs = [Path(w).resolve() for w in workdirs]
    if not seeds or len(set(seeds)) != len(seeds) or len(set(workdirs)) != len(seeds):
        raise UserError(
            f"train_seeds needs distinct seeds ({seeds}) and one distinct run directory per seed "
            f"({len(workdirs)} given)."
        )
    is_main = jax.process_index() == 0
    mesh = make_mesh()
    config = resolve_learning_rate(config)
    _check_config(config, mesh)
    configs = [with_seed(config, seed) for seed in seeds]
    for seed_config, workdir in zip(configs, workdirs, strict=True):
        workdir.mkdir(parents=True, exist_ok=True)
        _save_config(seed_config, workdir, write=False)  # Refuses another run's workdir.

    task = build_task(configs[0])
    if task.lengths is not None:
        raise UserError(
            f"The {config.experiment} task groups its batches by sequence length, so each seed's "
            "schedule has its own chunk widths and one program cannot train the seeds together. "
            "Train them one after the other (scripts/compare.py without --vectorize_seeds)."
        )
    check_enough_data(task, config)
    models = [task.model] + [build_task(c).model for c in configs[1:]]
    trainer = SeedTrainer(task, models, make_optimizer(config), mesh, seeds)
    for seed_config, workdir in zip(configs, workdirs, strict=True):
        _save_config(seed_config, workdir)
    schedules = [
        Schedule(
            num_examples=task.num_train,
            batch_size=config.batch_size,
            steps_per_call=config.steps_per_call,
            seed=seed,
            steps_per_epoch=config.get("steps_per_epoch"),
        )
        for seed in seeds
    ]
    total_steps = schedules[0].epoch_steps * config.num_epochs
    eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size

    if is_main:
        for workdir in workdirs:
            for name, text in task.files.items():
                (workdir / name).write_text(text, encoding="utf-8")
    constants, train_data, eval_data = trainer.put_data(eval_batch)

    with contextlib.ExitStack() as cleanup:
        managers = []
        for workdir in workdirs:
            manager = ocp.CheckpointManager(
                workdir / "checkpoints",
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=config.checkpoint.keep, create=True
                ),
            )
            cleanup.callback(manager.close)
            cleanup.callback(manager.wait_until_finished)
            managers.append(manager)
        steps = [manager.latest_step() for manager in managers]
        # What this process sees: -1 no checkpoint, -2 seeds at different steps. Every process
        # takes part in the comparison before any of them stops.
        view = (-1 if steps[0] is None else steps[0]) if len(set(steps)) == 1 else -2
        if len(views := set(distributed.all_processes(view))) > 1:
            raise UserError(
                "The processes see different last checkpoints in the seeds' run directories "
                f"(steps {sorted(views)}; -1: none, -2: the seeds differ): the workdirs must be "
                "on a filesystem that every host shares, with no other run writing to them."
            )
        if view == -2:
            listing = ", ".join(f"seed {s}: {n or 0}" for s, n in zip(seeds, steps, strict=True))
            raise UserError(
                f"The seeds' run directories resume from different steps ({listing}), so they "
                "cannot be trained together. Train them one after the other "
                "(lnexp.train.train_and_evaluate; scripts/compare.py does so by itself)."
            )
        latest = steps[0]
        writers = []
        for workdir in workdirs:
            writer = MetricWriter(workdir, enabled=is_main, purge_after=latest or 0)
            cleanup.callback(writer.close)
            writers.append(writer)

        state = _put(trainer.initial_state, trainer.replicated)
        walls_before = [0.0] * len(seeds)
        last_records: list[dict[str, Any]] = [{} for _ in seeds]
        if latest is not None:
            abstract = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=trainer.replicated),
                state,
            )
            state = trainer.stack(
                [m.restore(latest, args=ocp.args.StandardRestore(abstract)) for m in managers]
            )
            for i, writer in enumerate(writers):
                kept = writer.truncate_after(latest)
                if kept:
                    last_records[i] = kept[-1]
                    walls_before[i] = kept[-1]["wall_s"]
            if is_main:
                logging.info(
                    "Resumed %d seeds from their checkpoints at step %d.", len(seeds), latest
                )
        else:
            for writer in writers:
                writer.truncate_after(0)  # Records of a run killed before its first checkpoint.

        progress = ProgressLine(
            total_steps,
            start_step=int(state["step"][0]),
            every_s=config.log_every_s,
            enabled=is_main,
        )
        t_start = time.perf_counter()
        for epoch in range(int(state["epoch"][0]) + 1, config.num_epochs + 1):
            state, train_metrics, train_seconds = _train_epoch(
                trainer, state, train_data, schedules, config, epoch, progress, workdirs
            )
            step = int(state["step"][0])
            evals = {
                name: trainer.evaluate(state, constants, split) for name, split in eval_data.items()
            }
            examples_per_sec = len(train_metrics["loss"]) * config.batch_size / train_seconds
            wall = time.perf_counter() - t_start
            records = [
                epoch_record(
                    epoch,
                    step,
                    {name: evals[name][i] for name in eval_data},
                    {key: values[:, i] for key, values in train_metrics.items()},
                    examples_per_sec=examples_per_sec,
                    unit=task.unit,
                    compile_s=trainer.compile_seconds,
                    wall_s=walls_before[i] + wall,
                )
                for i in range(len(seeds))
            ]
            progress.done()
            for seed, workdir, record in zip(seeds, workdirs, records, strict=True):
                try:
                    _check_finite(record)
                except UserError as e:
                    raise UserError(f"Seed {seed} ({workdir}): {e}") from None
            for seed, writer, record in zip(seeds, writers, records, strict=True):
                if is_main:  # The other processes have the same numbers.
                    logging.info("seed %d: %s", seed, _summary(record, config.num_epochs))
                writer.write(record)
            last_records = records
            state["epoch"] = _put(np.full(len(seeds), epoch, np.int32), trainer.replicated)
            if epoch % config.checkpoint.every_epochs == 0 or epoch == config.num_epochs:
                for manager, seed_state in zip(managers, trainer.unstack(state), strict=True):
                    manager.save(step, args=ocp.args.StandardSave(seed_state))
    return last_records


def _train_epoch(
    trainer: SeedTrainer,
    state: TrainState,
    train_data,
    schedules: Sequence[Schedule],
    config: ml_collections.ConfigDict,
    epoch: int,
    progress: ProgressLine,
    workdirs: Sequence[Path],
):
    """Runs one epoch of every seed; stops on a non-finite loss in any seed, naming it."""
    per_step = []
    seconds = 0.0
    epoch_start_step = int(state["step"][0])
    done = 0
    per_seed_chunks = [schedule.epoch_chunks(epoch) for schedule in schedules]
    for chunks in zip(*per_seed_chunks, strict=True):
        # Without sequence lengths every seed's chunks have the same number of steps.
        indices = np.stack([chunk.indices for chunk in chunks], axis=1)
        first_step = epoch_start_step + done
        t0, compile_before = time.perf_counter(), trainer.compile_seconds
        state, metrics = trainer.train_chunk(state, train_data, Chunk(indices))
        metrics = jax.device_get(metrics)  # (steps, seeds) each; waits for the chunk.
        loss = metrics["loss"]
        seconds += time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
        if not np.all(np.isfinite(loss)):
            step, i = np.argwhere(~np.isfinite(loss))[0]
            raise UserError(
                f"Training diverged: the loss of seed {trainer.seeds[i]} ({workdirs[i]}) became "
                f"{loss[step, i]} at epoch {epoch}, step {first_step + step + 1}. The run of all "
                f"{len(trainer.seeds)} seeds stopped and wrote nothing for epoch {epoch}; "
                "checkpoints of earlier epochs are kept. Train the other seeds one after the "
                "other (scripts/compare.py does so by itself after this error). This seed would "
                "diverge the same way: lower --config.optimizer.learning_rate or set "
                "--config.optimizer.grad_clip_norm, in a new --workdir (or in this one if no "
                "checkpoint was written yet)."
            )
        per_step.append(metrics)
        done += len(indices)
        rate = done * config.batch_size * len(trainer.seeds) / seconds
        progress.update(
            f"epoch {epoch}/{config.num_epochs} | loss {loss.mean():.4f} (mean of "
            f"{len(trainer.seeds)} seeds) | {rate:,.0f} {trainer.task.unit}/s in all",
            epoch_start_step + done,
        )
    return state, {k: np.concatenate([m[k] for m in per_step]) for k in per_step[0]}, seconds
