"""A recurrent classifier: one recurrent layer reads a sequence, a linear map of its last state
gives the logits (the sequential-MNIST model)."""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from lnexp import cells

CELLS = {"simple": cells.SimpleCell, "gru": cells.GRUCell, "lstm": cells.LSTMCell}


class RecurrentClassifier(nnx.Module):
    """``logits = W h_T + b`` where ``h_T`` is the last output of a recurrent cell.

    Args:
        in_features: Size of each sequence element.
        hidden_features: Units of the recurrent cell.
        num_classes: Number of logits.
        cell: ``'simple'``, ``'gru'`` or ``'lstm'`` (:mod:`lnexp.cells`).
        norm: The cell's normalization (``'layer'``, ``'none'``, any method the cell's
            ``accepted_norms()`` lists; ``'cell'`` for the LSTM's DRAW variant).
        unroll: Time steps unrolled per iteration of the scan.
        precompute_inputs: Compute the input projections of all steps before the scan
            (see :func:`lnexp.cells.scan`).
        dtype: The computation dtype of the cell and the logits (e.g. bfloat16); the parameters
            stay float32. ``None``: promoted with the parameters.
        rngs: Random streams.
        **cell_kwargs: Passed to the cell (e.g. ``reset_after=False``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.models.recurrent import RecurrentClassifier
        >>> model = RecurrentClassifier(28, 16, 10, cell="gru", norm="layer", rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 28, 28))).shape
        (2, 10)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        num_classes: int,
        *,
        cell: str = "gru",
        norm: str = "layer",
        unroll: int = 1,
        precompute_inputs: bool = True,
        dtype: Any = None,
        rngs: nnx.Rngs,
        **cell_kwargs: Any,
    ):
        if cell not in CELLS:
            raise ValueError(f"Unknown cell {cell!r}: expected one of {sorted(CELLS)}.")
        self.cell = CELLS[cell](
            in_features, hidden_features, norm=norm, dtype=dtype, rngs=rngs, **cell_kwargs
        )
        self.head = nnx.Linear(hidden_features, num_classes, dtype=dtype, rngs=rngs)
        self.unroll = unroll
        self.precompute_inputs = precompute_inputs

    def __call__(self, xs: jax.Array, seq_lengths: jax.Array | None = None) -> jax.Array:
        """Logits of a batch of sequences ``(batch, time, in_features)``."""
        carry, _ = cells.scan(
            self.cell,
            xs,
            seq_lengths=seq_lengths,
            unroll=self.unroll,
            precompute_inputs=self.precompute_inputs,
        )
        h = carry[1] if isinstance(carry, tuple) else carry  # The LSTM carries (c, h).
        return self.head(h)
