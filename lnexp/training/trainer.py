"""The jitted compute of the loop: initial state, the fused chunk of training steps, evaluation.

A :class:`Trainer` trains ``S`` seeds of one task. With one seed (``S == 1``) it is the plain
program of one run: the state has no seed axis and nothing is vmapped. With several it stacks
the seeds' states on a leading seed axis and runs the training step and the evaluation under
:func:`jax.vmap`, so that the seeds pay a small model's fixed costs (dispatching many small
operations) once and compile once; each seed keeps its own initialization, batch order and
random stream ``fold_in(key(seed), step)``. Whether that is faster depends on the model and the
machine: a step bound by arithmetic or by memory bandwidth (large layers) gains nothing and can
lose (``scripts/bench.py --sections seeds`` measures it; the README has the numbers).

The seeds' numbers match separate runs up to float rounding, not bit for bit: batched matrix
products may sum in another order (``tests/test_seeds.py`` bounds the difference over a few
steps). Over many steps the difference grows as any rounding difference does (as between one
and several devices): after 2 epochs of PI-MNIST (784-100-100-10, layer norm), four seeds'
test errors were within 0.08 points of their separate runs' at batch 128 (858 steps) and within
0.25 points at batch 4 (27,500 steps; the four seeds' standard deviation was 0.45).

Placement: one ``('data',)`` mesh; parameters and optimizer state replicated (the seed axis
too), batches sharded on the batch axis, so batch-norm statistics are over the global batch.

Mixed precision: the model computes in its own dtype (``config.dtype``, passed to every layer by
the experiment's ``build_model``); the trainer always holds float32 parameters and optimizer
state. With a :class:`~lnexp.training.loss_scale.DynamicLossScale` (float16) each step
differentiates the scaled loss, unscales the gradients, and when they are not all finite keeps
the parameters, the other model state and the optimizer state as they were (the step still
counts; the optimizer's own update count, which drives its learning-rate schedule, does not
advance); the per-step metrics then also hold ``loss_scale`` (the scale the step used) and
``skipped`` (1 for a skipped step).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lnexp.studies import Task
from lnexp.training.batches import Chunk
from lnexp.training.loss_scale import DynamicLossScale, all_finite

TrainState = dict[str, Any]


def make_mesh() -> Mesh:
    """A one-axis ``('data',)`` mesh over every device of every process.

    Built directly rather than with ``jax.make_mesh``, which makes the axis ``Explicit`` (sharding
    in types); the loop relies on the default automatic sharding propagation.
    """
    return Mesh(np.asarray(jax.devices()), ("data",))


def make_train_state(
    params, rest, tx: optax.GradientTransformation, loss_scale: DynamicLossScale | None = None
) -> TrainState:
    """What a checkpoint holds: parameters, other model state, optimizer state, step, epoch,
    and with ``loss_scale`` (float16) the scaler's state."""
    state = {
        "params": params,
        "rest": rest,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "epoch": jnp.zeros((), jnp.int32),
    }
    if loss_scale is not None:
        state["loss_scale"] = loss_scale.init()
    return state


def put(tree: Any, sharding: NamedSharding) -> Any:
    """Places host arrays on the mesh; works the same with one process or several."""

    def put_one(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])

    return jax.tree.map(put_one, tree)


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
    """The jitted functions of ``S`` seeds of one task; built once from a task, an optimizer, a
    mesh and the seeds.

    Args:
        task: The task (of the first seed): data, loss and evaluation, shared by every seed.
        tx: The optimizer.
        mesh: The ``('data',)`` mesh.
        seeds: One seed, or several to train together (a seed axis under ``jax.vmap``).
        models: With several seeds, one freshly initialized model per seed, all of one structure
            (the first is ``task.model``); default ``[task.model]``.
        loss_scale: Dynamic loss scaling (float16 models; see the module docstring), or
            ``None``.

    Usage (as :mod:`lnexp.training.loop` builds it from a task, an optimizer and a mesh)::

        trainer = Trainer(task, tx, mesh, seed)
        together = Trainer(task, tx, mesh, [0, 1], models=[task.model, other.model])
        state, metrics = together.train_chunk(state, data, together.stack_chunks(chunks))
    """

    def __init__(
        self,
        task: Task,
        tx: optax.GradientTransformation,
        mesh: Mesh,
        seeds: int | Sequence[int],
        models: Sequence[nnx.Module] | None = None,
        loss_scale: DynamicLossScale | None = None,
    ):
        self.task, self.tx, self.mesh = task, tx, mesh
        self.loss_scale = loss_scale
        self.seeds = [int(seeds)] if isinstance(seeds, int | np.integer) else list(map(int, seeds))
        models = [task.model] if models is None else list(models)
        if len(models) != len(self.seeds):
            raise ValueError(f"{len(models)} models for {len(self.seeds)} seeds.")
        self.vectorized = len(self.seeds) > 1
        lead = (None,) if self.vectorized else ()  # The seed axis, when there is one.
        self.replicated = NamedSharding(mesh, P())
        self.batch_sharding = NamedSharding(mesh, P("data"))
        self.index_sharding = NamedSharding(mesh, P(None, *lead, "data"))  # (steps, [S,] batch)
        self.eval_sharding = NamedSharding(mesh, P(None, "data"))  # (batches, batch, ...)
        model = task.model
        model.train()
        self.train_graph, params, rest = nnx.split(model, nnx.Param, ...)
        model.eval()
        self.eval_graph = nnx.split(model, nnx.Param, ...)[0]
        model.train()
        states = [make_train_state(params, rest, tx, loss_scale)]
        for other in models[1:]:
            other.train()
            _, other_params, other_rest = nnx.split(other, nnx.Param, ...)
            states.append(make_train_state(other_params, other_rest, tx, loss_scale))
        keys = [jax.random.key(seed) for seed in self.seeds]
        if self.vectorized:
            self.initial_state = jax.tree.map(lambda *leaves: np.stack(leaves), *states)
            self.rng = jnp.stack(keys)
        else:
            self.initial_state, self.rng = states[0], keys[0]
        self._train_chunk = jax.jit(
            self._train_chunk_impl,
            donate_argnums=0,
            static_argnames="width",
            out_shardings=(self.replicated, self.replicated),
        )
        self._evaluate = jax.jit(self._evaluate_impl, out_shardings=self.replicated)
        self._unstack = jax.jit(self._unstack_impl, out_shardings=self.replicated)
        self._stack = jax.jit(self._stack_impl, out_shardings=self.replicated)
        self._compiled: dict[tuple[int, int | None], Any] = {}  # (steps, width) -> compiled
        self.compile_seconds = 0.0

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    # ----------------------------------------------------------------------------------------
    # Data and state on the mesh.

    def put_data(self, eval_batch: int):
        """Places the task's data on the mesh: ``(constants, train_data, eval_data)``, the
        training set and constants replicated, each evaluation split in whole ``eval_batch``
        batches sharded over ``'data'``."""
        constants = put(self.task.constants, self.replicated)
        examples = put(self.task.train_data, self.replicated)
        train_data = {"examples": examples, "constants": constants}
        eval_data = {
            name: put(_eval_layout(split, eval_batch), self.eval_sharding)
            for name, split in self.task.eval_data.items()
        }
        return constants, train_data, eval_data

    def seed_target(self) -> TrainState:
        """The shapes of one seed's state, replicated (what a checkpoint restores into)."""
        cut = 1 if self.vectorized else 0
        return jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(np.shape(a)[cut:], a.dtype, sharding=self.replicated),
            self.initial_state,
        )

    def unstack(self, state: TrainState) -> list[TrainState]:
        """The seeds' own states (what each seed's run directory checkpoints)."""
        return self._unstack(state) if self.vectorized else [state]

    def stack(self, states: Sequence[TrainState]) -> TrainState:
        """The inverse of :meth:`unstack`."""
        return self._stack(list(states)) if self.vectorized else states[0]

    def _unstack_impl(self, state: TrainState) -> list[TrainState]:
        return [jax.tree.map(lambda a, i=i: a[i], state) for i in range(self.num_seeds)]

    def _stack_impl(self, states: Sequence[TrainState]) -> TrainState:
        return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)

    def counter(self, state: TrainState, name: str) -> int:
        """``state[name]`` (``'step'`` or ``'epoch'``), which every seed shares."""
        value = state[name]
        return int(value[0] if self.vectorized else value)

    def with_epoch(self, state: TrainState, epoch: int) -> TrainState:
        value = np.full(self.num_seeds, epoch, np.int32) if self.vectorized else np.int32(epoch)
        return dict(state, epoch=put(value, self.replicated))

    # ----------------------------------------------------------------------------------------
    # Training.

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

        scaler = self.loss_scale

        def loss_fn(params):
            # copy=True: the merged Variables must belong to this (grad) trace, or batch norm's
            # update of its BatchStat running averages fails with a TraceContextError.
            model = nnx.merge(self.train_graph, params, state["rest"], copy=True)
            loss, metrics = self.task.loss_fn(model, batch, rng)
            rest = nnx.state(model, nnx.Not(nnx.Param))
            objective = loss if scaler is None else scaler.scale(state["loss_scale"], loss)
            return objective, (loss, metrics, rest)

        (_, (loss, metrics, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"]
        )
        if scaler is not None:
            grads = scaler.unscale(state["loss_scale"], grads)
        updates, opt_state = self.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new_state = dict(
            state, params=params, rest=rest, opt_state=opt_state, step=state["step"] + 1
        )
        if scaler is None:
            return new_state, {"loss": loss, **metrics}
        # An overflow: the step is skipped (everything but the step count as it was).
        finite = all_finite(grads) & jnp.isfinite(loss)
        for key in ("params", "rest", "opt_state"):
            new_state[key] = jax.tree.map(
                lambda new, old: jnp.where(finite, new, old), new_state[key], state[key]
            )
        new_state["loss_scale"] = scaler.update(state["loss_scale"], finite)
        scale_metrics = {
            "loss_scale": state["loss_scale"]["scale"],
            "skipped": (~finite).astype(jnp.float32),
        }
        return new_state, {"loss": loss, **metrics, **scale_metrics}

    def _train_chunk_impl(self, state: TrainState, data, indices: jax.Array, *, width):
        if not self.vectorized:
            step = functools.partial(self._train_step, data, width, self.rng)
            return jax.lax.scan(step, state, indices)
        step = jax.vmap(functools.partial(self._train_step, data, width))
        return jax.lax.scan(lambda s, idx: step(self.rng, s, idx), state, indices)

    def stack_chunks(self, chunks: Sequence[Chunk]) -> Chunk:
        """One chunk of every seed (as many steps each) -> the chunk of this trainer: indices
        ``(steps, batch)`` for one seed, ``(steps, seeds, batch)`` for several."""
        if not self.vectorized:
            return chunks[0]
        return Chunk(np.stack([c.indices for c in chunks], axis=1), chunks[0].width)

    def train_chunk(self, state: TrainState, data, chunk: Chunk):
        """Runs the chunk's training steps in one call; returns the new state and the per-step
        metrics (``(steps,)``, or ``(steps, seeds)`` with several seeds). Compiles once per chunk
        length and width (ahead of time, so that the compile time is counted in
        ``compile_seconds`` and not in the throughput)."""
        indices = put(chunk.indices, self.index_sharding)
        if (key := (len(indices), chunk.width)) not in self._compiled:
            t0 = time.perf_counter()
            lowered = self._train_chunk.lower(state, data, indices, width=chunk.width)
            self._compiled[key] = lowered.compile()
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[key](state, data, indices)

    # ----------------------------------------------------------------------------------------
    # Evaluation.

    def _evaluate_one(self, params, rest, constants, split):
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

    def _evaluate_impl(self, params, rest, constants, split):
        if not self.vectorized:
            return self._evaluate_one(params, rest, constants, split)
        evaluate_one = functools.partial(self._evaluate_one, constants=constants, split=split)
        return jax.vmap(evaluate_one)(params, rest)

    def evaluate(self, state: TrainState, constants, split) -> list[dict[str, float]]:
        """Evaluates every seed on ``split`` in one pass: one dict of means per seed."""
        out = jax.device_get(self._evaluate(state["params"], state["rest"], constants, split))
        if self.vectorized:
            means = [{k: float(v[i]) for k, v in out.items()} for i in range(self.num_seeds)]
        else:
            means = [{k: float(v) for k, v in out.items()}]
        summarize = self.task.summarize_eval
        return means if summarize is None else [summarize(m) for m in means]
