"""Dynamic loss scaling for float16 training (Micikevicius et al., 2018, "Mixed Precision
Training"), as PyTorch's ``GradScaler`` does it.

float16 holds numbers down to about 6e-8 (6e-5 at full precision) and up to 65,504: small
gradients of activations underflow to zero in the backward pass. So the loss is multiplied by a
scale ``S`` before differentiating and the gradients (of the float32 parameters) divided by ``S``
after. A step whose gradients are not all finite (``S`` was too large: something overflowed) is
skipped, its update dropped, and ``S`` divided by ``factor``; after ``growth_interval`` finite
steps in a row ``S`` is multiplied by ``factor``, so it stays close to the largest scale that
does not overflow. bfloat16 has float32's range and needs none of this.

Written here because optax has no loss scaling and DeepMind's ``jmp``, which has, is no longer
maintained (its last release is 0.0.4); this is the whole of it, and ``tests/test_precision.py``
tests it.

The scaler's state, ``{'scale': float32, 'good_steps': int32}``, is part of the training state
(and of its checkpoints) of float16 runs only.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

ScaleState = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """The schedule of the scale (``configs/common.py``'s ``loss_scale`` block).

    Attributes:
        initial: The scale of the first step.
        growth_interval: Finite steps in a row after which the scale is multiplied by ``factor``.
        factor: The step of the scale, up after ``growth_interval`` finite steps and down after
            an overflow.
        minimum: An overflow at a scale at or below this is divergence, not a scale too large
            (the training loop stops; :func:`collapsed`).

    Example:
        >>> scaler = DynamicLossScale(initial=8.0, growth_interval=2)
        >>> state = scaler.init()
        >>> state = scaler.update(state, jnp.bool_(False))  # An overflow: skip, lower.
        >>> float(state["scale"])
        4.0
        >>> for _ in range(2):
        ...     state = scaler.update(state, jnp.bool_(True))
        >>> float(state["scale"])  # Two finite steps in a row: raised again.
        8.0
    """

    initial: float = 2.0**15
    growth_interval: int = 2000
    factor: float = 2.0
    minimum: float = 1.0

    def init(self) -> ScaleState:
        return {
            "scale": jnp.asarray(self.initial, jnp.float32),
            "good_steps": jnp.zeros((), jnp.int32),
        }

    def scale(self, state: ScaleState, loss: jax.Array) -> jax.Array:
        """``loss * S``, in float32."""
        return loss.astype(jnp.float32) * state["scale"]

    def unscale(self, state: ScaleState, grads: Any) -> Any:
        """``grads / S`` (the gradients of the float32 parameters)."""
        return jax.tree.map(lambda g: g / state["scale"].astype(g.dtype), grads)

    def update(self, state: ScaleState, finite: jax.Array) -> ScaleState:
        """The state after a step whose gradients were all ``finite`` (or not)."""
        good = jnp.where(finite, state["good_steps"] + 1, 0)
        grow = good >= self.growth_interval
        scale = jnp.where(
            finite,
            jnp.where(grow, state["scale"] * self.factor, state["scale"]),
            state["scale"] / self.factor,
        )
        return {"scale": scale.astype(jnp.float32), "good_steps": jnp.where(grow, 0, good)}

    def collapsed(self, scale: Any, skipped: Any) -> Any:
        """Where a step was ``skipped`` although its scale was at or below :attr:`minimum`."""
        return (skipped > 0) & (scale <= self.minimum)


def all_finite(tree: Any) -> jax.Array:
    """Whether every element of every array of ``tree`` is finite (one boolean)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.bool_(True)


def from_config(config: ml_collections.ConfigDict) -> DynamicLossScale | None:
    """The scaler of a run: from ``config.loss_scale`` with ``dtype='float16'``, else ``None``
    (float32 and bfloat16 train unscaled, with the training state they always had)."""
    if config.get("dtype", "float32") != "float16":
        return None
    block = config.get("loss_scale") or {}
    defaults = DynamicLossScale()
    return DynamicLossScale(
        initial=float(block.get("initial", defaults.initial)),
        growth_interval=int(block.get("growth_interval", defaults.growth_interval)),
        factor=float(block.get("factor", defaults.factor)),
        minimum=float(block.get("minimum", defaults.minimum)),
    )
