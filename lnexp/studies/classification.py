"""Training and evaluation functions shared by the MNIST classifiers."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lnexp.studies import Batch


def classification_fns(to_inputs: Callable[[jax.Array], jax.Array]):
    """``loss_fn`` and ``eval_fn`` of a classifier of ``batch['image']`` into ``batch['label']``.

    Args:
        to_inputs: Turns the stored images (uint8) into the model's inputs, on the device.

    Returns:
        ``(loss_fn, eval_fn)`` as :class:`lnexp.studies.Task` takes them: the mean negative
        log-likelihood (with the error rate beside it), and per-example ``nll`` and ``error``.
    """

    def logits(model: nnx.Module, batch: Batch) -> jax.Array:
        # The cross-entropy of float32 logits, whatever the model's computation dtype.
        return model(to_inputs(batch["image"])).astype(jnp.float32)

    def loss_fn(model: nnx.Module, batch: Batch, rng: jax.Array):
        del rng
        z = logits(model, batch)
        nll = optax.softmax_cross_entropy_with_integer_labels(z, batch["label"]).mean()
        return nll, {"error": jnp.mean(jnp.argmax(z, -1) != batch["label"])}

    def eval_fn(model: nnx.Module, batch: Batch) -> dict[str, jax.Array]:
        z = logits(model, batch)
        return {
            "nll": optax.softmax_cross_entropy_with_integer_labels(z, batch["label"]),
            "error": (jnp.argmax(z, -1) != batch["label"]).astype(jnp.float32),
        }

    return loss_fn, eval_fn
