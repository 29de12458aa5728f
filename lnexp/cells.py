"""Recurrent cells with layer normalization (Ba, Kiros & Hinton, 2016, sec. 3.1 and supplement).

Three cells, each with ``norm='layer'`` (the paper's LN cell) or ``norm='none'`` (the standard
cell); the two versions are one class and differ only by that argument. ``norm`` takes every
method of :data:`lnexp.norms.REGISTRY` whose statistics are per example (``recurrent=True``:
``'layer'``, ``'rms'``, ``'none'``); the equations below then use that method's normalizer where
they write ``LN``. Batch norm, whose statistics over one step's batch differ from step to step,
and weight norm are refused, with the list of the accepted names.

* :class:`SimpleCell`: eq. 4, ``h_t = f(LN(W_hh h_{t-1} + W_xh x_t))``.
* :class:`LSTMCell`: eqs. 20-22, ``[f; i; o; g] = LN(W_h h) + LN(W_x x) + b``,
  ``h_t = s(o) * tanh(LN(c_t))``, the raw ``c_t`` carried. Options: per-gate LN, carrying the
  normalized ``c_t``, LN on ``c_t`` only (DRAW, ``norm='cell'``), a forget-gate bias.
* :class:`GRUCell`: eqs. 26-28, ``[z; r] = LN(W_h h) + LN(W_x x)``,
  ``h~ = tanh(LN(W x) + s(r) * LN(U h))``, ``h_t = (1 - s(z)) * h_{t-1} + s(z) * h~``. Option:
  the reset gate before the recurrent matmul (``reset_after=False``).

Every cell is a :class:`flax.nnx.RNNCellBase` and works with :class:`flax.nnx.RNN` (including
``seq_lengths``). Each also splits its step in two: :meth:`input_projection` computes everything
that depends only on ``x_t`` (the input matmuls, their layer norms and biases) for all time steps
at once, and :meth:`recurrent_step` is the part that depends on the carry. :func:`scan` runs the
first outside and only the second inside ``jax.lax.scan``, and masks right-padded batches.

Initialization follows the paper's public (Theano) code: recurrent matrices orthogonal, every
other matrix uniform in ``[-0.1, 0.1]``; each gate's ``H``-wide block of a fused kernel is
initialized on its own (so each gate's recurrent matrix is orthogonal), LN gains start at 1 and
all biases at 0 (:func:`symmetric_uniform` is the uniform initializer). Every normalizer is built
from its :class:`lnexp.norms.NormMethod`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lnexp.norms import Identity, LayerNorm, NormMethod, method, names, standardize_segments

Array = jax.Array
Carry = Any
Initializer = nnx.initializers.Initializer

__all__ = ["GRUCell", "LSTMCell", "SimpleCell", "scan", "symmetric_uniform"]


def symmetric_uniform(limit: float) -> Initializer:
    """Uniform in ``[-limit, limit]`` (the paper's recurrent code uses ``limit = 0.1``)."""

    def init(key: Array, shape, dtype=jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def _blockwise(init: Initializer, num_blocks: int) -> Initializer:
    """Applies ``init`` to each of ``num_blocks`` equal column blocks of a kernel separately."""

    def block_init(key: Array, shape, dtype=jnp.float32) -> Array:
        rows, cols = shape
        keys = jax.random.split(key, num_blocks)
        width = cols // num_blocks
        return jnp.concatenate([init(k, (rows, width), dtype) for k in keys], axis=-1)

    return block_init


def _build_norm(
    m: NormMethod, num_features: int, epsilon: float, rngs: nnx.Rngs, dtype: Any = None
) -> nnx.Module:
    """``m``'s normalizer of ``num_features`` units, with ``epsilon`` if the method takes one
    (and the output ``dtype`` when one is given)."""
    kwargs = {"epsilon": epsilon} if "epsilon" in m.hyperparameters else {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    return m.normalizer(num_features, rngs=rngs, **kwargs)


def _fusable(norms: tuple[nnx.Module, ...]) -> bool:
    """Whether ``norms`` are default-form layer norms (over the last axis) with one epsilon, a
    gain and a bias."""
    return all(
        type(n) is LayerNorm
        and n.reduction_axes == n.feature_axes == (-1,)
        and not (n.one_pass_variance or n.epsilon_outside_sqrt)
        and n.scale is not None
        and n.bias is not None
        and n.epsilon == norms[0].epsilon
        for n in norms
    )


def _normalize(x: Array, *norms: nnx.Module) -> Array:
    """Applies ``norms`` to consecutive segments of ``x``'s last axis (one each).

    The result is ``concatenate([n(x_j) for ...])``. Layer norms (the paper's cells) go through
    one fused :func:`lnexp.norms.standardize_segments` call (one reduction per step instead of
    one per norm, and a hand-written derivative), then each segment's gain and bias; identities
    (``norm='none'``) return ``x``; any other normalizer is applied segment by segment.
    """
    if _fusable(norms):
        y = standardize_segments(x, [n.num_features for n in norms], epsilon=norms[0].epsilon)
        scale = jnp.concatenate([n.scale[...] for n in norms]).astype(y.dtype)
        bias = jnp.concatenate([n.bias[...] for n in norms]).astype(y.dtype)
        return (y * scale + bias).astype(x.dtype)
    if all(type(n) is Identity for n in norms):
        return x
    if len(norms) == 1:
        return norms[0](x)
    ends = list(itertools.accumulate(n.num_features for n in norms))
    segments = jnp.split(x, ends[:-1], axis=-1)
    return jnp.concatenate([n(a) for n, a in zip(norms, segments, strict=True)], axis=-1)


class _GateNorm(nnx.Module):
    """The normalizer of a ``num_blocks * H`` vector of stacked gates.

    Over the whole vector (the paper), or with ``per_block=True`` over each ``H``-sized gate
    block separately, each block with its own gain and bias.
    """

    def __init__(
        self,
        norm: NormMethod,
        num_blocks: int,
        block_size: int,
        *,
        per_block: bool = False,
        epsilon: float,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        self.num_blocks = num_blocks
        self.per_block = per_block
        if per_block:
            self.blocks = nnx.List(
                [_build_norm(norm, block_size, epsilon, rngs, dtype) for _ in range(num_blocks)]
            )
            self.norm = nnx.data(None)
        else:
            self.blocks = nnx.data(None)
            self.norm = _build_norm(norm, num_blocks * block_size, epsilon, rngs, dtype)

    def __call__(self, a: Array) -> Array:
        return _normalize(a, *(self.blocks if self.per_block else [self.norm]))


class _Cell(nnx.RNNCellBase):
    """Shared parts: the two-part step, ``__call__``, carry initialization."""

    in_features: int
    hidden_features: int
    param_dtype: Any
    dtype: Any = None
    _num_carry_arrays: int = 1

    @classmethod
    def accepted_norms(cls) -> tuple[str, ...]:
        """The values ``norm`` accepts: the methods of :data:`lnexp.norms.REGISTRY` that can
        normalize inside a recurrent cell (``recurrent=True``)."""
        return names(recurrent=True)

    @classmethod
    def _method(cls, norm: str) -> NormMethod:
        return method(norm, among=cls.accepted_norms(), owner=cls.__name__)

    def input_projection(self, inputs: Array) -> Array:
        """Everything of a step that depends only on the input, for any leading axes.

        Args:
            inputs: ``(..., in_features)``, e.g. a whole ``(batch, time, in_features)`` sequence.

        Returns:
            ``(..., k * hidden_features)``: what :meth:`recurrent_step` takes for one step.
        """
        raise NotImplementedError

    def recurrent_step(self, carry: Carry, projected: Array) -> tuple[Carry, Array]:
        """One step from the carry and this step's slice of :meth:`input_projection`.

        Returns:
            ``(new_carry, output)``.
        """
        raise NotImplementedError

    def __call__(self, carry: Carry, inputs: Array) -> tuple[Carry, Array]:  # type: ignore[override]
        """One step (the :class:`flax.nnx.RNNCellBase` API): ``(carry, x_t) -> (carry, h_t)``."""
        return self.recurrent_step(carry, self.input_projection(inputs))

    def initialize_carry(  # type: ignore[override]
        self,
        input_shape: tuple[int, ...],
        rngs: nnx.Rngs | nnx.RngStream | None = None,
        carry_init: Initializer | None = None,
    ) -> Carry:
        """The initial carry for inputs of shape ``(*batch, in_features)``: zeros by default, in
        the cell's computation ``dtype`` (its ``param_dtype`` without one).

        Args:
            input_shape: Shape of one step's input; all axes but the last are batch axes.
            rngs: Random streams for ``carry_init`` (its ``carry`` stream); not needed for zeros.
            carry_init: Initializer of each carry array; zeros when ``None``.

        Returns:
            An array ``(*batch, hidden_features)``, or ``(c, h)`` for the LSTM.
        """
        shape = tuple(input_shape[:-1]) + (self.hidden_features,)
        dtype = self.dtype or self.param_dtype
        if carry_init is None:
            arrays = [jnp.zeros(shape, dtype) for _ in range(self._num_carry_arrays)]
        else:
            if isinstance(rngs, nnx.Rngs):
                rngs = rngs.carry
            if rngs is None:
                raise ValueError("rngs must be given to initialize the carry with carry_init.")
            arrays = [carry_init(rngs(), shape, dtype) for _ in range(self._num_carry_arrays)]
        return arrays[0] if self._num_carry_arrays == 1 else tuple(arrays)

    @property
    def num_feature_axes(self) -> int:
        return 1


class SimpleCell(_Cell):
    """Vanilla recurrent cell with layer norm of the summed inputs, eq. 4 of Ba et al. (2016).

    ::

        a_t = W_hh h_{t-1} + W_xh x_t
        h_t = f(LN(a_t))          # norm='layer': LN with gain g and bias b (one pair, all steps)
        h_t = f(a_t + b)          # norm='none': the standard cell (same as nnx.SimpleCell)

    The layer norm sees the *sum* of both matmuls, so the cell is invariant to scaling ``W_hh``
    and ``W_xh`` together, not to scaling one of them alone. The output is the new state ``h_t``.

    Args:
        in_features: Input size ``D``.
        hidden_features: Number of units ``H``.
        norm: ``'layer'`` (the paper), ``'none'``, or another of :meth:`accepted_norms`
            (``'rms'``: RMS norm in place of LN).
        activation_fn: ``f`` (default ``tanh``).
        kernel_init: Initializer of ``W_xh`` (default uniform in ``[-0.1, 0.1]``).
        recurrent_kernel_init: Initializer of ``W_hh`` (default orthogonal).
        bias_init: Initializer of ``b`` with ``norm='none'``.
        epsilon: Epsilon of the normalizer (added to the variance).
        param_dtype: Dtype of the parameters (and of the initial carry without ``dtype``).
        dtype: The computation dtype of the matrix products, the activations and the carry
            (e.g. bfloat16); ``None``: promoted with the parameters, as before.
        rngs: Random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.cells import SimpleCell, scan
        >>> cell = SimpleCell(3, 8, norm="layer", rngs=nnx.Rngs(0))
        >>> h, ys = scan(cell, jnp.ones((2, 5, 3)))
        >>> h.shape, ys.shape
        ((2, 8), (2, 5, 8))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        norm: str = "layer",
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Initializer = symmetric_uniform(0.1),
        recurrent_kernel_init: Initializer = nnx.initializers.orthogonal(),
        bias_init: Initializer = nnx.initializers.zeros_init(),
        epsilon: float = 1e-5,
        param_dtype: Any = jnp.float32,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        m = self._method(norm)
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.norm_name = norm
        self.activation_fn = activation_fn
        self.param_dtype = param_dtype
        self.dtype = dtype
        linear = dict(use_bias=False, param_dtype=param_dtype, dtype=dtype, rngs=rngs)
        self.dense_i = nnx.Linear(in_features, hidden_features, kernel_init=kernel_init, **linear)
        self.dense_h = nnx.Linear(
            hidden_features, hidden_features, kernel_init=recurrent_kernel_init, **linear
        )
        self.norm = _build_norm(m, hidden_features, epsilon, rngs, dtype)
        if m.linear_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (hidden_features,), param_dtype))
        else:
            self.bias = nnx.data(None)

    def input_projection(self, inputs: Array) -> Array:
        a = self.dense_i(inputs)
        return a if self.bias is None else a + self.bias[...].astype(a.dtype)

    def recurrent_step(self, carry: Array, projected: Array) -> tuple[Array, Array]:
        h = self.activation_fn(_normalize(self.dense_h(carry) + projected, self.norm))
        return h, h


class LSTMCell(_Cell):
    """LSTM with layer normalization, eqs. 20-22 of Ba et al. (2016, supplement).

    With ``norm='layer'`` (the paper; gates stacked in the order ``f, i, o, g``)::

        [f; i; o; g] = LN_h(W_h h_{t-1}) + LN_x(W_x x_t) + b    # each LN over all 4H, own g/b
        c_t = s(f + forget_bias) * c_{t-1} + s(i) * tanh(g)
        h_t = s(o) * tanh(LN_c(c_t))                             # c_t (un-normalized) carried

    With ``norm='none'`` the standard LSTM (``LN_h, LN_x, LN_c`` are identities; equal to
    :class:`flax.nnx.LSTMCell` up to the gate order). With ``norm='cell'`` the paper's DRAW
    variant: plain gates ``W_h h + W_x x + b``, layer norm only on ``c_t`` inside the output tanh.

    Options that peers use (off by default, each pinned by a test):

    * ``ln_per_gate=True``: ``LN_h`` and ``LN_x`` normalize each ``H``-sized gate block
      separately, each block with its own gain and bias (not with ``norm='none'`` or ``'cell'``).
    * ``carry_normalized_cell=True``: carry ``LN_c(c_t)`` instead of ``c_t`` (TensorFlow's
      ``LayerNormBasicLSTMCell`` and several PyTorch ports); not with ``norm='none'``.
    * ``forget_bias``: a constant added to the forget gate's pre-activation. Default 0, as in the
      paper's code and Flax; TensorFlow's LN-LSTM uses 1.0.

    Carry ``(c, h)`` (Flax's order); output ``h_t``.

    Args:
        in_features: Input size ``D``.
        hidden_features: Number of units ``H``.
        norm: ``'layer'``, ``'none'``, ``'cell'`` (LN on ``c_t`` only) or another of
            :meth:`accepted_norms` (``'rms'``: RMS norm in place of every LN).
        ln_per_gate: Normalize each gate block separately.
        carry_normalized_cell: Carry the normalized cell state.
        forget_bias: Added to the forget gate's pre-activation.
        gate_fn: ``s`` (default sigmoid).
        activation_fn: ``tanh`` of the equations.
        kernel_init: Initializer of ``W_x``, per gate block (default uniform in ``[-0.1, 0.1]``).
        recurrent_kernel_init: Initializer of ``W_h``, per gate block (default orthogonal).
        bias_init: Initializer of ``b``.
        epsilon: Epsilon of every normalizer.
        param_dtype: Dtype of the parameters (and of the initial carry without ``dtype``).
        dtype: The computation dtype of the matrix products, the activations and the carry
            (e.g. bfloat16); ``None``: promoted with the parameters, as before.
        rngs: Random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.cells import LSTMCell, scan
        >>> cell = LSTMCell(3, 8, norm="layer", rngs=nnx.Rngs(0))
        >>> xs = jnp.ones((2, 5, 3))
        >>> (c, h), ys = scan(cell, xs, seq_lengths=jnp.array([5, 2]))
        >>> ys.shape, bool((ys[1, 2:] == 0).all())
        ((2, 5, 8), True)
        >>> nnx.RNN(cell)(xs).shape
        (2, 5, 8)
    """

    _num_carry_arrays = 2

    @classmethod
    def accepted_norms(cls) -> tuple[str, ...]:
        """The methods of :class:`_Cell` and ``'cell'`` (LN on ``c_t`` only)."""
        return (*names(recurrent=True), "cell")

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        norm: str = "layer",
        ln_per_gate: bool = False,
        carry_normalized_cell: bool = False,
        forget_bias: float = 0.0,
        gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Initializer = symmetric_uniform(0.1),
        recurrent_kernel_init: Initializer = nnx.initializers.orthogonal(),
        bias_init: Initializer = nnx.initializers.zeros_init(),
        epsilon: float = 1e-5,
        param_dtype: Any = jnp.float32,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        # 'cell': plain gates, layer norm on c_t only; otherwise the method everywhere.
        gate_norm = self._method("none" if norm == "cell" else norm)
        cell_norm = self._method("layer" if norm == "cell" else norm)
        if ln_per_gate and norm in ("none", "cell"):
            raise ValueError(
                f"ln_per_gate=True needs normalized gates (norm one of "
                f"{[n for n in self.accepted_norms() if n not in ('none', 'cell')]}), "
                f"got norm={norm!r}."
            )
        if carry_normalized_cell and norm == "none":
            raise ValueError("carry_normalized_cell=True needs a normalized c_t, not norm='none'.")
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.norm_name = norm
        self.ln_per_gate = ln_per_gate
        self.carry_normalized_cell = carry_normalized_cell
        self.forget_bias = forget_bias
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.param_dtype = param_dtype
        self.dtype = dtype
        H = hidden_features
        linear = dict(use_bias=False, param_dtype=param_dtype, dtype=dtype, rngs=rngs)
        self.dense_i = nnx.Linear(
            in_features, 4 * H, kernel_init=_blockwise(kernel_init, 4), **linear
        )
        self.dense_h = nnx.Linear(
            H, 4 * H, kernel_init=_blockwise(recurrent_kernel_init, 4), **linear
        )
        gates = dict(per_block=ln_per_gate, epsilon=epsilon, dtype=dtype, rngs=rngs)
        self.norm_i = _GateNorm(gate_norm, 4, H, **gates)
        self.norm_h = _GateNorm(gate_norm, 4, H, **gates)
        self.norm_c = _build_norm(cell_norm, H, epsilon, rngs, dtype)
        self.bias = nnx.Param(bias_init(rngs.params(), (4 * H,), param_dtype))

    def input_projection(self, inputs: Array) -> Array:
        a = self.norm_i(self.dense_i(inputs))
        return a + self.bias[...].astype(a.dtype)

    def recurrent_step(
        self, carry: tuple[Array, Array], projected: Array
    ) -> tuple[tuple[Array, Array], Array]:
        c, h = carry
        gates = self.norm_h(self.dense_h(h)) + projected
        f, i, o, g = jnp.split(gates, 4, axis=-1)
        s = self.gate_fn
        new_c = s(f + self.forget_bias) * c + s(i) * self.activation_fn(g)
        c_hat = _normalize(new_c, self.norm_c)
        new_h = s(o) * self.activation_fn(c_hat)
        return (c_hat if self.carry_normalized_cell else new_c, new_h), new_h


class GRUCell(_Cell):
    """GRU with layer normalization, eqs. 26-28 of Ba et al. (2016, supplement).

    With ``norm='layer'`` (the paper; gates stacked in the order ``z, r``)::

        [z; r] = LN(W_h h_{t-1}) + LN(W_x x_t)                 # each LN over 2H, own g/b
        h~_t   = tanh(LN(W x_t) + s(r) * LN(U h_{t-1}))         # reset after the matmul
        h_t    = (1 - s(z)) * h_{t-1} + s(z) * h~_t

    No bias beyond the LN biases. With ``norm='none'`` the standard GRU: the LNs are identities
    and a bias ``b`` (3H) is added on the input side, ``[z; r] = W_h h + W_x x + b_zr`` and
    ``h~ = tanh(W x + b_h + s(r) * (U h))``.

    ``reset_after=False`` applies the reset gate before the recurrent matmul (Cho et al., 2014,
    and the skip-thoughts code): ``h~ = tanh(LN(W x) + LN(U (s(r) * h)))``.

    Conventions differ from :class:`flax.nnx.GRUCell`, which orders its gates ``r, z, n`` and
    computes ``h' = (1 - z) * n + z * h`` (its ``z`` weights the *old* state) with no recurrent
    candidate bias. Here ``z`` weights the *new* candidate as in the paper; with ``norm='none'``
    the two cells compute the same function when ``W_z, b_z`` are Flax's negated.

    Input kernel ``W_x | W`` is ``dense_i`` (``D x 3H``: ``z, r, candidate``), recurrent kernel
    ``W_h | U`` is ``dense_h`` (``H x 3H``). Carry and output: ``h_t``.

    Args:
        in_features: Input size ``D``.
        hidden_features: Number of units ``H``.
        norm: ``'layer'`` (the paper), ``'none'``, or another of :meth:`accepted_norms`
            (``'rms'``: RMS norm in place of every LN).
        reset_after: Reset gate after (the paper) or before the recurrent matmul.
        gate_fn: ``s`` (default sigmoid).
        activation_fn: ``tanh`` of the candidate.
        kernel_init: Initializer of the input kernels, per ``H`` block (default uniform in
            ``[-0.1, 0.1]``).
        recurrent_kernel_init: Initializer of the recurrent kernels, per ``H`` block (default
            orthogonal).
        bias_init: Initializer of ``b`` with ``norm='none'``.
        epsilon: Epsilon of every normalizer.
        param_dtype: Dtype of the parameters (and of the initial carry without ``dtype``).
        dtype: The computation dtype of the matrix products, the activations and the carry
            (e.g. bfloat16); ``None``: promoted with the parameters, as before.
        rngs: Random streams.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.cells import GRUCell, scan
        >>> cell = GRUCell(3, 8, norm="layer", rngs=nnx.Rngs(0))
        >>> h, ys = scan(cell, jnp.ones((2, 5, 3)), unroll=2)
        >>> h.shape, ys.shape
        ((2, 8), (2, 5, 8))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        norm: str = "layer",
        reset_after: bool = True,
        gate_fn: Callable[[Array], Array] = jax.nn.sigmoid,
        activation_fn: Callable[[Array], Array] = jnp.tanh,
        kernel_init: Initializer = symmetric_uniform(0.1),
        recurrent_kernel_init: Initializer = nnx.initializers.orthogonal(),
        bias_init: Initializer = nnx.initializers.zeros_init(),
        epsilon: float = 1e-5,
        param_dtype: Any = jnp.float32,
        dtype: Any = None,
        rngs: nnx.Rngs,
    ):
        m = self._method(norm)
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.norm_name = norm
        self.reset_after = reset_after
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.param_dtype = param_dtype
        self.dtype = dtype
        H = hidden_features
        linear = dict(use_bias=False, param_dtype=param_dtype, dtype=dtype, rngs=rngs)
        self.dense_i = nnx.Linear(
            in_features, 3 * H, kernel_init=_blockwise(kernel_init, 3), **linear
        )
        self.dense_h = nnx.Linear(
            H, 3 * H, kernel_init=_blockwise(recurrent_kernel_init, 3), **linear
        )
        self.norm_i = _build_norm(m, 2 * H, epsilon, rngs, dtype)
        self.norm_h = _build_norm(m, 2 * H, epsilon, rngs, dtype)
        self.norm_i_candidate = _build_norm(m, H, epsilon, rngs, dtype)
        self.norm_h_candidate = _build_norm(m, H, epsilon, rngs, dtype)
        if m.linear_bias:
            self.bias = nnx.Param(bias_init(rngs.params(), (3 * H,), param_dtype))
        else:
            self.bias = nnx.data(None)

    def input_projection(self, inputs: Array) -> Array:
        a = _normalize(self.dense_i(inputs), self.norm_i, self.norm_i_candidate)
        return a if self.bias is None else a + self.bias[...].astype(a.dtype)

    def recurrent_step(self, carry: Array, projected: Array) -> tuple[Array, Array]:
        h = carry
        H = self.hidden_features
        kernel = self.dense_h.kernel[...]
        if self.dtype is not None:
            kernel = kernel.astype(self.dtype)
        x_gates, x_candidate = projected[..., : 2 * H], projected[..., 2 * H :]
        if self.reset_after:
            a = _normalize(h @ kernel, self.norm_h, self.norm_h_candidate)
            h_gates, h_candidate = a[..., : 2 * H], a[..., 2 * H :]
        else:
            h_gates = _normalize(h @ kernel[:, : 2 * H], self.norm_h)
        z, r = jnp.split(self.gate_fn(h_gates + x_gates), 2, axis=-1)
        if self.reset_after:
            recurrent = r * h_candidate
        else:
            recurrent = self.norm_h_candidate((r * h) @ kernel[:, 2 * H :])
        candidate = self.activation_fn(x_candidate + recurrent)
        new_h = (1.0 - z) * h + z * candidate
        return new_h, new_h


def scan(
    cell: _Cell,
    inputs: Array,
    *,
    seq_lengths: Array | None = None,
    initial_carry: Carry | None = None,
    unroll: int | bool = 1,
    reverse: bool = False,
    time_major: bool = False,
    precompute_inputs: bool = True,
    rngs: nnx.Rngs | nnx.RngStream | None = None,
) -> tuple[Carry, Array]:
    """Runs ``cell`` over a sequence: input projections batched, recurrence in ``lax.scan``.

    ``cell.input_projection`` is applied once to the whole ``inputs`` (one big matmul and layer
    norm for all time steps); only ``cell.recurrent_step`` runs inside ``jax.lax.scan``. This is
    meant for accelerators, where every op inside the loop is a kernel launch per step. On a
    2-core CPU the two forms measured within 15 % of each other (``scripts/bench.py``; the LSTM
    slightly faster per step): ``precompute_inputs=False`` runs the whole ``cell(carry, x_t)``
    inside the scan instead, with the same result.

    With ``seq_lengths`` (a right-padded batch) a step at ``t >= seq_lengths[b]`` leaves example
    ``b``'s carry unchanged and outputs zeros, so the final carry is the carry after the last
    valid step and the padding's contents never matter. With ``reverse=True`` the scan runs from
    the last time step to the first, so each sequence is read from its own last valid element
    backwards; outputs stay at their time positions.

    Args:
        cell: A cell of this module.
        inputs: ``(*batch, time, in_features)``, or ``(time, *batch, in_features)`` with
            ``time_major=True``.
        seq_lengths: Integer lengths, shape ``batch``; ``None`` means all steps are valid.
        initial_carry: The carry before the first step; zeros by default.
        unroll: Passed to ``jax.lax.scan``.
        reverse: Scan from the end of the sequence.
        time_major: Whether time is the first axis of ``inputs`` and of the outputs.
        precompute_inputs: Project the inputs of all steps before the scan (default) or inside
            it, step by step.
        rngs: Passed to ``cell.initialize_carry`` when ``initial_carry`` is ``None``.

    Returns:
        ``(final_carry, outputs)`` with outputs shaped like ``inputs`` but with
        ``hidden_features`` features.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.cells import GRUCell, scan
        >>> cell = GRUCell(3, 8, rngs=nnx.Rngs(0))
        >>> h, ys = scan(cell, jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 2]))
        >>> (ys != 0).any(axis=-1).sum(axis=-1).tolist()  # padded steps output zeros
        [5, 2]
    """
    time_axis = 0 if time_major else inputs.ndim - 2
    if initial_carry is None:
        step_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :]
        initial_carry = cell.initialize_carry(step_shape, rngs)
    if seq_lengths is not None:
        seq_lengths = jnp.asarray(seq_lengths)
    graphdef, state = nnx.split(cell)
    carry, outputs = _scan_time_major(
        graphdef,
        state,
        jnp.moveaxis(inputs, time_axis, 0),
        initial_carry,
        seq_lengths,
        unroll=unroll,
        reverse=reverse,
        precompute_inputs=precompute_inputs,
    )
    return carry, jnp.moveaxis(outputs, 0, time_axis)


# Jitted so that eager calls compile once per cell structure and shape, not once per call.
@functools.partial(jax.jit, static_argnames=("graphdef", "unroll", "reverse", "precompute_inputs"))
def _scan_time_major(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    xs: Array,
    initial_carry: Carry,
    seq_lengths: Array | None,
    *,
    unroll: int | bool,
    reverse: bool,
    precompute_inputs: bool,
) -> tuple[Carry, Array]:
    if precompute_inputs:
        xs = nnx.merge(graphdef, state).input_projection(xs)
    steps = jnp.arange(xs.shape[0])

    def step(carry: Carry, t_and_x: tuple[Array, Array]) -> tuple[Carry, Array]:
        t, x = t_and_x
        cell = nnx.merge(graphdef, state)
        if precompute_inputs:
            new_carry, y = cell.recurrent_step(carry, x)
        else:
            new_carry, y = cell(carry, x)
        if seq_lengths is not None:
            valid = (t < seq_lengths)[..., None]
            new_carry = jax.tree.map(lambda n, o: jnp.where(valid, n, o), new_carry, carry)
            y = jnp.where(valid, y, jnp.zeros_like(y))
        new_carry = jax.tree.map(lambda n, o: n.astype(o.dtype), new_carry, carry)
        return new_carry, y

    return jax.lax.scan(step, initial_carry, (steps, xs), unroll=unroll, reverse=reverse)
