"""The PI-MNIST section: training throughput of the paper's MLP against PyTorch and the machine.

For every normalization (none, layer, batch) and batch size (128 and 4) it times

* **lnexp**: the training loop's own jitted chunk (:class:`lnexp.training.Trainer`): a ``lax.scan``
  of ``examples // batch`` steps, each gathering its batch from the device-resident training set,
  forward, backward and Adam, the state donated;
* **lnexp with plain SGD** in place of Adam (no normalization only): the difference is what the
  Adam update costs;
* **PyTorch** doing the same work (batches gathered from a uint8 tensor by the same indices, the
  same 784-1000-1000-10 model and placement of the normalizers, Adam): eager with PyTorch's
  default Adam, eager with the fused Adam (``fused=True``), and ``torch.compile`` of the
  forward and loss with the fused Adam;

on synthetic MNIST-shaped data (55,000 uint8 images, 10 classes: throughput does not depend on
the pixels). Steady state: compile time is reported apart, each call is timed round-robin with
the other rows (:func:`lnexp.bench.timing.time_interleaved`).

The machine's limits (:mod:`lnexp.bench.machine`) turn into the best possible examples/s, a
roofline: a step takes at least ``max(batch * F / R, B / W)`` where

* ``F`` = float32 FLOPs per example of a training step: the forward products ``2 * sum(in * out)``,
  the weight gradients as many again, and the input gradients of every layer but the first;
* ``R`` = the measured matmul rate;
* ``B`` = bytes a step must move at least: 10 passes over the ``P`` float32 parameters (the
  forward and the backward pass each read the weights, the backward pass writes the gradients,
  Adam reads parameters, gradients and both moments and writes parameters and moments);
* ``W`` = the measured memory bandwidth (STREAM's triad over arrays larger than the last-level
  cache).

At batch 128 the matmul term dominates, at batch 4 the memory term. A second limit assumes every
byte comes from the cache instead (``W`` = the best triad over arrays as large as the parameters;
one seed's parameters, gradients and moments, 29 MB, nearly fit a 32 MB last-level cache): it
is what a step could reach if it kept all its data there.

PyTorch's batch norm normalizes with the biased batch variance where lnexp uses the unbiased one
at batch sizes up to 16 (the paper's choice); the cost is the same.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax import nnx

from lnexp import norms
from lnexp.bench.machine import machine_limits
from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import (
    TORCH_INSTALL,
    TORCH_TWINS,
    Prepared,
    Row,
    first_line,
    import_torch,
    note_row,
    prepare_chunk,
    time_rows,
)
from lnexp.data.mnist import pixels_to_unit_interval
from lnexp.models.initializers import get_initializer
from lnexp.models.mlp import MLP
from lnexp.studies import Task
from lnexp.studies.classification import classification_fns
from lnexp.studies.pimnist.task import norm_kwargs
from lnexp.training.batches import Chunk, Schedule

SIZES = (784, 1000, 1000, 10)
NUM_TRAIN = 55_000
LEARNING_RATE = 3e-4  # configs/pimnist.py's; the speed does not depend on it.
EPSILON = 1e-5
BN_MOMENTUM = 0.99
PARAMETER_PASSES = 10  # Parameter-sized float32 arrays a training step reads or writes.

LNEXP = "lnexp"
LNEXP_SGD = "lnexp, SGD instead of Adam"  # What the Adam update costs, by difference.
TORCH_EAGER = "torch eager"
TORCH_FUSED = "torch eager, fused Adam"
TORCH_COMPILED = "torch.compile, fused Adam"
FRAMEWORKS = (LNEXP, TORCH_EAGER, TORCH_FUSED, TORCH_COMPILED)

# Goals of issue 8 on a 2-core CPU.
GOAL_SPEEDUP = {128: 1.8, 4: 3.0}  # x PyTorch eager
GOAL_FRACTION_OF_LIMIT = {128: 0.85, 4: 1 / 1.3}
GOAL_LAYER_OVERHEAD = 0.10  # Layer norm's extra time over no normalization at batch 128.
GOAL_X_BEST_TORCH = {128: 1.3, 4: 3.0}  # Issue 29: x PyTorch's fastest row (fused Adam).


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """The PI-MNIST grid of the section and its repetitions."""

    pimnist_norms: tuple[str, ...] = setting(
        TORCH_TWINS, "pimnist: methods (those with a PyTorch twin).", choices=TORCH_TWINS
    )
    pimnist_batches: tuple[int, ...] = setting((128, 4), "pimnist: batch sizes.")
    pimnist_examples: int = setting(
        1600, "pimnist: training examples per timed call (examples // batch steps)."
    )
    pimnist_repeats: int = setting(5, "pimnist: timed calls per row.")


def flops_per_example(sizes=SIZES) -> int:
    """Float32 FLOPs of one example's training step (matrix products only)."""
    products = [2 * i * o for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    return 2 * sum(products) + sum(products[1:])  # forward + weight grads, input grads


def synthetic_mnist(num_examples: int = NUM_TRAIN, seed: int = 0) -> dict[str, np.ndarray]:
    """MNIST-shaped training data: uint8 images ``(n, 784)`` and int32 labels."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (num_examples, 784), dtype=np.uint8),
        "label": rng.integers(0, 10, num_examples).astype(np.int32),
    }


def lnexp_model(norm: str, batch: int, seed: int) -> MLP:
    """The MLP of ``configs/pimnist.py`` with ``model.norm=norm`` at this batch size."""
    model = {"norm": norm, "epsilon": EPSILON, "bn_momentum": BN_MOMENTUM, "bn_unbiased": None}
    kwargs = norm_kwargs(ml_collections.ConfigDict({"batch_size": batch, "model": model}))
    return MLP(
        SIZES, norm=norm, kernel_init=get_initializer("he_normal"), rngs=nnx.Rngs(seed), **kwargs
    )


def batch_indices(batch: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch)`` training-example indices: the start of the loop's epoch 1."""
    schedule = Schedule(NUM_TRAIN, batch, steps_per_call=steps, seed=seed)
    return schedule.epoch_chunks(1)[0].indices[:steps]


def prepare_lnexp(
    norm: str, batch: int, steps: int, data, config: Settings, method: str = LNEXP
) -> Prepared:
    """The training loop's chunk of ``steps`` steps, compiled and warmed up (``LNEXP_SGD``:
    plain SGD in place of Adam)."""
    from lnexp.training import Trainer, make_mesh

    loss_fn, eval_fn = classification_fns(pixels_to_unit_interval)
    model = lnexp_model(norm, batch, config.seed)
    task = Task(model=model, train_data=data, eval_data={}, loss_fn=loss_fn, eval_fn=eval_fn)
    tx = optax.sgd(LEARNING_RATE) if method == LNEXP_SGD else optax.adam(LEARNING_RATE)
    trainer = Trainer(task, tx, make_mesh(), config.seed)
    return prepare_chunk(
        f"{method} norm={norm} batch={batch}",
        trainer,
        Chunk(batch_indices(batch, steps, config.seed), None),
        items=steps * batch,
        steps=steps,
        unit="examples",
        extra={"norm": norm, "batch": batch, "method": method},
    )


def torch_mlp(norm: str, seed: int = 0):
    """The same MLP in PyTorch: ``Linear`` (no bias before a normalizer), the normalizer, ReLU.

    ``norm`` is one of :data:`~lnexp.bench.timing.TORCH_TWINS`.
    """
    import torch

    if norm not in TORCH_TWINS:
        raise ValueError(f"No PyTorch twin of norm={norm!r}: expected one of {list(TORCH_TWINS)}.")
    torch.manual_seed(seed)
    layers: list[Any] = []
    for i, (d_in, d_out) in enumerate(zip(SIZES[:-1], SIZES[1:], strict=True)):
        last = i == len(SIZES) - 2
        n = norm if not last or norms.method(norm).normalizes_logits else "none"
        layers.append(torch.nn.Linear(d_in, d_out, bias=n == "none"))
        if n == "layer":
            layers.append(torch.nn.LayerNorm(d_out, eps=EPSILON))
        elif n == "batch":
            layers.append(torch.nn.BatchNorm1d(d_out, eps=EPSILON, momentum=1 - BN_MOMENTUM))
        if not last:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def prepare_torch(
    method: str, norm: str, batch: int, steps: int, data, config: Settings
) -> Prepared | Row:
    """PyTorch's training loop over the same batches; a note row if ``torch.compile`` fails."""
    import torch

    name = f"{method} norm={norm} batch={batch}"
    model = torch_mlp(norm, config.seed)
    images, labels = torch.from_numpy(data["image"]), torch.from_numpy(data["label"]).long()
    indices = torch.from_numpy(batch_indices(batch, steps, config.seed).astype(np.int64))
    fused = method != TORCH_EAGER
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=fused or None)

    def loss_fn(x, y):
        return torch.nn.functional.cross_entropy(model(x.float() / 255.0), y)

    if method == TORCH_COMPILED:
        torch._dynamo.reset()
        loss_fn = torch.compile(loss_fn)

    def call():
        for idx in indices:
            loss = loss_fn(images[idx], labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    compile_s = None
    start = time.perf_counter()
    try:
        call()  # Warms up; compiles the torch.compile row.
    except Exception as e:  # Inductor needs a C++ compiler; report, don't crash.
        return note_row(name, "torch", error=f"torch.compile failed: {first_line(e)}")
    if method == TORCH_COMPILED:
        compile_s = time.perf_counter() - start
    extra = {"norm": norm, "batch": batch, "method": method}
    extra["torch_threads"] = torch.get_num_threads()
    items = steps * batch
    return Prepared(name, "torch", call, compile_s, items, steps, "examples", extra)


@functools.cache
def limits(config: Settings) -> dict[str, Any]:
    """The machine's matmul rate and bandwidth, measured at this model's sizes and beyond."""
    num_params = parameter_count("none")
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048)]
    shapes += [(128, 784, 1000), (128, 1000, 1000), (1000, 128, 1000), (784, 128, 1000)]
    beyond_cache = 32 * 2**20  # 128 MiB arrays.
    return machine_limits(shapes, [num_params, beyond_cache], config.torch_threads)


@functools.cache
def parameter_count(norm: str) -> int:
    """Trainable float32 parameters of the MLP with ``norm``."""
    params = nnx.state(lnexp_model(norm, 128, 0), nnx.Param)
    return sum(x.size for x in jax.tree.leaves(params))


def roofline(norm: str, batch: int, lim: dict[str, Any]) -> dict[str, Any]:
    """The best possible examples/s of a training step and which limit sets it; also the limit
    with every byte from the cache (``cache_limit_examples_per_s``)."""
    compute_s = batch * flops_per_example() / lim["matmul_flops_per_s"]
    memory_bytes = PARAMETER_PASSES * 4 * parameter_count(norm)
    memory_s = memory_bytes / lim["bandwidth_bytes_per_s"]
    cache_s = memory_bytes / lim.get("cache_bandwidth_bytes_per_s", lim["bandwidth_bytes_per_s"])
    return {
        "limit_examples_per_s": batch / max(compute_s, memory_s),
        "cache_limit_examples_per_s": batch / max(compute_s, cache_s),
        "bound": "matmul" if compute_s >= memory_s else "memory",
        "bytes_per_step": memory_bytes,
        "flops_per_example": flops_per_example(),
    }


def run(config: Settings) -> dict[str, Any]:
    """Times every (norm, batch, framework) row; ratios to PyTorch and to the machine's limit."""
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(config.torch_threads or os.cpu_count() or 1)
    lim = limits(config)
    data = synthetic_mnist(seed=config.seed)
    rows: list[Prepared | Row] = []
    for batch in config.pimnist_batches:
        steps = max(1, config.pimnist_examples // batch)
        for norm in config.pimnist_norms:
            rows.append(prepare_lnexp(norm, batch, steps, data, config))
            if norm == "none":
                rows.append(prepare_lnexp(norm, batch, steps, data, config, LNEXP_SGD))
            for method in FRAMEWORKS[1:]:
                name = f"{method} norm={norm} batch={batch}"
                extra = {"norm": norm, "batch": batch, "method": method}
                if torch is None:
                    skipped = f"PyTorch is not installed ({TORCH_INSTALL})"
                    rows.append(note_row(name, "torch", skipped=skipped) | extra)
                elif method == TORCH_COMPILED and not config.torch_compile:
                    rows.append(note_row(name, "torch", skipped="not run (--notorch_compile)"))
                    rows[-1].update(extra)
                else:
                    rows.append(prepare_torch(method, norm, batch, steps, data, config))
    timed = time_rows(rows, config.pimnist_repeats)
    add_comparisons(timed, lim)
    return {
        "rows": timed,
        "limits": lim,
        "goals": goals(timed),
        "setup": (
            f"784-1000-1000-10 MLP, Adam, synthetic MNIST-shaped uint8 data; "
            f"{config.pimnist_examples} examples per timed call, median of "
            f"{config.pimnist_repeats} calls, rows timed round-robin; "
            f"{flops_per_example() / 1e6:.3f} MFLOP per example; {PARAMETER_PASSES} "
            "parameter-sized passes per step; machine limits: matmul "
            f"{lim['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, memory bandwidth "
            f"{lim['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (cache "
            f"{lim['cache_bandwidth_bytes_per_s'] / 1e9:.0f} GB/s), measured."
        ),
    }


def add_comparisons(rows: list[Row], lim: dict[str, Any]) -> None:
    """Adds ``x_torch_eager``, ``x_torch_best`` (examples/s ratios within a (norm, batch)
    group), the roofline limit and the fraction of it reached."""
    for row in rows:
        group = [r for r in rows if (r["norm"], r["batch"]) == (row["norm"], row["batch"])]
        eager = next((r.get("examples_per_s") for r in group if r["method"] == TORCH_EAGER), None)
        torch_rates = [r.get("examples_per_s") for r in group if r["framework"] == "torch"]
        torch_rates = [rate for rate in torch_rates if rate]
        rate = row.get("examples_per_s")
        row["x_torch_eager"] = rate / eager if rate and eager else None
        row["x_torch_best"] = rate / max(torch_rates) if rate and torch_rates else None
        row.update(roofline(row["norm"], row["batch"], lim))
        row["fraction_of_limit"] = rate / row["limit_examples_per_s"] if rate else None
        row["fraction_of_cache_limit"] = rate / row["cache_limit_examples_per_s"] if rate else None


def goals(rows: list[Row]) -> list[str]:
    """The issue's goals, each with the measured value."""
    lnexp = {(r["norm"], r["batch"]): r for r in rows if r["method"] == LNEXP}
    lines = []
    for (norm, batch), row in lnexp.items():
        if batch not in GOAL_SPEEDUP:
            continue
        speedup, fraction = row.get("x_torch_eager"), row.get("fraction_of_limit")
        want_x, want_f = GOAL_SPEEDUP[batch], GOAL_FRACTION_OF_LIMIT[batch]
        if speedup is None:
            lines.append(f"Goal norm={norm} batch={batch} >= {want_x}x torch eager: not measured.")
        else:
            verdict = "met" if speedup >= want_x else "NOT met"
            lines.append(
                f"Goal norm={norm} batch={batch} >= {want_x}x torch eager: {verdict} "
                f"({speedup:.2f}x)."
            )
        best, want_best = row.get("x_torch_best"), GOAL_X_BEST_TORCH[batch]
        if best is not None:
            verdict = "met" if best >= want_best else "NOT met"
            lines.append(
                f"Goal norm={norm} batch={batch} >= {want_best}x the best PyTorch row: {verdict} "
                f"({best:.2f}x)."
            )
        verdict = "met" if fraction >= want_f else "NOT met"
        lines.append(
            f"Goal norm={norm} batch={batch} >= {want_f:.0%} of the {row['bound']} limit: "
            f"{verdict} ({fraction:.0%}; limit {row['limit_examples_per_s']:,.0f} examples/s)."
        )
    if ("none", 128) in lnexp and ("layer", 128) in lnexp:
        overhead = lnexp["layer", 128]["median_ms"] / lnexp["none", 128]["median_ms"] - 1
        verdict = "met" if overhead <= GOAL_LAYER_OVERHEAD else "NOT met"
        lines.append(
            f"Goal layer norm <= {GOAL_LAYER_OVERHEAD:.0%} over none at batch 128: {verdict} "
            f"({overhead:+.1%})."
        )
    return lines


COLUMNS = [
    ("compile_s", "compile s", ".2f"),
    ("median_ms", "ms/step", ".3f"),
    ("examples_per_s", "examples/s", ",.0f"),
    ("x_torch_eager", "x torch eager", ".2fx"),
    ("x_torch_best", "x best torch", ".2fx"),
    ("limit_examples_per_s", "limit examples/s", ",.0f"),
    ("fraction_of_limit", "of limit", ".0%"),
    ("cache_limit_examples_per_s", "limit from cache", ",.0f"),
    ("fraction_of_cache_limit", "of it", ".0%"),
]
