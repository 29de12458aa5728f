"""The one training loop: ``train_and_evaluate(config, workdir)``.

It knows nothing about any experiment: :func:`lnexp.experiments.build_task` gives it a model, the
data and the loss. Its shape:

* One ``jax.sharding.Mesh`` with a ``'data'`` axis over all devices (even when there is one).
  Parameters and optimizer state are replicated, batches are sharded on the batch axis, so
  batch-norm statistics are over the global batch.
* The training set (and the task's ``constants``, e.g. a corpus) stays on the devices. The
  batch schedule (:mod:`lnexp.batches`) is drawn on the host from ``(seed, pass)``, so every
  host and every resumed run draws the same one; a jitted ``lax.scan`` runs up to
  ``steps_per_call`` steps per host call, gathering its batches on the device (for sequence
  tasks, batches of similar length cut to the chunk's padded width: one compiled program per
  width). The training state is donated, so it is updated in place.
* After each epoch (one pass over the data, or ``steps_per_epoch`` steps when the config sets
  it) every evaluation split is evaluated in one jitted pass, the record goes to
  ``metrics.jsonl`` and TensorBoard, and an orbax checkpoint is written (the last
  ``checkpoint.keep`` are kept). Re-running on the same workdir resumes from the last one, and
  since batches depend only on ``(seed, epoch)`` a resumed run is bitwise identical on CPU.
* A non-finite loss (or evaluation) stops the run with an error naming the epoch and step; the
  bad state is never recorded or checkpointed, so the last good checkpoint survives.
* Over several processes (hosts; :mod:`lnexp.distributed` connects them) every process runs this
  same loop on the same config. Process 0 alone writes ``config.json``, ``metrics.jsonl`` and
  TensorBoard; all of them write and restore the checkpoints, so the workdir must be on a
  filesystem they share (checked at the start, with the resume step, which all must agree on).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Mapping
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
from flax.traverse_util import flatten_dict
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lnexp import distributed
from lnexp.batches import Chunk, Schedule
from lnexp.errors import UserError
from lnexp.experiments import Task, build_task
from lnexp.metric_writers import MetricWriter, ProgressLine, format_duration
from lnexp.tuning import resolve_learning_rate

# Config keys that may change between a run and its resumption (more epochs, moved data, ...).
RESUMABLE_CHANGES = (
    "num_epochs",
    "data.dir",
    "data.cache_dir",
    # How the rate was found (the resolved optimizer.learning_rate must still match).
    "optimizer.tuned_rates",
    "steps_per_call",
    "eval_batch_size",
    "log_every_s",
)
# ... except data.dir between a path and None, which switches between IDX files and TFDS (whose
# validation split holds other images).

TrainState = dict[str, Any]


def make_mesh() -> Mesh:
    """A one-axis ``('data',)`` mesh over every device of every process.

    Built directly rather than with ``jax.make_mesh``, which makes the axis ``Explicit`` (sharding
    in types); the loop relies on the default automatic sharding propagation.
    """
    return Mesh(np.asarray(jax.devices()), ("data",))


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The optax optimizer described by ``config.optimizer``."""
    opt = config.optimizer
    if opt.name == "adam":
        tx = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    elif opt.name == "sgd":
        tx = optax.sgd(opt.learning_rate, momentum=opt.momentum or None)
    else:
        raise UserError(
            f"Unknown optimizer {opt.name!r} in config.optimizer.name: expected 'adam' or 'sgd'."
        )
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx


def make_train_state(params, rest, tx: optax.GradientTransformation) -> TrainState:
    """What a checkpoint holds: parameters, other model state, optimizer state, step, epoch."""
    return {
        "params": params,
        "rest": rest,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "epoch": jnp.zeros((), jnp.int32),
    }


def _put(tree: Any, sharding: NamedSharding) -> Any:
    """Places host arrays on the mesh; works the same with one process or several."""

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put, tree)


def _check_config(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """Rejects settings the loop cannot run with, naming the field."""
    positive = {
        "steps_per_call": config.steps_per_call,
        "eval_batch_size": config.eval_batch_size,
        "checkpoint.keep": config.checkpoint.keep,
        "checkpoint.every_epochs": config.checkpoint.every_epochs,
    }
    if config.get("steps_per_epoch") is not None:
        positive["steps_per_epoch"] = config.steps_per_epoch
    for key, value in positive.items():
        if value <= 0:
            raise UserError(f"config.{key}={value} must be positive (--config.{key}=N).")
    if config.num_epochs < 0:
        raise UserError(f"config.num_epochs={config.num_epochs} must not be negative.")
    _check_batch_size(config, mesh)


def _check_batch_size(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    if config.batch_size <= 0 or config.batch_size % mesh.size:
        suggestion = max(mesh.size, config.batch_size // mesh.size * mesh.size)
        where = (
            "of this machine"
            if jax.process_count() == 1
            else f"of this run ({jax.process_count()} processes, {jax.local_device_count()} "
            "devices each; config.batch_size is the global batch)"
        )
        raise UserError(
            f"config.batch_size={config.batch_size} does not divide over the {mesh.size} devices "
            f"{where}: each device takes an equal share of every batch. Use a multiple "
            f"of {mesh.size} (e.g. --config.batch_size={suggestion}), "
            "or run on fewer devices (e.g. CUDA_VISIBLE_DEVICES)."
        )


def checkpoint_steps(workdir: str | Path) -> list[int]:
    """The steps of the checkpoints in a run directory, ascending (empty without any)."""
    checkpoints = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in checkpoints.glob("*") if p.name.isdigit())


def check_enough_data(task: Task, config: ml_collections.ConfigDict) -> None:
    """Refuses a training set smaller than one batch."""
    if task.num_train < config.batch_size:
        raise UserError(
            f"The training set has {task.num_train} examples, fewer than one batch "
            f"(config.batch_size={config.batch_size}). Lower the batch size or use more data "
            "(config.data.limit_train)."
        )


def _save_config(config: ml_collections.ConfigDict, workdir: Path, *, write: bool = True) -> None:
    """Writes ``config.json`` (unless ``write`` is false; process 0 writes, the others check that
    they see it); refuses to resume a workdir whose checkpoints come from a different config.
    (Without a checkpoint there is nothing to mix, so a run that failed before its first
    checkpoint can be retried with corrected settings.)"""
    path = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if path.exists() and checkpoint_steps(workdir):
        previous = json.loads(path.read_text())
        old, new = flatten_dict(previous, sep="."), flatten_dict(current, sep=".")
        changed = sorted(
            k
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k)
            and (k not in RESUMABLE_CHANGES or None in (old.get(k), new.get(k)))
        )
        if changed:
            raise UserError(
                f"{workdir} holds a run with a different config (changed: {', '.join(changed)}); "
                "resuming it would mix two experiments. Pass the same overrides as before to "
                "resume, or choose a new --workdir."
            )
    if not write:
        return
    distributed.barrier("lnexp: config.json checked")  # No process reads it while it is written.
    if jax.process_index() == 0:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)  # Atomic: a kill never leaves half a config behind.
    if jax.process_count() > 1:
        distributed.barrier("lnexp: config.json written")
        _check_processes_share(path, current)


def _check_processes_share(path: Path, config: dict[str, Any]) -> None:
    """Refuses a multi-process run whose processes do not all see ``config`` in the
    ``config.json`` that process 0 wrote (a workdir not on a shared filesystem, or different
    configs given to different hosts)."""
    seen = json.loads(path.read_text()) if path.exists() else None
    views = distributed.all_processes(0 if seen == config else 1 if seen is None else 2)
    problems = []
    if blind := [i for i, v in enumerate(views) if v == 1]:
        problems.append(
            f"{_processes(blind)} not see the {path} that process 0 wrote: the workdir must be "
            "on a filesystem that every host shares (all processes write the checkpoints and "
            "resume from them)."
        )
    if other := [i for i, v in enumerate(views) if v == 2]:
        problems.append(
            f"{_processes(other)} not have the config of process 0: every process must run the "
            "same command (only the process flags differ)."
        )
    if problems:
        raise UserError(" ".join(problems))


def _processes(ids: list[int]) -> str:
    """``'Process 1 does'``, ``'Processes 1, 3 do'``."""
    if len(ids) == 1:
        return f"Process {ids[0]} does"
    return f"Processes {', '.join(map(str, ids))} do"


def _eval_layout(split: Mapping[str, np.ndarray], eval_batch: int) -> dict[str, np.ndarray]:
    """Pads a split to whole evaluation batches: arrays ``(num_batches, eval_batch, ...)``.

    A ``'weight'`` array marks the real examples (1) and the padding (0).
    """
    n = len(next(iter(split.values())))
    num_batches = -(-n // eval_batch)
    pad = num_batches * eval_batch - n
    out = {}
    for key, a in split.items():
        a = np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
        out[key] = a.reshape(num_batches, eval_batch, *a.shape[1:])
    weight = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    out["weight"] = weight.reshape(num_batches, eval_batch)
    return out


class Trainer:
    """The jitted functions of one run; built once from a task, a mesh and an optimizer."""

    def __init__(self, task: Task, tx: optax.GradientTransformation, mesh: Mesh, seed: int):
        self.task, self.tx, self.mesh = task, tx, mesh
        self.replicated = NamedSharding(mesh, P())
        self.batch_sharding = NamedSharding(mesh, P("data"))
        self.index_sharding = NamedSharding(mesh, P(None, "data"))
        self.eval_sharding = NamedSharding(mesh, P(None, "data"))  # (batches, batch, ...)
        model = task.model
        model.train()
        self.train_graph, params, rest = nnx.split(model, nnx.Param, ...)
        model.eval()
        self.eval_graph = nnx.split(model, nnx.Param, ...)[0]
        model.train()
        self.rng = jax.random.key(seed)
        self.initial_state = make_train_state(params, rest, tx)
        self._train_chunk = jax.jit(
            self._train_chunk_impl,
            donate_argnums=0,
            static_argnames="width",
            out_shardings=(self.replicated, self.replicated),
        )
        self._evaluate = jax.jit(self._evaluate_impl, out_shardings=self.replicated)
        self._compiled: dict[tuple[int, int | None], Any] = {}  # (steps, width) -> compiled
        self.compile_seconds = 0.0

    def put_data(self, eval_batch: int):
        """Places the task's data on the mesh: ``(constants, train_data, eval_data)``, the
        training set and constants replicated, each evaluation split in whole ``eval_batch``
        batches sharded over ``'data'``."""
        constants = _put(self.task.constants, self.replicated)
        examples = _put(self.task.train_data, self.replicated)
        train_data = {"examples": examples, "constants": constants}
        eval_data = {
            name: _put(_eval_layout(split, eval_batch), self.eval_sharding)
            for name, split in self.task.eval_data.items()
        }
        return constants, train_data, eval_data

    def _make_batch(self, constants, examples, width: int | None):
        examples = jax.lax.with_sharding_constraint(examples, self.batch_sharding)
        if self.task.make_batch is None:
            return examples
        batch = self.task.make_batch(constants, examples, width)
        return jax.lax.with_sharding_constraint(batch, self.batch_sharding)

    def _train_step(
        self, data, width: int | None, run_rng: jax.Array, state: TrainState, idx: jax.Array
    ):
        examples = jax.tree.map(lambda a: a[idx], data["examples"])
        batch = self._make_batch(data["constants"], examples, width)
        rng = jax.random.fold_in(run_rng, state["step"])

        def loss_fn(params):
            # copy=True: the merged Variables must belong to this (grad) trace, or batch norm's
            # update of its BatchStat running averages fails with a TraceContextError.
            model = nnx.merge(self.train_graph, params, state["rest"], copy=True)
            loss, metrics = self.task.loss_fn(model, batch, rng)
            return loss, (metrics, nnx.state(model, nnx.Not(nnx.Param)))

        (loss, (metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = dict(
            state, params=params, rest=rest, opt_state=opt_state, step=state["step"] + 1
        )
        return new_state, {"loss": loss, **metrics}

    def _train_chunk_impl(self, state: TrainState, data, indices: jax.Array, *, width):
        step = functools.partial(self._train_step, data, width, self.rng)
        return jax.lax.scan(step, state, indices)

    def train_chunk(self, state: TrainState, data, chunk: Chunk):
        """Runs the chunk's training steps in one call; returns the new state and the per-step
        metrics. Compiles once per chunk length and width (ahead of time, so that the compile
        time is counted in ``compile_seconds`` and not in the throughput)."""
        indices = _put(chunk.indices, self.index_sharding)
        if (key := (len(indices), chunk.width)) not in self._compiled:
            t0 = time.perf_counter()
            lowered = self._train_chunk.lower(state, data, indices, width=chunk.width)
            self._compiled[key] = lowered.compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[key](state, data, indices)

    def _evaluate_impl(self, params, rest, constants, split):
        model = nnx.merge(self.eval_graph, params, rest)

        def body(totals, examples):
            weight = examples.pop("weight")
            batch = self._make_batch(constants, examples, None)
            values = self.task.eval_fn(model, batch)
            sums = {k: jnp.sum(v.astype(jnp.float32) * weight) for k, v in values.items()}
            return jax.tree.map(jnp.add, totals, sums), None

        first = {k: v[0] for k, v in split.items() if k != "weight"}
        shapes = jax.eval_shape(
            lambda b: self.task.eval_fn(model, self._make_batch(constants, b, None)), first
        )
        zeros = {k: jnp.zeros((), jnp.float32) for k in shapes}
        totals, _ = jax.lax.scan(body, zeros, dict(split))
        count = jnp.sum(split["weight"])
        return {k: v / count for k, v in totals.items()}

    def evaluate(self, state: TrainState, constants, split) -> dict[str, float]:
        out = self._evaluate(state["params"], state["rest"], constants, split)
        means = {k: float(v) for k, v in jax.device_get(out).items()}
        summarize = self.task.summarize_eval
        return means if summarize is None else summarize(means)


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
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    mesh = make_mesh()
    config = resolve_learning_rate(config)
    _check_config(config, mesh)
    _save_config(config, workdir, write=False)  # Refuses another run's workdir before any work.

    task = build_task(config)
    trainer = Trainer(task, make_optimizer(config), mesh, config.seed)
    check_enough_data(task, config)
    # Written only once the config is known to be valid: a run refused for a bad value must not
    # leave a config.json behind that then refuses the corrected run as "a different config".
    _save_config(config, workdir)
    schedule = Schedule(
        num_examples=task.num_train,
        batch_size=config.batch_size,
        steps_per_call=config.steps_per_call,
        seed=config.seed,
        steps_per_epoch=config.get("steps_per_epoch"),
        lengths=task.lengths,
    )
    total_steps = schedule.epoch_steps * config.num_epochs
    eval_batch = -(-config.eval_batch_size // mesh.size) * mesh.size

    if is_main:
        for name, text in task.files.items():
            (workdir / name).write_text(text, encoding="utf-8")
    constants, train_data, eval_data = trainer.put_data(eval_batch)

    checkpoints = ocp.CheckpointManager(
        workdir / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=config.checkpoint.keep, create=True),
    )
    latest = checkpoints.latest_step()
    if len(latests := set(distributed.all_processes(-1 if latest is None else latest))) > 1:
        raise UserError(
            f"The processes see different last checkpoints in {workdir / 'checkpoints'} "
            f"(steps {sorted(latests)}; -1: none): the workdir must be on a filesystem that "
            "every host shares, with no other run writing to it."
        )
    writer = MetricWriter(workdir, enabled=is_main, purge_after=latest or 0)
    state = _put(trainer.initial_state, trainer.replicated)
    wall_before = 0.0
    last_record: dict[str, Any] = {}
    if latest is not None:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        state = checkpoints.restore(latest, args=ocp.args.StandardRestore(abstract))
        kept = writer.truncate_after(latest)
        if kept:
            last_record = kept[-1]
            wall_before = last_record["wall_s"]
        if is_main:
            logging.info("Resumed from the checkpoint at step %d in %s.", latest, workdir)
    else:
        # Records of a run killed before its first checkpoint was finalized: it starts over.
        writer.truncate_after(0)

    start_epoch = int(state["epoch"])
    progress = ProgressLine(
        total_steps, start_step=int(state["step"]), every_s=config.log_every_s, enabled=is_main
    )
    t_start = time.perf_counter()
    try:
        for epoch in range(start_epoch + 1, config.num_epochs + 1):
            state, train_metrics, train_seconds = _train_epoch(
                trainer, state, train_data, schedule, config, epoch, progress
            )
            evals = {
                name: trainer.evaluate(state, constants, split) for name, split in eval_data.items()
            }
            record = epoch_record(
                epoch,
                int(state["step"]),
                evals,
                train_metrics,
                examples_per_sec=len(train_metrics["loss"]) * config.batch_size / train_seconds,
                unit=task.unit,
                compile_s=trainer.compile_seconds,
                wall_s=wall_before + time.perf_counter() - t_start,
            )
            progress.done()
            _check_finite(record)
            if is_main:  # The other processes have the same numbers.
                logging.info(_summary(record, config.num_epochs))
            writer.write(record)
            last_record = record
            state["epoch"] = _put(np.int32(epoch), trainer.replicated)
            if epoch % config.checkpoint.every_epochs == 0 or epoch == config.num_epochs:
                checkpoints.save(int(state["step"]), args=ocp.args.StandardSave(state))
    finally:
        checkpoints.wait_until_finished()
        checkpoints.close()
        writer.close()
    return last_record


def _train_epoch(
    trainer: Trainer, state, train_data, schedule: Schedule, config, epoch: int, progress
):
    """Runs one epoch in calls of ``steps_per_call`` fused steps; stops on a non-finite loss."""
    per_step = []
    seconds = 0.0
    epoch_start_step = int(state["step"])  # The host tracks the step from here on.
    done = 0
    for chunk in schedule.epoch_chunks(epoch):
        first_step = epoch_start_step + done
        t0, compile_before = time.perf_counter(), trainer.compile_seconds
        state, metrics = trainer.train_chunk(state, train_data, chunk)
        metrics = jax.device_get(metrics)  # One transfer per chunk; waits for it.
        loss = metrics["loss"]
        seconds += time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
        if not np.all(np.isfinite(loss)):
            bad = first_step + int(np.argmin(np.isfinite(loss))) + 1
            raise UserError(
                f"Training diverged: the loss became {loss[~np.isfinite(loss)][0]} at epoch "
                f"{epoch}, step {bad}. The run stopped and wrote nothing for epoch {epoch}; "
                "checkpoints of earlier epochs are kept. The same command would diverge the "
                "same way: lower --config.optimizer.learning_rate or set "
                "--config.optimizer.grad_clip_norm, in a new --workdir (or in this one if no "
                "checkpoint was written yet)."
            )
        per_step.append(metrics)
        done += len(chunk.indices)
        rate = done * config.batch_size / seconds
        progress.update(
            f"epoch {epoch}/{config.num_epochs} | loss {loss.mean():.4f} | "
            f"{rate:,.0f} {trainer.task.unit}/s",
            epoch_start_step + done,
        )
    return state, {k: np.concatenate([m[k] for m in per_step]) for k in per_step[0]}, seconds


def epoch_record(
    epoch: int,
    step: int,
    evals: Mapping[str, Mapping[str, float]],
    train_metrics: Mapping[str, np.ndarray],
    *,
    examples_per_sec: float,
    unit: str,
    compile_s: float,
    wall_s: float,
) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of an epoch: ``<split>_<name>`` evaluations, the training-mode
    loss (``train_loss``) and the task's other metrics (``train_batch_<name>``) averaged over the
    epoch's steps, throughput (also as ``<unit>_per_sec``, e.g. sentences), compile and wall
    time."""
    record: dict[str, Any] = {"epoch": epoch, "step": step}
    for split, values in evals.items():
        for key, value in values.items():
            record[f"{split}_{key}"] = value
    for key, values in train_metrics.items():
        record["train_loss" if key == "loss" else f"train_batch_{key}"] = float(np.mean(values))
    record["examples_per_sec"] = examples_per_sec
    if unit != "examples":
        record[f"{unit}_per_sec"] = examples_per_sec
    record["compile_s"] = compile_s
    record["wall_s"] = wall_s
    return record


def _check_finite(record: Mapping[str, Any]) -> None:
    """Stops before a non-finite evaluation (e.g. from the epoch's last update) is recorded or
    checkpointed."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad:
        raise UserError(
            f"Training diverged: {', '.join(bad)} became non-finite after epoch "
            f"{record['epoch']} (step {record['step']}). Nothing was written for this epoch; "
            "checkpoints of earlier epochs are kept. Lower --config.optimizer.learning_rate or "
            "set --config.optimizer.grad_clip_norm, in a new --workdir."
        )


def _summary(record: Mapping[str, Any], num_epochs: int) -> str:
    metrics = ", ".join(
        f"{k} {v:.4g}"
        for k, v in record.items()
        if k not in ("epoch", "step", "wall_s", "compile_s") and not k.endswith("_per_sec")
    )
    return (
        f"epoch {record['epoch']}/{num_epochs} (step {record['step']}): {metrics} | "
        f"{record['examples_per_sec']:,.0f} examples/s | {format_duration(record['wall_s'])}"
    )
