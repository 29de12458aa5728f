"""A decoder-only Transformer language model with the normalization where the user puts it.

Each block is causal multi-head self-attention and a two-layer GELU MLP, joined to the residual
stream in one of two ways (``placement``)::

    post (Vaswani et al., 2017):  x = N(x + Attn(x));   x = N(x + MLP(x))
    pre  (Xiong et al., 2020):    x = x + Attn(N(x));   x = x + MLP(N(x));   a final N at the end

where ``N`` is ``norm``: layer norm (Ba et al., 2016, eq. 3, :class:`lnexp.norms.LayerNorm`),
RMS norm (:class:`lnexp.norms.RMSNorm`, no mean subtracted, no bias) or nothing. ``qk_norm``
normalizes each head's queries and keys over the head's features before their dot product
(Dehghani et al., 2023; one gain per feature shared by the heads), which bounds the attention
logits. ``use_bias=False`` drops every bias, the layer norms' included (PaLM, nanoGPT).

Attention is :func:`jax.nn.dot_product_attention` with ``is_causal=True`` (its XLA
implementation on every platform; the same steps written out for float16, which XLA:CPU's
version refuses, see :func:`causal_attention`), so position ``t`` attends to positions ``<= t``
only.
Positions are learned embeddings or the fixed sinusoids of Vaswani et al.; the output layer is
its own matrix or the transposed token embedding (``tie_embeddings``). Every matrix starts as
``N(0, init_std^2)`` (GPT-2's 0.02) or Glorot-uniform (``kernel_init='xavier'``, the setting
Xiong et al. analyse); embeddings as ``N(0, init_std^2)``, biases at 0.

Dropout (``dropout > 0``) needs a key at each call in training (``model(ids, rng=key)``); in
evaluation mode (``model.eval()``) and without a key it is off.

``dtype`` (e.g. bfloat16) is the computation dtype of every layer: embeddings, matrix products,
attention and the residual stream; parameters stay float32 and the normalizers' statistics at
least float32 (``jax.nn.dot_product_attention`` takes its softmax in float32).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lnexp import norms

Array = jax.Array

NORMS = ("layer", "rms", "none")
"""The normalizations a :class:`Transformer` takes (``norm`` and ``qk_norm``)."""

PLACEMENTS = ("post", "pre")
POSITIONS = ("learned", "sinusoidal")
KERNEL_INITS = ("normal", "xavier")


def kernel_initializer(name: str, init_std: float) -> nnx.initializers.Initializer:
    """``'normal'``: ``N(0, init_std^2)`` (GPT-2); ``'xavier'``: Glorot uniform, the
    initialization Xiong et al. (2020) analyse."""
    _check("kernel_init", name, KERNEL_INITS)
    if name == "xavier":
        return nnx.initializers.xavier_uniform()
    return nnx.initializers.normal(init_std)


def _check(name: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"Unknown {name} {value!r}: expected one of {list(valid)}.")


def make_norm(
    name: str, width: int, *, use_bias: bool, rngs: nnx.Rngs, dtype: Any = None
) -> nnx.Module:
    """The normalizer ``name`` of ``width`` features: layer norm (with a bias when
    ``use_bias``), RMS norm (gain only, as Zhang & Sennrich and LLaMA) or the identity; its
    output in ``dtype`` (default: the input's)."""
    norms.method(name, among=NORMS, owner="Transformer")
    if name == "layer":
        return norms.LayerNorm(width, use_bias=use_bias, dtype=dtype, rngs=rngs)
    if name == "rms":
        return norms.RMSNorm(width, use_bias=False, dtype=dtype, rngs=rngs)
    return norms.Identity(width)


def sinusoids(length: int, width: int) -> np.ndarray:
    """Vaswani et al.'s positions: ``PE[t, 2i] = sin(t / 10000^(2i/d))``, ``PE[t, 2i+1]`` the
    cosine of the same."""
    t = np.arange(length)[:, None]
    freq = np.exp(-math.log(10_000.0) * np.arange(0, width, 2) / width)
    pe = np.zeros((length, width), np.float32)
    pe[:, 0::2] = np.sin(t * freq)
    pe[:, 1::2] = np.cos(t * freq)[:, : width // 2]
    return pe


def _dropout(dropout: nnx.Dropout, x: Array, rngs: nnx.Rngs | None) -> Array:
    """``dropout(x)``, off without a key (and, as always, in evaluation mode)."""
    return dropout(x, deterministic=True if rngs is None else None, rngs=rngs)


class CausalSelfAttention(nnx.Module):
    """Multi-head self-attention in which position ``t`` sees positions ``<= t``::

        q, k, v = x W_q, x W_k, x W_v           split into H heads of d = width / H features
        q, k    = N_q(q), N_k(k)                 per head, when qk_norm != 'none'
        y       = softmax(q k^T / sqrt(d) + causal mask) v,   heads concatenated, then W_o

    Args:
        width: Model width (features of ``x``).
        num_heads: Heads ``H``; must divide ``width``.
        qk_norm: ``'none'``, ``'layer'`` or ``'rms'``: the normalizer of queries and keys.
        use_bias: Biases in the projections (and in a layer-norm ``qk_norm``).
        kernel_init: Initializer of the projections.
        rngs: Random streams.
        dtype: The computation dtype (``None``: promoted with the parameters).
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        *,
        qk_norm: str = "none",
        use_bias: bool = True,
        kernel_init: nnx.initializers.Initializer = nnx.initializers.normal(0.02),
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        if width % num_heads:
            raise ValueError(f"num_heads={num_heads} does not divide width={width}.")
        self.num_heads, self.head_dim = num_heads, width // num_heads
        linear = dict(use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        self.qkv = nnx.Linear(width, 3 * width, **linear)
        self.out = nnx.Linear(width, width, **linear)
        norm = dict(use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.q_norm = make_norm(qk_norm, self.head_dim, **norm)
        self.k_norm = make_norm(qk_norm, self.head_dim, **norm)

    def __call__(self, x: Array) -> Array:
        b, t, _ = x.shape
        q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * self.num_heads, self.head_dim), 3, 2)
        q, k = self.q_norm(q), self.k_norm(k)
        y = causal_attention(q, k, v)
        return self.out(y.reshape(b, t, -1))


def causal_attention(q: Array, k: Array, v: Array) -> Array:
    """``softmax(q k^T / sqrt(d) + causal mask) v`` per head, ``(batch, time, heads, d)``.

    :func:`jax.nn.dot_product_attention` (XLA's implementation), except for float16: there it
    asks for the ``F16_F16_F32`` dot algorithm, which XLA:CPU refuses (jax 0.10), so float16 takes
    the same steps here with the default algorithm: logits accumulated in float32, the softmax in
    float32, the probabilities cast back to float16 for their product with ``v``.
    """
    if q.dtype != jnp.float16:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True)
    t, d = q.shape[1], q.shape[-1]
    logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=jnp.float32)
    causal = jnp.tril(jnp.ones((t, k.shape[1]), jnp.bool_))
    logits = jnp.where(causal, logits / math.sqrt(d), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bnts,bsnh->btnh", probs, v)


class MLPBlock(nnx.Module):
    """``gelu(x W_1 + b_1) W_2 + b_2`` with a hidden width of ``mlp_ratio * width``."""

    def __init__(
        self,
        width: int,
        *,
        mlp_ratio: int = 4,
        use_bias: bool = True,
        kernel_init: nnx.initializers.Initializer = nnx.initializers.normal(0.02),
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        linear = dict(use_bias=use_bias, kernel_init=kernel_init, dtype=dtype, rngs=rngs)
        hidden = mlp_ratio * width
        self.fc = nnx.Linear(width, hidden, **linear)
        self.proj = nnx.Linear(hidden, width, **linear)

    def __call__(self, x: Array) -> Array:
        return self.proj(jax.nn.gelu(self.fc(x)))


class Block(nnx.Module):
    """One Transformer block: attention then MLP, each a residual branch normalized by
    ``placement`` (``'post'``: ``x = N(x + f(x))``; ``'pre'``: ``x = x + f(N(x))``).

    Args:
        width: Model width.
        num_heads: Attention heads.
        norm: ``'layer'``, ``'rms'`` or ``'none'``.
        placement: ``'post'`` or ``'pre'``.
        qk_norm: Normalizer of queries and keys (see :class:`CausalSelfAttention`).
        mlp_ratio: MLP hidden width over the model width.
        use_bias: Biases in every linear map and layer norm.
        dropout: Dropout rate on each branch's output (before the residual sum).
        kernel_init: Initializer of every weight matrix.
        rngs: Random streams.
        dtype: The computation dtype (``None``: promoted with the parameters).
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        *,
        norm: str = "layer",
        placement: str = "pre",
        qk_norm: str = "none",
        mlp_ratio: int = 4,
        use_bias: bool = True,
        dropout: float = 0.0,
        kernel_init: nnx.initializers.Initializer = nnx.initializers.normal(0.02),
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        _check("placement", placement, PLACEMENTS)
        self.placement = placement
        common = dict(use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.attn_norm = make_norm(norm, width, **common)
        self.attn = CausalSelfAttention(
            width, num_heads, qk_norm=qk_norm, kernel_init=kernel_init, **common
        )
        self.mlp_norm = make_norm(norm, width, **common)
        self.mlp = MLPBlock(width, mlp_ratio=mlp_ratio, kernel_init=kernel_init, **common)
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, x: Array, rngs: nnx.Rngs | None = None) -> Array:
        def branch(f, h):
            return _dropout(self.dropout, f(h), rngs)

        if self.placement == "pre":
            x = x + branch(self.attn, self.attn_norm(x))
            return x + branch(self.mlp, self.mlp_norm(x))
        x = self.attn_norm(x + branch(self.attn, x))
        return self.mlp_norm(x + branch(self.mlp, x))


class Transformer(nnx.Module):
    """A decoder-only Transformer language model: token ids ``(batch, time)`` -> next-token
    logits ``(batch, time, vocab_size)``.

    Args:
        vocab_size: Tokens (characters for the book corpus).
        context: Longest input (the positions there are embeddings for).
        width: Model width ``d``.
        depth: Blocks.
        num_heads: Attention heads per block.
        norm: ``'layer'``, ``'rms'`` or ``'none'``: every normalizer of the blocks (and the final
            one of ``'pre'``).
        placement: ``'post'`` (``x = N(x + f(x))``) or ``'pre'`` (``x = x + f(N(x))``, a final
            ``N`` before the logits).
        qk_norm: ``'none'``, ``'layer'`` or ``'rms'``: normalize queries and keys per head.
        positions: ``'learned'`` or ``'sinusoidal'``.
        tie_embeddings: Logits from the transposed token embedding instead of their own matrix.
        mlp_ratio: MLP hidden width over ``width``.
        use_bias: Biases in every linear map and layer norm (``False``: none anywhere).
        dropout: Dropout rate on the embeddings and on each residual branch.
        init_std: Standard deviation of the initial embeddings (and of every weight matrix with
            ``kernel_init='normal'``).
        kernel_init: ``'normal'`` (``N(0, init_std^2)``, GPT-2) or ``'xavier'`` (Glorot
            uniform, as analysed by Xiong et al., 2020) for every weight matrix.
        rngs: Random streams.
        dtype: The computation dtype of every layer (e.g. ``jnp.bfloat16``); the parameters
            stay float32. ``None``: promoted with the parameters (float32).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.models.transformer import Transformer
        >>> model = Transformer(vocab_size=50, context=16, width=32, depth=2, num_heads=4,
        ...                     norm="layer", placement="pre", rngs=nnx.Rngs(0))
        >>> model(jnp.zeros((2, 16), jnp.int32)).shape
        (2, 16, 50)
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        context: int,
        width: int,
        depth: int,
        num_heads: int,
        norm: str = "layer",
        placement: str = "pre",
        qk_norm: str = "none",
        positions: str = "learned",
        tie_embeddings: bool = False,
        mlp_ratio: int = 4,
        use_bias: bool = True,
        dropout: float = 0.0,
        init_std: float = 0.02,
        kernel_init: str = "normal",
        rngs: nnx.Rngs,
        dtype: Any = None,
    ):
        _check("placement", placement, PLACEMENTS)
        _check("positions", positions, POSITIONS)
        self.context, self.placement = context, placement
        self.dtype = dtype
        init = nnx.initializers.normal(init_std)
        kernels = kernel_initializer(kernel_init, init_std)
        self.embed = nnx.Embed(vocab_size, width, embedding_init=init, dtype=dtype, rngs=rngs)
        self.width = width
        self.learned_positions = positions == "learned"
        self.positions = (
            nnx.Param(init(rngs.params(), (context, width)))
            if self.learned_positions
            else nnx.data(None)  # Computed at each call: constants, not state.
        )
        self.blocks = nnx.List(
            [
                Block(
                    width,
                    num_heads,
                    norm=norm,
                    placement=placement,
                    qk_norm=qk_norm,
                    mlp_ratio=mlp_ratio,
                    use_bias=use_bias,
                    dropout=dropout,
                    kernel_init=kernels,
                    rngs=rngs,
                    dtype=dtype,
                )
                for _ in range(depth)
            ]
        )
        # Post-LN's last block already ends in N; pre-LN's residual stream needs its own.
        final = norm if placement == "pre" else "none"
        self.final_norm = make_norm(final, width, use_bias=use_bias, dtype=dtype, rngs=rngs)
        self.tie_embeddings = tie_embeddings
        self.head = (
            nnx.data(None)
            if tie_embeddings
            else nnx.Linear(
                width, vocab_size, use_bias=use_bias, kernel_init=kernels, dtype=dtype, rngs=rngs
            )
        )
        self.dropout = nnx.Dropout(dropout)

    def __call__(self, ids: Array, *, rng: Array | None = None) -> Array:
        """Logits of the next token at every position of ``ids`` (``rng``: dropout's key)."""
        if ids.shape[-1] > self.context:
            raise ValueError(f"{ids.shape[-1]} tokens exceed the model's context {self.context}.")
        rngs = None if rng is None else nnx.Rngs(dropout=rng)
        t = ids.shape[-1]
        if self.learned_positions:
            positions = self.positions[:t]
        else:
            positions = jnp.asarray(sinusoids(t, self.width))
        tokens = self.embed(ids)
        if self.dtype is not None:
            positions = positions.astype(self.dtype)
        x = _dropout(self.dropout, tokens + positions, rngs)
        for block in self.blocks:
            x = block(x, rngs)
        x = self.final_norm(x)
        if self.tie_embeddings:
            return self.embed.attend(x)
        return self.head(x)
