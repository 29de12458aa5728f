"""The norms section: one normalization layer's forward+backward, alone and in a residual stack.

Times ``jax.jit(jax.value_and_grad(loss))`` of ``loss = sum(N(x) * w)`` (gradients with respect
to the input and the layer's parameters) for lnexp's :class:`~lnexp.norms.LayerNorm` and
:class:`~lnexp.norms.RMSNorm`, Flax's ``nnx.LayerNorm`` and ``nnx.RMSNorm``, and two plain-jnp
layer norms (two-pass and one-pass variance; autodiff), at the Transformer's activation shape
``(32, 64, 128)`` and the PI-MNIST MLP's ``(128, 1000)``.

A layer alone does not show everything: in a residual network XLA fuses across layers, and a
formulation that is cheap alone can be slow in a model (lnexp's LayerNorm once cost a
Transformer step 25% against RMSNorm's 1% while it was faster than Flax's alone). So each layer
is also timed inside a stack of ``residual_depth`` pre-norm residual MLP blocks
(``h = h + W2 gelu(W1 N(h))``, width ``H`` and ``4H``, a final ``N``) at the first shape; the
``x lnexp RMSNorm`` column compares each row with RMSNorm's row of the same group.

Each group (a shape, the stack) is timed round-robin on its own, and each timed call follows
``norms_settle`` untimed calls of the same row: a sub-millisecond layer called right after a
45 ms stack finds the caches and threads that the stack left, and took 1.5-3x its steady time
(lnexp's LayerNorm 2.2x RMSNorm with every row in one round-robin, 1.1x in its own group).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lnexp import norms
from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import Prepared, Row, prepare_jax, time_rows
from lnexp.errors import UserError

LAYER, RMS, FLAX_LAYER = "lnexp LayerNorm", "lnexp RMSNorm", "flax nnx.LayerNorm"


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """The norms section's shapes, stack depth and repetitions."""

    norms_shapes: tuple[str, ...] = setting(
        ("32x64x128", "128x1000"),
        "norms: activation shapes, e.g. 32x64x128 (the Transformer's) and 128x1000 (the MLP's).",
        pattern=r"[1-9][0-9]*(x[1-9][0-9]*)+",
        example="32x64x128,128x1000",
    )
    residual_depth: int = setting(
        4, "norms: residual blocks of the stack timed at the first shape (0: no stack rows).", low=0
    )
    norms_repeats: int = setting(50, "norms: timed calls per row (median kept).")
    norms_warmup: int = setting(5, "norms: untimed calls per row after compiling.", low=0)
    norms_settle: int = setting(
        1,
        "norms: untimed calls of a row before each of its timed ones, so that each times the "
        "layer's steady state, not the caches and threads the previous row left.",
        low=0,
    )


def parse_shape(text: str) -> tuple[int, ...]:
    """``'32x64x128'`` -> ``(32, 64, 128)``; a :class:`~lnexp.errors.UserError` otherwise."""
    try:
        shape = tuple(int(n) for n in text.split("x"))
    except ValueError:
        shape = ()
    if len(shape) < 2 or min(shape) < 1:
        raise UserError(
            f"--norms_shapes: {text!r} is not a shape; write sizes joined by x, e.g. 32x64x128."
        )
    return shape


class _JnpNorm(nnx.Module):
    """A plain-jnp layer norm with Flax's parameter names, differentiated by autodiff."""

    def __init__(self, width: int, one_pass: bool):
        self.scale = nnx.Param(jnp.ones(width))
        self.bias = nnx.Param(jnp.zeros(width))
        self.one_pass = one_pass

    def __call__(self, x: jax.Array) -> jax.Array:
        mu = x.mean(-1, keepdims=True)
        if self.one_pass:
            var = jnp.maximum((x * x).mean(-1, keepdims=True) - mu * mu, 0.0)
        else:
            var = jnp.square(x - mu).mean(-1, keepdims=True)
        return (x - mu) * jax.lax.rsqrt(var + 1e-5) * self.scale[...] + self.bias[...]


NORMS: dict[str, Callable[[int, nnx.Rngs], nnx.Module]] = {
    LAYER: lambda width, rngs: norms.LayerNorm(width, rngs=rngs),
    RMS: lambda width, rngs: norms.RMSNorm(width, rngs=rngs),
    FLAX_LAYER: lambda width, rngs: nnx.LayerNorm(width, rngs=rngs),
    "flax nnx.RMSNorm": lambda width, rngs: nnx.RMSNorm(width, rngs=rngs),
    "jnp LayerNorm, two-pass": lambda width, rngs: _JnpNorm(width, one_pass=False),
    "jnp LayerNorm, one-pass": lambda width, rngs: _JnpNorm(width, one_pass=True),
}
"""Row name -> ``(width, rngs) -> normalizer`` of the last axis."""


class ResidualStack(nnx.Module):
    """``depth`` pre-norm residual MLP blocks and a final norm, the Transformer's pattern."""

    def __init__(self, make_norm: Callable[[int, nnx.Rngs], nnx.Module], width: int, depth: int):
        rngs = nnx.Rngs(0)
        self.norms = nnx.List([make_norm(width, rngs) for _ in range(depth + 1)])
        self.up = nnx.List([nnx.Linear(width, 4 * width, rngs=rngs) for _ in range(depth)])
        self.down = nnx.List([nnx.Linear(4 * width, width, rngs=rngs) for _ in range(depth)])

    def __call__(self, h: jax.Array) -> jax.Array:
        for norm, up, down in zip(self.norms, self.up, self.down, strict=False):
            h = h + down(jax.nn.gelu(up(norm(h))))
        return self.norms[-1](h)


def _prepare(name: str, module: nnx.Module, x: jax.Array, settings: Settings, **extra) -> Prepared:
    graphdef, params = nnx.split(module)
    w = jax.random.normal(jax.random.key(settings.seed + 1), x.shape, x.dtype)

    def loss(params: Any, x: jax.Array) -> jax.Array:
        return jnp.sum(nnx.merge(graphdef, params)(x) * w)

    row = prepare_jax(name, loss, (params, x), settings.norms_warmup, items=x.size // x.shape[-1])
    row.framework = "flax" if name.startswith("flax") else "jax"
    row.extra = extra
    row.settle = settings.norms_settle
    return row


def add_ratios(rows: list[Row]) -> list[Row]:
    """``x_rms``: each row's median time over lnexp RMSNorm's in the same group."""
    reference = {r["group"]: r.get("median_ms") for r in rows if r["norm"] == RMS}
    for row in rows:
        ref, ms = reference.get(row["group"]), row.get("median_ms")
        row["x_rms"] = ms / ref if ms is not None and ref else None
    return rows


def run(settings: Settings) -> dict[str, Any]:
    """Every normalizer's forward+backward, per shape and in the residual stack."""
    groups: list[list[Prepared]] = []  # Timed one group at a time (see the module's docstring).
    shapes = [parse_shape(text) for text in settings.norms_shapes]
    for shape in shapes:
        x = jax.random.normal(jax.random.key(settings.seed), shape, jnp.float32)
        group = "x".join(map(str, shape))
        groups.append([])
        for name, make in NORMS.items():
            module = make(shape[-1], nnx.Rngs(settings.seed))
            groups[-1].append(
                _prepare(f"{name} {group}", module, x, settings, norm=name, group=group)
            )
    if settings.residual_depth and shapes:
        shape = shapes[0]
        x = jax.random.normal(jax.random.key(settings.seed), shape, jnp.float32)
        group = f"{'x'.join(map(str, shape))}, {settings.residual_depth} residual blocks"
        groups.append([])
        for name, make in NORMS.items():
            stack = ResidualStack(make, shape[-1], settings.residual_depth)
            groups[-1].append(
                _prepare(f"{name} ({group})", stack, x, settings, norm=name, group=group)
            )
    rows = add_ratios([row for g in groups for row in time_rows(g, settings.norms_repeats)])
    return {
        "rows": rows,
        "goals": goals(rows),
        "setup": (
            "forward+backward of sum(N(x) * w) with respect to x and N's parameters, float32, "
            "one jax.jit each, compiled ahead of time; residual blocks: h = h + W2 gelu(W1 N(h)) "
            f"(4x width), a final N; median of {settings.norms_repeats} calls after "
            f"{settings.norms_warmup} warm-up calls, each group's rows timed round-robin on their "
            f"own, each timed call after {settings.norms_settle} untimed ones of the same row."
        ),
    }


def goals(rows: list[Row]) -> list[str]:
    """lnexp's LayerNorm at most 1.4x lnexp's RMSNorm and no slower than Flax's LayerNorm, per
    shape and in the residual stack (issue 29)."""
    lines = []
    for group in dict.fromkeys(r["group"] for r in rows):
        by_norm = {r["norm"]: r for r in rows if r["group"] == group}
        layer, flax_layer = by_norm.get(LAYER, {}), by_norm.get(FLAX_LAYER, {})
        x_rms = layer.get("x_rms")
        if x_rms is None or flax_layer.get("median_ms") is None:
            lines.append(f"Goal {LAYER} at {group}: not measured.")
            continue
        x_flax = layer["median_ms"] / flax_layer["median_ms"]
        verdict = "met" if x_rms <= 1.4 and x_flax <= 1.0 else "NOT met"
        lines.append(
            f"Goal {LAYER} <= 1.4x {RMS} and <= 1.0x {FLAX_LAYER} at {group}: {verdict} "
            f"({x_rms:.2f}x, {x_flax:.2f}x)."
        )
    return lines


COLUMNS = [
    ("compile_s", "compile s", ".2f"),
    ("median_ms", "ms/call", ".3f"),
    ("x_rms", f"x {RMS}", ".2fx"),
]
