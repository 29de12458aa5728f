"""The fully connected classifier of the paper's permutation-invariant MNIST experiment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from lnexp.norms import NormalizedLinear, method


class MLP(nnx.Module):
    """``h_{l+1} = relu(NormalizedLinear_l(h_l))``; the last layer gives the logits (no ReLU).

    The paper's model is ``MLP((784, 1000, 1000, 10), norm=...)``.

    Args:
        sizes: Layer widths, input first, logits last.
        norm: The normalization of every hidden layer, a key of :data:`lnexp.norms.REGISTRY`.
        normalize_logits: Normalize the logit layer too; ``None`` takes the method's
            :attr:`~lnexp.norms.NormMethod.normalizes_logits`, which follows the paper: layer
            norm on the hidden layers only, batch norm on all layers, the logits included
            (Section 6.1); weight norm re-parameterizes every layer (Salimans & Kingma), RMS
            norm follows layer norm.
        kernel_init: Initializer of every weight matrix.
        dtype: The computation dtype of every layer (activations and matrix products, e.g.
            bfloat16); the parameters stay float32. ``None``: the input's.
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
        dtype: Any = None,
        rngs: nnx.Rngs,
        **norm_kwargs: Any,
    ):
        if normalize_logits is None:
            normalize_logits = method(norm).normalizes_logits
        norms = [norm] * (len(sizes) - 2) + [norm if normalize_logits else "none"]
        self.layers = nnx.List(
            [
                NormalizedLinear(
                    d_in,
                    d_out,
                    norm=n,
                    kernel_init=kernel_init,
                    dtype=dtype,
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

        Each layer with a data-dependent initialization (a method with
        :attr:`~lnexp.norms.NormMethod.data_init`: :class:`~lnexp.norms.WeightNormLinear`) gets
        its ``g`` and ``b`` from the batch that reaches it, so every layer's pre-activations
        start standardized on ``x``; the other layers are applied as they are.

        Returns:
            The logits of ``x`` after the initialization.
        """
        for i, layer in enumerate(self.layers):
            if method(layer.norm_name).data_init:
                x = layer.norm(layer.linear.data_init(x))
            else:
                x = layer(x)
            if i < len(self.layers) - 1:
                x = jax.nn.relu(x)
        return x
