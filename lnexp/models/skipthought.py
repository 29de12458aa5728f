"""The uni-skip skip-thought model (Kiros et al., 2015) with plain or layer-normalized GRUs.

An encoder GRU reads sentence ``s_i``; its final state ``u`` conditions two decoder GRUs that
predict the previous sentence ``s_{i-1}`` and the next one ``s_{i+1}`` word by word (teacher
forcing: the decoder reads the true previous word)::

    u      = GRU_enc(E[s_i])                          # final state, after the last real token
    d_0    = u                                        # decoders start from the encoding
    d_t    = GRU_dec(d_{t-1}, [E[w_{t-1}]; u?])       # u also fed at every step if asked
    p(w_t) = softmax(W_out d_t + b)                   # W_out shared by both decoders

``norm='layer'`` makes every GRU an LN-GRU (:class:`lnexp.cells.GRUCell`, eqs. 26-28), as in the
paper's skip-thought experiment. The public code conditions the decoders through their initial
state only; ``condition_every_step=True`` also feeds ``u`` to every decoder step (the original
paper's form). The output layer is one matrix for both decoders as in the public code, or, with
``tie_embeddings=True``, the transposed word embeddings after a ``hidden -> embed`` projection.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lnexp.cells import GRUCell, scan, symmetric_uniform

Array = jax.Array


class SkipThought(nnx.Module):
    """Encoder and two decoders over a shared vocabulary.

    Args:
        vocab_size: Words, special tokens included (id 0 is padding).
        embed_dim: Word-embedding size (620 in the paper).
        hidden_size: Units of the encoder and of each decoder (2400 in the paper).
        norm: The normalization of every GRU: ``'layer'``, ``'none'``, or another method
            :class:`lnexp.cells.GRUCell` accepts.
        condition_every_step: Also feed the encoding to every decoder step.
        tie_embeddings: Output logits ``E @ (W d)`` instead of a separate output matrix.
        unroll: ``lax.scan`` unroll of the GRUs.
        dtype: The computation dtype of the embeddings, the GRUs and the output layer (e.g.
            bfloat16); the parameters stay float32, the losses are computed in float32.
            ``None``: promoted with the parameters.
        rngs: Random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.models.skipthought import SkipThought
        >>> model = SkipThought(50, 8, 16, norm="layer", rngs=nnx.Rngs(0))
        >>> ids = jnp.array([[5, 6, 2, 0], [7, 2, 0, 0]])  # <eos> = 2, padding = 0
        >>> model.encode(ids).shape
        (2, 16)
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        hidden_size: int,
        *,
        norm: str = "layer",
        condition_every_step: bool = False,
        tie_embeddings: bool = False,
        unroll: int = 1,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        init = symmetric_uniform(0.1)
        self.vocab_size = vocab_size
        self.condition_every_step = condition_every_step
        self.unroll = unroll
        self.embed = nnx.Embed(vocab_size, embed_dim, embedding_init=init, dtype=dtype, rngs=rngs)
        self.encoder = GRUCell(embed_dim, hidden_size, norm=norm, dtype=dtype, rngs=rngs)
        decoder_in = embed_dim + (hidden_size if condition_every_step else 0)
        self.decoder_prev = GRUCell(decoder_in, hidden_size, norm=norm, dtype=dtype, rngs=rngs)
        self.decoder_next = GRUCell(decoder_in, hidden_size, norm=norm, dtype=dtype, rngs=rngs)
        out_dim = embed_dim if tie_embeddings else vocab_size
        self.output = nnx.Linear(hidden_size, out_dim, kernel_init=init, dtype=dtype, rngs=rngs)
        self.tie_embeddings = tie_embeddings

    def encode(self, ids: Array) -> Array:
        """Sentence vectors ``(batch, hidden)`` of right-padded ids ``(batch, time)``.

        The encoder's state after each sentence's last non-padding token (its ``<eos>``);
        padding never changes it.
        """
        lengths = jnp.sum(ids != 0, axis=-1)
        carry, _ = scan(self.encoder, self.embed(ids), seq_lengths=lengths, unroll=self.unroll)
        return carry

    def logits(self, decoder: GRUCell, encoding: Array, targets: Array) -> Array:
        """Teacher-forced next-word logits ``(batch, time, vocab)`` of ``targets``."""
        words = self.embed(targets[:, :-1])
        inputs = jnp.pad(words, ((0, 0), (1, 0), (0, 0)))  # Step 0 reads a zero vector.
        if self.condition_every_step:
            repeated = jnp.broadcast_to(encoding[:, None], (*inputs.shape[:2], encoding.shape[-1]))
            inputs = jnp.concatenate([inputs, repeated], axis=-1)
        _, states = scan(decoder, inputs, initial_carry=encoding, unroll=self.unroll)
        out = self.output(states)
        return self.embed.attend(out) if self.tie_embeddings else out

    def __call__(self, prev: Array, current: Array, next_: Array) -> dict[str, Array]:
        """Per-sentence summed NLL and token counts of both decoders.

        Returns:
            ``{'prev_nll', 'prev_tokens', 'next_nll', 'next_tokens'}``, each ``(batch,)``:
            the summed negative log-likelihood of the sentence's tokens (padding masked out) and
            the number of tokens.
        """
        encoding = self.encode(current)
        out = {}
        for name, decoder, targets in (
            ("prev", self.decoder_prev, prev),
            ("next", self.decoder_next, next_),
        ):
            logits = self.logits(decoder, encoding, targets).astype(jnp.float32)
            mask = (targets != 0).astype(jnp.float32)
            nll = token_nll(logits, targets)
            out[f"{name}_nll"] = jnp.sum(nll * mask, axis=-1)
            out[f"{name}_tokens"] = jnp.sum(mask, axis=-1)
        return out


def token_nll(logits: Array, targets: Array) -> Array:
    """The negative log-likelihood of each integer target under ``softmax(logits)`` over the last
    axis, in nats: ``optax.softmax_cross_entropy_with_integer_labels`` by the same operations,
    so that this module needs only JAX::

        NLL = logsumexp_j(logits_j) - logits_target

    Example:
        >>> import jax.numpy as jnp
        >>> from lnexp.models.skipthought import token_nll
        >>> round(float(token_nll(jnp.zeros((1, 4)), jnp.array([2]))[0]), 4)  # log 4
        1.3863
    """
    label_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1).take(0, axis=-1)
    return jax.nn.logsumexp(logits, axis=-1) - label_logits


def token_mean_loss(values: dict[str, Any]) -> tuple[Array, dict[str, Array]]:
    """The training loss: the mean per-token NLL of the previous plus that of the next sentence.

    Returns:
        ``(loss, {'prev_nll': per-token NLL, 'next_nll': per-token NLL})``.
    """
    prev = jnp.sum(values["prev_nll"]) / jnp.maximum(jnp.sum(values["prev_tokens"]), 1.0)
    next_ = jnp.sum(values["next_nll"]) / jnp.maximum(jnp.sum(values["next_tokens"]), 1.0)
    return prev + next_, {"prev_nll": prev, "next_nll": next_}
