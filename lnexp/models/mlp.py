"""The fully connected classifier of the paper's permutation-invariant MNIST experiment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from lnexp.norms import NORMS, NormalizedLinear, WeightNormLinear

# Where each method goes when ``normalize_logits`` is not given: the paper applies layer norm to
# the hidden layers only and batch norm to all layers, the logits included (Section 6.1).
# Weight norm re-parameterizes every layer (Salimans & Kingma); RMS norm follows layer norm.
NORMALIZES_LOGITS = {"none": False, "layer": False, "rms": False, "batch": True, "weight": True}


class MLP(nnx.Module):
    """``h_{l+1} = relu(NormalizedLinear_l(h_l))``; the last layer gives the logits (no ReLU).

    The paper's model is ``MLP((784, 1000, 1000, 10), norm=...)``.

    Args:
        sizes: Layer widths, input first, logits last.
        norm: The normalization of every hidden layer, one of :data:`lnexp.norms.NORMS`.
        normalize_logits: Normalize the logit layer too; ``None`` follows the paper
            (:data:`NORMALIZES_LOGITS`).
        kernel_init: Initializer of every weight matrix.
        rngs: Random streams.
        **norm_kwargs: Passed to every normalizer (e.g. ``epsilon``, ``unbiased``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.models.mlp import MLP
        >>> model = MLP((784, 1000, 1000, 10), norm="layer", rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 784))).shape
        (2, 10)
    """

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        norm: str,
        normalize_logits: bool | None = None,
        kernel_init: nnx.initializers.Initializer = nnx.initializers.lecun_normal(),
        rngs: nnx.Rngs,
        **norm_kwargs: Any,
    ):
        if norm not in NORMS:
            raise ValueError(f"Unknown normalization {norm!r}: expected one of {list(NORMS)}.")
        if normalize_logits is None:
            normalize_logits = NORMALIZES_LOGITS[norm]
        norms = [norm] * (len(sizes) - 2) + [norm if normalize_logits else "none"]
        self.layers = nnx.List(
            [
                NormalizedLinear(
                    d_in,
                    d_out,
                    norm=n,
                    kernel_init=kernel_init,
                    rngs=rngs,
                    **(norm_kwargs if n != "none" else {}),
                )
                for d_in, d_out, n in zip(sizes[:-1], sizes[1:], norms, strict=True)
            ]
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers[:-1]:
            x = jax.nn.relu(layer(x))
        return self.layers[-1](x)

    def data_dependent_init(self, x: jax.Array) -> jax.Array:
        """Salimans & Kingma's initialization of every weight-normalized layer, in order.

        Each :class:`~lnexp.norms.WeightNormLinear` gets its ``g`` and ``b`` from the batch that
        reaches it, so every layer's pre-activations start standardized on ``x``.

        Returns:
            The logits of ``x`` after the initialization.
        """
        for i, layer in enumerate(self.layers):
            if isinstance(layer.linear, WeightNormLinear):
                x = layer.norm(layer.linear.data_init(x))
            else:
                x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x
