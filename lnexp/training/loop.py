"""The one training loop: :func:`train_and_evaluate` (one run) and :func:`train_seeds` (several
seeds of one configuration in one program, one run directory each).

It knows nothing about any experiment: :func:`lnexp.studies.build_task` gives it a model, the
data and the loss. Its shape:

* One ``jax.sharding.Mesh`` with a ``'data'`` axis over all devices (even when there is one);
  the jitted compute is :class:`~lnexp.training.trainer.Trainer`'s, whose seed axis has size 1
  for one run (nothing vmapped) and ``S`` for ``S`` seeds trained together.
* The training set (and the task's ``constants``, e.g. a corpus) stays on the devices. The
  batch schedule (:mod:`lnexp.training.batches`) is drawn on the host from ``(seed, pass)``, so
  every host and every resumed run draws the same one; a jitted ``lax.scan`` runs up to
  ``steps_per_call`` steps per host call, gathering its batches on the device (for sequence
  tasks, batches of similar length cut to the chunk's padded width: one compiled program per
  width). The training state is donated, so it is updated in place.
* After each epoch (one pass over the data, or ``steps_per_epoch`` steps when the config sets
  it) every evaluation split is evaluated in one jitted pass, each seed's record goes to its
  ``metrics.jsonl`` and TensorBoard, and an orbax checkpoint of each seed's own state is written
  (the last ``checkpoint.keep`` are kept; :mod:`lnexp.training.checkpoints`). Re-running on the same
  run directories resumes from the last one, and since batches depend only on ``(seed, epoch)``
  a resumed run is bitwise identical on CPU.
* SIGTERM (a cluster's preemption notice) or Ctrl-C stops the run after the chunk in flight,
  on every process at the same step: it checkpoints that step (inside an epoch, with the
  epoch's training metrics so far beside it) and raises :class:`~lnexp.errors.Interrupted`
  (exit 143 or 130 from the command line). Rerunning resumes inside the epoch with the rest of
  its schedule, so the run ends bitwise as an uninterrupted one (:mod:`lnexp.training.preemption`).
* A non-finite loss (or evaluation) stops the run with an error naming the epoch, step (and
  seed); the bad state is never recorded or checkpointed, so the last good checkpoint survives.
  A float16 run (``config.dtype``) scales its loss (:mod:`lnexp.training.loss_scale`): a step
  whose gradients overflow is skipped and is no divergence (its loss may be infinite), unless it
  overflowed at a scale at or below ``config.loss_scale.minimum``, which stops the run the same
  way. Its records also give ``train_skipped_steps`` and ``train_loss_scale``.
* Over several processes (hosts; :mod:`lnexp.training.distributed` connects them) every process
  runs this same loop on the same config. Process 0 alone writes ``config.json``,
  ``metrics.jsonl`` and TensorBoard; all of them write and restore the checkpoints, so the
  workdir must be on a filesystem they share (checked at the start, with the resume step, which
  all must agree on).

Seeds trained together (:func:`train_seeds`) leave each run directory as a separate run of that
seed would (up to float rounding: see :mod:`lnexp.training.trainer`), so reports, figures and
resuming (by either function) work unchanged. The timing fields of a record (``examples_per_sec``,
``wall_s``, ``compile_s``) are those of the program that trains all the seeds;
``examples_per_sec`` counts the seed's own examples. The seeds must resume from the same step
(:func:`lnexp.reporting.grid.run_grid` groups them so); tasks with sequence lengths
(skip-thoughts) are refused, since each seed's schedule cuts its chunks to other widths; a
non-finite loss or evaluation in one seed stops every seed, naming it.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from lnexp.config import resolve_learning_rate
from lnexp.errors import Interrupted, UserError
from lnexp.studies import Task, build_task, check_config
from lnexp.training import checks, distributed, loss_scale, preemption, records
from lnexp.training.batches import Schedule
from lnexp.training.checkpoints import Checkpoints, restore_readable
from lnexp.training.metric_writers import MetricWriter, ProgressLine
from lnexp.training.optimizer import make_optimizer
from lnexp.training.preemption import StopSignals
from lnexp.training.run_dir import RunDir, held
from lnexp.training.trainer import Trainer, TrainState, make_mesh, put


def check_milestones(config: ml_collections.ConfigDict, epoch_steps: int) -> None:
    """Refuses a ``checkpoint.keep_every_steps`` that no checkpoint's step is a multiple of
    (checkpoints are saved every ``checkpoint.every_epochs`` epochs of ``epoch_steps``)."""
    every = config.checkpoint.get("keep_every_steps")
    interval = epoch_steps * config.checkpoint.every_epochs
    if every and every % interval:
        raise UserError(
            f"checkpoint.keep_every_steps={every} is not a multiple of the {interval} steps "
            f"between checkpoints ({epoch_steps} steps an epoch, a checkpoint every "
            f"{config.checkpoint.every_epochs}), so hardly any checkpoint would be kept for "
            f"good. Pass a multiple of {interval}, e.g. "
            f"--config.checkpoint.keep_every_steps={interval * max(1, round(every / interval))}."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Trains ``config``'s experiment, evaluating and checkpointing after every epoch.

    Resumes from the last checkpoint in ``workdir`` when there is one.

    Args:
        config: The experiment's config (see ``configs/``).
        workdir: Run directory: ``config.json``, ``metrics.jsonl``, ``tensorboard/``,
            ``checkpoints/``.

    Returns:
        The last evaluation record (the last line of ``metrics.jsonl``).

    Raises:
        UserError: For a config, data or divergence problem the user can fix.
    """
    return _train([config], [workdir])[0]


def with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``seed``."""
    config = config.copy_and_resolve_references()
    config.seed = seed
    return config


def train_seeds(
    config: ml_collections.ConfigDict, seeds: Sequence[int], workdirs: Sequence[str | Path]
) -> list[dict[str, Any]]:
    """Trains ``config`` once per seed, every seed in one program; one run directory per seed.

    Each seed's run directory ends up as :func:`train_and_evaluate` with ``config.seed`` set to
    it would leave it (up to float rounding; see the module docstring), and resumes the same way.

    Args:
        config: The experiment's config (see ``configs/``); its ``seed`` is replaced by each seed.
        seeds: Distinct seeds.
        workdirs: One run directory per seed, in the order of ``seeds``.

    Returns:
        The last evaluation record of each seed, in the order of ``seeds``.

    Raises:
        UserError: For a config, data or divergence problem the user can fix, a task with
            sequence lengths, or seeds whose run directories resume from different steps.

    Usage (``config`` from :func:`lnexp.config.load_config`; trains, so not run as a doctest)::

        records = train_seeds(config, [0, 1, 2], [f"runs/ln/seed={s}" for s in range(3)])
    """
    seeds = [int(s) for s in seeds]
    checks.check_seeds(seeds, [Path(w).resolve() for w in workdirs])
    return _train([with_seed(config, seed) for seed in seeds], workdirs)


def _train(
    configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str | Path]
) -> list[dict[str, Any]]:
    """The loop: ``configs`` differ only in their seed; one run directory each. SIGTERM and
    SIGINT stop it at the next chunk boundary (:mod:`lnexp.training.preemption`).

    Everything that can be refused before the run directories exist is refused first, so a
    refused new run leaves no directory: the fields, the model built abstractly, the batch
    against the devices, the data (read and checked by the task) against the batch. Run
    directories that exist already are locked first (the lock refuses a second launch before
    it reads any data or touches the devices the first one holds), then checked alike."""
    for config in configs:
        check_config(config)
    mesh = make_mesh()
    configs = [resolve_learning_rate(c) for c in configs]
    checks.check_batch_size(configs[0], mesh)
    run_dirs = [RunDir(w) for w in workdirs]
    resuming = all(r.path.is_dir() for r in run_dirs)
    with contextlib.ExitStack() as stack:
        stop_signals = stack.enter_context(StopSignals())
        if resuming:  # The run directories' locks (run_dir.held: disk errors reported too).
            stack.enter_context(held(run_dirs))
        task = build_task(configs[0])
        checks.check_seeds_can_share(task, configs[0], len(configs))
        checks.check_enough_data(task, configs[0])
        if not resuming:
            stack.enter_context(held(run_dirs))
        return _train_until_stopped(configs, task, mesh, run_dirs, stop_signals)


def _train_until_stopped(
    configs: Sequence[ml_collections.ConfigDict],
    task: Task,
    mesh: Mesh,
    run_dirs: Sequence[RunDir],
    stop_signals: StopSignals,
) -> list[dict[str, Any]]:
    seeds = [int(c.seed) for c in configs]
    is_main = jax.process_index() == 0
    config = configs[0]
    for seed_config, run_dir in zip(configs, run_dirs, strict=True):
        run_dir.check_compatible(seed_config)  # Refuses another run's workdir before any work.
        run_dir.records()  # Refuses a damaged metrics.jsonl before anything is written.

    models = [task.model] + [build_task(c).model for c in configs[1:]]
    schedules = [
        Schedule(
            num_examples=task.num_train,
            batch_size=config.batch_size,
            steps_per_call=config.steps_per_call,
            seed=seed,
            steps_per_epoch=config.get("steps_per_epoch"),
            lengths=task.lengths,
        )
        for seed in seeds
    ]
    total_steps = schedules[0].epoch_steps * config.num_epochs
    check_milestones(config, schedules[0].epoch_steps)
    # The learning-rate schedule may run until the last step (a cosine with decay_steps=None).
    trainer = Trainer(
        task,
        make_optimizer(config, total_steps),
        mesh,
        seeds,
        models=models,
        loss_scale=loss_scale.from_config(config),
    )
    # Written only once the config is known to be valid: a run refused for a bad value must not
    # leave a config.json behind that then refuses the corrected run as "a different config".
    for seed_config, run_dir in zip(configs, run_dirs, strict=True):
        run_dir.write_config(seed_config)
    eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size

    for run_dir in run_dirs:
        distributed.on_process_0(
            f"write the task's files into {run_dir.path}",
            lambda r=run_dir: r.write_files(task.files),
        )
    constants, train_data, eval_data = trainer.put_data(eval_batch)

    with contextlib.ExitStack() as cleanup:
        keep, every = config.checkpoint.keep, config.checkpoint.get("keep_every_steps")
        checkpoints = [cleanup.enter_context(r.checkpoints(keep, every)) for r in run_dirs]
        # The newest checkpoint that reads back (damaged ones moved aside, with a warning).
        latest, restored = restore_readable(run_dirs, checkpoints, seeds, trainer.seed_target())
        # Records past the checkpoint dropped (all of them without one: a run killed before its
        # first checkpoint was finalized starts over), those the file lost put back from the
        # copies the checkpoints keep.
        kept = [
            r.truncate_records(latest or 0, write=is_main, saved=c)
            for r, c in zip(run_dirs, checkpoints, strict=True)
        ]
        last_records: list[dict[str, Any]] = [k[-1] if k else {} for k in kept]
        walls_before = [k[-1]["wall_s"] if k else 0.0 for k in kept]
        if latest is None:
            state = put(trainer.initial_state, trainer.replicated)
        else:
            state = trainer.stack(restored)
            for run_dir in run_dirs if is_main else []:
                logging.info("Resumed from the checkpoint at step %d in %s.", latest, run_dir.path)
        # A checkpoint inside an epoch (a run stopped by a signal): the rest of that epoch's
        # schedule, with its metrics so far.
        first_epoch = trainer.counter(state, "epoch") + 1
        epoch_steps = schedules[0].epoch_steps
        skip = trainer.counter(state, "step") - (first_epoch - 1) * epoch_steps
        partials = [preemption.load_partial_epoch(r.path, latest) for r in run_dirs] if skip else []
        if partials:
            walls_before = [wall_s for *_, wall_s in partials]
        _drop_stale_partial_epochs(run_dirs)
        writers = [  # Once every file read back is known good: a refused resume adds nothing.
            cleanup.enter_context(MetricWriter(r.path, enabled=is_main, purge_after=latest or 0))
            for r in run_dirs
        ]
        if latest is not None and not skip:  # Resumed at an epoch end: its record is there?
            lacking = [i for i, k in enumerate(kept) if not k or k[-1]["step"] != latest]
            if lacking:
                evals = {
                    name: trainer.evaluate(state, constants, split)
                    for name, split in eval_data.items()
                }
            for i in lacking:
                last_records[i] = records.evaluated_record(
                    first_epoch - 1,
                    latest,
                    {name: evals[name][i] for name in eval_data},
                    wall_s=walls_before[i],
                )
                records.check_finite(last_records[i])
                writers[i].write(last_records[i])
                if is_main:
                    logging.warning(
                        "%s lacked the record of step %d and no checkpoint kept a copy: "
                        "evaluated its checkpoint again for it (the training-step averages of "
                        "that epoch are lost).",
                        run_dirs[i].metrics_path,
                        latest,
                    )

        progress = ProgressLine(
            total_steps,
            start_step=trainer.counter(state, "step"),
            every_s=config.log_every_s,
            enabled=is_main,
        )
        t_start = time.perf_counter()
        for epoch in range(first_epoch, config.num_epochs + 1):
            state, train_metrics, train_seconds, stop = _train_epoch(
                trainer, state, train_data, schedules, config, epoch, progress, run_dirs,
                skip=skip, stop_signals=stop_signals,
            )  # fmt: skip
            if partials:  # The steps done before the run was stopped.
                train_metrics = {
                    k: np.concatenate([np.stack([p[0][k] for p in partials], axis=1), v])
                    for k, v in train_metrics.items()
                }
                train_seconds += partials[0][1]
            skip, partials = 0, []
            step = trainer.counter(state, "step")
            if stop is not None and step < epoch * epoch_steps:  # Stopped inside the epoch.
                progress.done()
                wall = time.perf_counter() - t_start
                for i, run_dir in enumerate(run_dirs):  # Beside the checkpoint, before it.
                    seed_metrics = {k: v[:, i] for k, v in train_metrics.items()}
                    distributed.on_process_0(
                        f"write the partial-epoch metrics of step {step}",
                        functools.partial(
                            preemption.save_partial_epoch,
                            run_dir.path,
                            step,
                            seed_metrics,
                            train_seconds,
                            walls_before[i] + wall,
                        ),
                    )
                _save(checkpoints, trainer.unstack(state), step, [None] * len(run_dirs))
                raise _interrupted(stop, step, epoch, epoch_steps, config.num_epochs, run_dirs)
            evals = {
                name: trainer.evaluate(state, constants, split) for name, split in eval_data.items()
            }
            examples_per_sec = len(train_metrics["loss"]) * config.batch_size / train_seconds
            wall = time.perf_counter() - t_start
            epoch_records = [
                records.epoch_record(
                    epoch,
                    step,
                    {name: evals[name][i] for name in eval_data},
                    {key: values[:, i] for key, values in train_metrics.items()},
                    examples_per_sec=examples_per_sec,
                    unit=task.unit,
                    tokens_per_example=task.tokens_per_example,
                    compile_s=trainer.compile_seconds,
                    wall_s=walls_before[i] + wall,
                )
                for i in range(len(seeds))
            ]
            progress.done()
            for i, record in enumerate(epoch_records):
                seed = f"Seed {seeds[i]} ({run_dirs[i].path}): " if trainer.vectorized else ""
                records.check_finite(record, seed)
            for i, (writer, record) in enumerate(zip(writers, epoch_records, strict=True)):
                if is_main:  # The other processes have the same numbers.
                    seed = f"seed {seeds[i]}: " if trainer.vectorized else ""
                    logging.info(seed + records.summary(record, config.num_epochs))
                writer.write(record)
            last_records = epoch_records
            state = trainer.with_epoch(state, epoch)
            if epoch % config.checkpoint.every_epochs == 0 or epoch == config.num_epochs:
                _save(checkpoints, trainer.unstack(state), step, epoch_records)
            if epoch < config.num_epochs:
                stop = stop or stop_signals.poll()  # Also a signal during the evaluation.
                if stop is not None:
                    if epoch % config.checkpoint.every_epochs != 0:  # No checkpoint yet.
                        _save(checkpoints, trainer.unstack(state), step, epoch_records)
                    raise _interrupted(stop, step, epoch, epoch_steps, config.num_epochs, run_dirs)
    _drop_stale_partial_epochs(run_dirs)  # The checkpoints saved are all finalized now.
    return last_records


def _drop_stale_partial_epochs(run_dirs: Sequence[RunDir]) -> None:
    for r in run_dirs:
        distributed.on_process_0(
            f"remove stale files of {r.path / preemption.PARTIAL_DIR}",
            lambda r=r: preemption.drop_stale_partial_epochs(r.path, r.checkpoint_steps()),
        )


def _save(
    checkpoints: Sequence[Checkpoints],
    states: Sequence[TrainState],
    step: int,
    epoch_records: Sequence[dict[str, Any] | None],
) -> None:
    """Each seed's checkpoint, with a copy of its epoch's record at the end of an epoch. A save
    that fails on one process at once (a full disk) stops every process with it; one that fails
    later, in orbax's background, makes the others give up waiting for it at the save's barrier
    (:data:`lnexp.training.distributed.PEER_TIMEOUT_S`)."""
    error = None
    try:
        for checkpoint, state, record in zip(checkpoints, states, epoch_records, strict=True):
            checkpoint.save(step, state, record)
    except Exception as e:  # noqa: BLE001 (raised again by distributed.agree)
        error = e
    distributed.agree(error, f"write the checkpoint of step {step}")


def _interrupted(
    stop: tuple[str, int],
    step: int,
    epoch: int,
    epoch_steps: int,
    num_epochs: int,
    run_dirs: Sequence[RunDir],
) -> Interrupted:
    """The error of a run stopped by signal ``stop`` (its name, the process that got it) once
    the checkpoint at ``step`` is written (the loop's exit waits for it)."""
    name, process = stop
    done = step - (epoch - 1) * epoch_steps
    where = (
        f"the end of epoch {epoch} of {num_epochs}"
        if done == epoch_steps
        else f"epoch {epoch} of {num_epochs}, {done} of its {epoch_steps} steps"
    )
    by = f" (received by process {process})" if jax.process_count() > 1 else ""
    paths = ", ".join(str(r.checkpoint_dir / str(step)) for r in run_dirs)
    return Interrupted(
        f"training stopped at step {step} ({where}) on {name}{by}; the checkpoint of that step "
        f"is written to {paths}. Resume with the same command: it continues from that step with "
        "the same batches, as if it had not stopped.",
        name,
    )


def _train_epoch(
    trainer: Trainer,
    state: TrainState,
    train_data,
    schedules: Sequence[Schedule],
    config: ml_collections.ConfigDict,
    epoch: int,
    progress: ProgressLine,
    run_dirs: Sequence[RunDir],
    *,
    skip: int = 0,
    stop_signals: StopSignals | None = None,
):
    """Runs one epoch of every seed (its steps after the first ``skip``) in calls of
    ``steps_per_call`` fused steps; stops on a non-finite loss in any seed, and after the chunk
    in flight once any process received SIGTERM or SIGINT. Returns the state, the per-step
    metrics ``(steps, seeds)``, the seconds spent training (compilation left out) and the stop
    request (``(signal name, process)``, or ``None``)."""
    per_step = []
    seconds = 0.0
    epoch_start_step = trainer.counter(state, "step")  # The host tracks the step from here on.
    done = 0
    # Without sequence lengths every seed's chunks have the same number of steps.
    stop = None
    for chunks in zip(*[s.epoch_chunks(epoch, skip) for s in schedules], strict=True):
        chunk = trainer.stack_chunks(chunks)
        first_step = epoch_start_step + done
        t0, compile_before = time.perf_counter(), trainer.compile_seconds
        state, metrics = trainer.train_chunk(state, train_data, chunk)
        metrics = jax.device_get(metrics)  # One transfer per chunk; waits for it.
        if not trainer.vectorized:
            metrics = {k: v[:, None] for k, v in metrics.items()}  # A seed axis of size 1.
        loss = metrics["loss"]
        seconds += time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
        _check_steps(trainer, metrics, epoch, first_step, run_dirs)
        per_step.append(metrics)
        done += len(chunk.indices)
        rate = done * config.batch_size * trainer.num_seeds / seconds
        seeds = f" (mean of {trainer.num_seeds} seeds)" if trainer.vectorized else ""
        in_all = " in all" if trainer.vectorized else ""
        finite = loss[np.isfinite(loss)]  # A float16 step skipped for an overflow may be inf.
        shown = finite.mean() if finite.size else np.nan
        progress.update(
            f"epoch {epoch}/{config.num_epochs} | loss {shown:.4f}{seeds} | "
            f"{rate:,.0f} {trainer.task.unit}/s{in_all}",
            epoch_start_step + done,
        )
        if stop_signals is not None and (stop := stop_signals.poll()) is not None:
            break
    metrics = {k: np.concatenate([m[k] for m in per_step]) for k in per_step[0]}
    return state, metrics, seconds, stop


def _check_steps(
    trainer: Trainer,
    metrics: dict[str, np.ndarray],
    epoch: int,
    first_step: int,
    run_dirs: Sequence[RunDir],
) -> None:
    """Raises the divergence error of the first bad step of a chunk's metrics ``(steps, seeds)``:
    a non-finite loss, except at a float16 step skipped for an overflow (the scaler lowers its
    scale and the run goes on), or such a skip at a scale already at its minimum."""
    loss = metrics["loss"]
    bad = ~np.isfinite(loss)
    collapsed = np.zeros_like(bad)
    scaler = trainer.loss_scale
    if scaler is not None:
        bad &= metrics["skipped"] == 0
        collapsed = scaler.collapsed(metrics["loss_scale"], metrics["skipped"])
    if not (bad | collapsed).any():
        return
    row, i = np.argwhere(bad | collapsed)[0]
    where = dict(seed=trainer.seeds[i], workdir=run_dirs[i].path, num_seeds=trainer.num_seeds)
    step = first_step + int(row) + 1
    if collapsed[row, i]:
        scale = float(metrics["loss_scale"][row, i])
        raise records.loss_scale_collapsed(scale, scaler.minimum, epoch, step, **where)
    raise records.loss_diverged(loss[row, i], epoch, step, **where)
