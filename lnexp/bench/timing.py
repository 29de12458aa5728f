"""Timing rows: compile and warm up each configuration, then time them all round-robin.

A row is prepared first (compiled, warmed up: a :class:`Prepared` whose ``step()`` runs one
synchronous call) and timed later by :func:`time_interleaved` together with the other rows of its
section, one call of each row per round, so that drift in the machine's speed (other tenants,
frequency changes) falls on every row alike. A call may hold several training steps (``steps``)
and ``items`` examples, tokens or sentences; rows report the median time per training step and
items per second.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax

Row = dict[str, Any]
TORCH_INSTALL = "pip install torch==2.13.0"
TORCH_TWINS = ("none", "layer", "batch")
"""The methods of :data:`lnexp.norms.REGISTRY` that :func:`lnexp.studies.pimnist.bench.torch_mlp`
builds in PyTorch too, so the ``pimnist`` section can time them against it; a new method needs a
PyTorch twin there (and its name here) to be timed, nothing else."""


@dataclasses.dataclass
class Prepared:
    """A compiled, warmed-up row waiting to be timed: ``step()`` runs one synchronous call.

    Attributes:
        name: The row's name.
        framework: ``'jax'``, ``'flax'``, ``'torch'``.
        step: Runs one call and waits for its result.
        compile_s: Seconds spent compiling (``None`` when nothing was compiled).
        items: Examples (tokens, sentences) processed per call.
        steps: Training steps per call.
        unit: What ``items`` counts; the row reports ``<unit>_per_s``.
        extra: Fields copied into the row.
        settle: Untimed calls before each timed one. A call that follows another row's heavier
            work finds the caches filled with that row's data and the thread pool parked: for a
            sub-millisecond call this costs 2-3x its time, and more for some rows than others
            (the norms section saw lnexp's LayerNorm at 2.2x RMSNorm right after the residual
            stacks, 1.1x after itself), so such rows settle first and time their steady state.
    """

    name: str
    framework: str
    step: Callable[[], Any]
    compile_s: float | None
    items: int = 1
    steps: int = 1
    unit: str = "tokens"
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    settle: int = 0


def timing_row(p: Prepared, times: list[float]) -> Row:
    """The row of ``p`` from its call times: medians per training step, items per second."""
    median = statistics.median(times)
    return {
        "name": p.name,
        "framework": p.framework,
        "compile_s": p.compile_s,
        "median_ms": 1e3 * median / p.steps,
        "min_ms": 1e3 * min(times) / p.steps,
        f"{p.unit}_per_s": p.items / median,
        "repeats": len(times),
        **p.extra,
    }


def note_row(name: str, framework: str, *, skipped: str | None = None, error: str | None = None):
    """A row that was not timed, with the reason."""
    return {"name": name, "framework": framework, "skipped": skipped, "error": error}


def time_interleaved(prepared: list[Prepared], repeats: int) -> list[Row]:
    """Times every row ``repeats`` times, round-robin (one timed call of each row per round,
    after its ``settle`` untimed ones)."""
    times: list[list[float]] = [[] for _ in prepared]
    for _ in range(repeats):
        for p, row_times in zip(prepared, times, strict=True):
            for _ in range(p.settle):
                p.step()
            start = time.perf_counter()
            p.step()
            row_times.append(time.perf_counter() - start)
    return [timing_row(p, t) for p, t in zip(prepared, times, strict=True)]


def time_rows(rows: list[Prepared | Row], repeats: int) -> list[Row]:
    """Times the prepared rows round-robin; note rows pass through, order kept."""
    timed = iter(time_interleaved([r for r in rows if isinstance(r, Prepared)], repeats))
    return [next(timed) if isinstance(r, Prepared) else r for r in rows]


def prepare_jax(
    name: str, loss_fn: Callable[..., jax.Array], args: tuple[Any, ...], warmup: int, **kwargs
) -> Prepared:
    """Compiles and warms up ``jax.jit(jax.value_and_grad(loss_fn, argnums=all))``."""
    step = jax.jit(jax.value_and_grad(loss_fn, argnums=tuple(range(len(args)))))
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    call = lambda: jax.block_until_ready(compiled(*args))  # noqa: E731
    return Prepared(name, "jax", call, compile_s, **kwargs)


def prepare_chunk(
    name: str, trainer, chunk, *, items: int, steps: int, unit: str, extra: dict | None = None
) -> Prepared:
    """One call of a training loop's jitted chunk (:meth:`lnexp.training.Trainer.train_chunk`):
    the trainer's initial state and its task's data placed on the devices, the chunk compiled
    (``compile_s``) and run once; each call then continues from the donated state."""
    place = functools.partial(jax.device_put, device=trainer.replicated)
    data = {"examples": place(trainer.task.train_data), "constants": place(trainer.task.constants)}
    holder = {"state": place(trainer.initial_state)}

    def call():
        holder["state"], metrics = trainer.train_chunk(holder["state"], data, chunk)
        jax.block_until_ready(metrics)

    before = trainer.compile_seconds
    call()
    compile_s = trainer.compile_seconds - before
    return Prepared(name, "jax", call, compile_s, items, steps, unit, dict(extra or {}))


def import_torch():
    """The ``torch`` module, or ``None`` when it is not installed (it is an optional extra)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def first_line(error: BaseException) -> str:
    """``'TypeName: first line of the message'``, for a row's error note."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
