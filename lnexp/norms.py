"""Normalization layers of "Layer Normalization" (Ba, Kiros & Hinton, 2016) in Flax NNX.

The paper writes every method as one equation on the summed inputs ``a = W x`` of a layer
(its eq. 5)::

    h_i = f(g_i / sigma_i * (a_i - mu_i) + b_i)

* batch norm (BN) takes ``mu_i, sigma_i`` per unit over the mini-batch (eq. 2);
* layer norm (LN) takes one ``mu, sigma`` per example over the layer's ``H`` units (eq. 3);
* weight norm (WN) has ``mu = 0`` and ``sigma_i = ||w_i||`` (Salimans & Kingma, 2016);
* RMS norm (Zhang & Sennrich, 2019) is LN without the mean: ``sigma = sqrt(mean_i(a_i^2))``.

:class:`NormalizedLinear` is that equation as a layer ("a linear map whose summed inputs are
normalized by <method>"); every lnexp model is built from it, so model code reads like the paper.
:func:`make_norm` builds the activation normalizers by name (``'none'``, ``'layer'``, ``'batch'``,
``'rms'``) for code that normalizes something other than a linear map's output (the recurrent
cells normalize ``W_h h`` and ``W_x x`` separately).

:data:`REGISTRY` is the one table of methods: for each name a :class:`NormMethod` that says how to
build it, whether it normalizes the summed inputs or the weights, which hyperparameters it takes,
whether the MLP normalizes its logits with it and whether the recurrent cells accept it. Adding
a method is adding an entry; :func:`method` is the one check of a name, and its
:class:`UnknownNormError` lists the valid ones.

Why these are written here rather than taken from ``flax.nnx``: Flax's ``LayerNorm``/``BatchNorm``
compute the same statistics (and the tests check that we agree with them), but (1) they return
float32 for bfloat16 inputs when the parameters are float32, where we return the input's dtype;
(2) BN has no unbiased (``1/(n-1)``) variance, which the paper uses at batch size 4; (3) LN has
no form with epsilon outside the square root, which the authors' Torch code uses; (4) Flax's
``WeightNorm`` overwrites the wrapped layer's kernel and does not train its scale, and has no
data-dependent initialization. All statistics go through one helper, :func:`moments`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array
Initializer = nnx.initializers.Initializer


def moments(
    x: Array,
    axes: int | Sequence[int],
    *,
    one_pass: bool = False,
    unbiased: bool = False,
    axis_name: str | None = None,
) -> tuple[Array, Array]:
    """Mean and variance of ``x`` over ``axes``, computed in at least float32.

    The default is the two-pass variance ``mean((x - mean(x))^2)``, which keeps full precision
    when the mean is large compared to the spread (``E[x^2] - E[x]^2`` loses it all in float32
    once ``mean/std`` exceeds about 1e3). The variance is clipped at 0.

    Args:
        x: Input array.
        axes: Axes to reduce over (kept in the outputs with size 1).
        one_pass: Use ``E[x^2] - E[x]^2`` (one fused reduction; less precise).
        unbiased: Divide the sum of squares by ``n - 1`` instead of ``n``.
        axis_name: A named mapped axis (``shard_map``/``pmap``) over which the reduction also
            runs, so the statistics cover every shard. Under plain ``jax.jit`` with a sharded
            array this is not needed: the reduction is already global.

    Returns:
        ``(mean, var)`` in float32 (float64 for float64 inputs), broadcastable against ``x``.
    """
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    x = x.astype(dtype)
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    n = 1
    for a in axes:
        n *= x.shape[a]

    def mean(v: Array) -> Array:
        m = jnp.mean(v, axis=axes, keepdims=True)
        return m if axis_name is None else jax.lax.pmean(m, axis_name)

    mu = mean(x)
    if one_pass:
        var = jnp.maximum(mean(jnp.square(x)) - jnp.square(mu), 0.0)
    else:
        var = mean(jnp.square(x - mu))
    if unbiased:
        if axis_name is not None:
            n = n * jax.lax.psum(1, axis_name)
        var = var * (n / jnp.maximum(n - 1, 1))
    return mu, var


def standardize_segments(x: Array, sizes: Sequence[int], *, epsilon: float = 1e-5) -> Array:
    """Layer-norm standardization of each contiguous segment of the last axis, fused.

    ::

        x = [x_1, ..., x_k]                         # segments of the given sizes
        y_j = (x_j - mean(x_j)) / sqrt(var(x_j) + epsilon)

    The GRU normalizes ``W_h h`` as two segments (the ``2H`` gates and the ``H`` candidate), the
    per-gate LSTM as four. Inside a recurrence every op is paid once per time step, so this
    computes all segments' statistics with one reduction over ``gcd(sizes)``-sized blocks and has
    a hand-written derivative (``r * (dx - mean(dx) - y * mean(dx * y))`` per segment, which
    serves forward and reverse mode) in place of autodiff through the two-pass variance: fewer,
    better-fused ops forward and backward. Statistics are float32 (or wider); the output is
    float32 (or wider), for the caller's gain and bias.

    Args:
        x: ``(..., sum(sizes))``.
        sizes: Segment sizes along the last axis.
        epsilon: Added to each segment's variance.

    Returns:
        The standardized ``x`` in ``promote_types(x.dtype, float32)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from lnexp.norms import standardize_segments
        >>> y = standardize_segments(jnp.arange(6.0), (4, 2))
        >>> [round(float(v), 3) for v in y]
        [-1.342, -0.447, 0.447, 1.342, -1.0, 1.0]
    """
    sizes = tuple(int(n) for n in sizes)
    if sum(sizes) != x.shape[-1] or min(sizes) < 1:
        raise ValueError(f"Segment sizes {sizes} do not partition the last axis {x.shape[-1]}.")
    return _standardize_segments(x, sizes, float(epsilon))


def _segment_mean(blocks: Array, sizes: tuple[int, ...]) -> Array:
    """Each block's segment mean, ``(..., num_blocks, 1)``, for ``(..., num_blocks, block)``.

    One segment is passed unblocked, as ``(..., size)``: a size-1 block axis makes XLA:CPU's
    gradient many times slower (jax 0.10).
    """
    block = blocks.shape[-1]
    sums = blocks.sum(-1, keepdims=True)
    if len(sizes) == 1:
        return sums / sizes[0]
    parts, start = [], 0
    for n in sizes:
        k = n // block
        total = sums[..., start : start + k, :].sum(-2, keepdims=True) / n
        parts.append(jnp.broadcast_to(total, (*total.shape[:-2], k, 1)))
        start += k
    return jnp.concatenate(parts, axis=-2)


def _standardize_segments_primal(x: Array, sizes: tuple[int, ...], epsilon: float):
    block = math.gcd(*sizes)
    dtype = jnp.promote_types(x.dtype, jnp.float32)
    blocks = x.astype(dtype)
    if len(sizes) > 1:
        blocks = blocks.reshape(*x.shape[:-1], x.shape[-1] // block, block)
    centered = blocks - _segment_mean(blocks, sizes)
    rstd = jax.lax.rsqrt(_segment_mean(centered * centered, sizes) + epsilon)
    return centered * rstd, rstd


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _standardize_segments(x: Array, sizes: tuple[int, ...], epsilon: float) -> Array:
    return _standardize_segments_primal(x, sizes, epsilon)[0].reshape(x.shape)


@_standardize_segments.defjvp
def _standardize_segments_jvp(sizes: tuple[int, ...], epsilon: float, primals, tangents):
    # The tangent map dx -> rstd * (dx - mean(dx) - y * mean(dx * y)) is linear and symmetric,
    # so JAX's transpose of it is the same expression: one rule serves jvp and grad.
    (x,), (dx,) = primals, tangents
    y, rstd = _standardize_segments_primal(x, sizes, epsilon)
    # The barrier makes XLA compute the incoming tangent (in reverse mode: the cotangent) once,
    # before this rule's reductions read it. Without it, in a residual network XLA fuses the
    # cotangent's elementwise chain, which runs back through every earlier layer norm of the
    # residual stream, into each of its consumers and recomputes it there: in the Transformer
    # (9 layer norms) that made the backward pass 4x as many elementwise ops and the layer norms
    # cost 25% of a training step instead of RMSNorm's 1% (bench section ``norms``).
    g = jax.lax.optimization_barrier(dx.reshape(y.shape).astype(y.dtype))
    dy = rstd * (g - _segment_mean(g, sizes) - y * _segment_mean(g * y, sizes))
    return y.reshape(x.shape), dy.reshape(x.shape)


Axes = int | Sequence[int]
"""One axis or several, negative counting from the end, as Flax's ``reduction_axes``."""
Features = int | Sequence[int]
"""A normalizer's ``num_features``: one size (a flat parameter vector) or the parameters' shape."""


def _ints(value: Any) -> tuple[int, ...] | None:
    """``value`` (an int or a sequence of ints) as a tuple of ints; ``None`` if it is neither."""
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    if any(isinstance(v, bool) or not hasattr(v, "__index__") for v in items):
        return None
    return tuple(operator.index(v) for v in items)


def _as_axes(axes: Axes, name: str, owner: str) -> tuple[int, ...]:
    """``axes`` as a tuple of ints, as given (not yet resolved against an input's rank)."""
    resolved = _ints(axes)
    if resolved is None:
        raise ValueError(f"{owner}: {name} must be an int or a sequence of ints, got {axes!r}.")
    return resolved


def _param_shape(num_features: Features, feature_axes: tuple[int, ...], owner: str):
    """The shape of ``scale`` and ``bias`` that ``num_features`` asks for, checked."""
    shape = _ints(num_features)
    if shape is None:
        raise ValueError(
            f"{owner}: num_features must be an int or a tuple of ints, got {num_features!r}."
        )
    if isinstance(num_features, Sequence) and len(shape) != len(feature_axes):
        raise ValueError(
            f"{owner}: num_features={shape} is the shape of {len(shape)} feature axes, but "
            f"feature_axes={feature_axes} names {len(feature_axes)}; give one size per feature "
            "axis, or one int for the flat parameter vector (Flax's layout)."
        )
    if any(n < 1 for n in shape):
        raise ValueError(f"{owner}: num_features={num_features!r} must be positive.")
    return shape


def _resolve_axes(shape: tuple[int, ...], axes: tuple[int, ...], name: str, owner: str):
    """``axes`` of an input of ``shape`` as sorted non-negative axes; out of range or repeated
    axes raise a ``ValueError`` that names them."""
    rank = len(shape)
    bad = [a for a in axes if not -rank <= a < rank]
    if bad:
        raise ValueError(
            f"{owner}: {name}={axes} has {bad} out of range for an input of rank {rank} "
            f"(shape {shape}); axes must lie in [{-rank}, {rank - 1}]."
        )
    resolved = [a % rank for a in axes]
    if len(set(resolved)) != len(resolved):
        raise ValueError(
            f"{owner}: {name}={axes} names the same axis twice for an input of rank {rank} "
            f"(shape {shape}); name each axis once."
        )
    return tuple(sorted(resolved))


class _AxesNorm(nnx.Module):
    """Shared by :class:`LayerNorm` and :class:`RMSNorm`: Flax's ``reduction_axes`` and
    ``feature_axes``, checked against each input."""

    def _init_axes(self, num_features: Features, reduction_axes: Axes, feature_axes: Axes):
        owner = type(self).__name__
        self.reduction_axes = _as_axes(reduction_axes, "reduction_axes", owner)
        if not self.reduction_axes:
            raise ValueError(f"{owner}: reduction_axes must name at least one axis.")
        self.feature_axes = _as_axes(feature_axes, "feature_axes", owner)
        shape = _param_shape(num_features, self.feature_axes, owner)
        self.num_features = shape if isinstance(num_features, Sequence) else shape[0]
        return shape

    def _axes(self, x: Array) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        """The resolved reduction axes of ``x``, and the shape the parameters broadcast from
        (``None`` when they broadcast as they are)."""
        owner = type(self).__name__
        reduce = _resolve_axes(x.shape, self.reduction_axes, "reduction_axes", owner)
        features = _resolve_axes(x.shape, self.feature_axes, "feature_axes", owner)
        sizes = tuple(x.shape[a] for a in features)
        flat = isinstance(self.num_features, int)
        if (math.prod(sizes) if flat else sizes) != self.num_features:
            raise ValueError(
                f"{owner}: num_features={self.num_features!r} does not match the input: "
                f"feature_axes={self.feature_axes} of an input of shape {x.shape} have sizes "
                f"{sizes}; build it with num_features={math.prod(sizes)} (flat, Flax's layout) "
                f"or num_features={sizes}, or pick feature_axes with the sizes num_features gives."
            )
        broadcast = [1] * x.ndim
        for a in features:
            broadcast[a] = x.shape[a]
        while broadcast and broadcast[0] == 1:
            broadcast.pop(0)  # leading size-1 axes broadcast anyway
        params = self.scale if self.scale is not None else self.bias
        if params is None or tuple(params[...].shape) == tuple(broadcast):
            return reduce, None
        return reduce, tuple(broadcast)


def _gain_and_bias(
    module: nnx.Module,
    num_features: int | tuple[int, ...],
    use_scale: bool,
    use_bias: bool,
    param_dtype: Any,
) -> None:
    """Gives ``module`` the paper's gain ``scale`` (starts at 1) and bias ``bias`` (at 0).

    The names match Flax's normalization layers, so parameter trees are interchangeable; the
    shape is ``(num_features,)``, or ``num_features`` itself when that is a tuple.
    """
    shape = num_features if isinstance(num_features, tuple) else (num_features,)
    module.scale = nnx.Param(jnp.ones(shape, param_dtype)) if use_scale else nnx.data(None)
    module.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if use_bias else nnx.data(None)


def _affine(module: nnx.Module, y: Array, shape: tuple[int, ...] | None = None) -> Array:
    """``y * scale + bias``, the parameters reshaped to ``shape`` first when it is given."""
    if module.scale is not None:
        g = module.scale[...]
        y = y * (g if shape is None else g.reshape(shape)).astype(y.dtype)
    if module.bias is not None:
        b = module.bias[...]
        y = y + (b if shape is None else b.reshape(shape)).astype(y.dtype)
    return y


class LayerNorm(_AxesNorm):
    """Layer normalization, eq. 3 of Ba et al. (2016).

    For each example the ``H`` features on the last axis are standardized with their own mean and
    (biased, ``1/H``) variance, then scaled by a gain ``g`` and shifted by a bias ``b``::

        mu = mean_i(a_i),  var = mean_i((a_i - mu)^2)
        y  = g * (a - mu) / sqrt(var + epsilon) + b        # default
        y  = g * (a - mu) / (sqrt(var) + epsilon) + b      # epsilon_outside_sqrt=True (Torch code)

    With Flax's ``reduction_axes`` and ``feature_axes`` (same meaning as in
    ``flax.nnx.LayerNorm``) the mean ``mu`` and variance ``var`` are taken over every
    ``reduction_axes`` position ``i`` of one example instead, and ``g``, ``b`` have one entry per
    position on the ``feature_axes``, broadcast over the other axes: per head of
    ``(batch, seq, heads, head_dim)`` with ``reduction_axes=-1, feature_axes=(-2, -1)``, over
    channels and space of ``(batch, H, W, C)`` with ``reduction_axes=(1, 2, 3)`` (one gain per
    channel, the default ``feature_axes=-1``).

    The computation is the same in training and evaluation and never looks at other examples
    (unless ``reduction_axes`` names the batch axis), so an example gives the same output alone
    or inside any batch. Statistics are computed in at least float32; the output has the input's
    dtype (or ``dtype`` when given). Reductions over trailing axes in the default form go
    through the fused :func:`standardize_segments` and its hand-written derivative.

    Args:
        num_features: Size of the parameters ``g`` and ``b``. An int ``n`` gives them shape
            ``(n,)``, Flax's layout: ``n`` is the size of the feature axis, or for several
            feature axes the product of their sizes (the flat vector is reshaped to them, in
            the input's axis order, as ``flax.nnx.LayerNorm`` does). A tuple gives them that
            shape, which must be the input's sizes on ``feature_axes`` in axis order (e.g.
            ``(heads, head_dim)``, Linen's layout).
        reduction_axes: Axes the statistics are computed over (int or tuple, negative allowed).
        feature_axes: Axes that get their own gain and bias (int or tuple, negative allowed).
        epsilon: Added to the variance (or to the standard deviation, see below).
        use_scale: Learn the gain ``g`` (initialized to 1).
        use_bias: Learn the bias ``b`` (initialized to 0).
        epsilon_outside_sqrt: Divide by ``std + epsilon`` as the authors' Torch code does.
        one_pass_variance: Compute the variance as ``E[a^2] - E[a]^2`` (opt-in; imprecise when
            the mean is large).
        dtype: Output dtype; defaults to the input's.
        param_dtype: Dtype of ``g`` and ``b``.
        rngs: Random streams (unused: the initial values are constants).

    Raises:
        ValueError: At construction for malformed ``num_features`` or axes (a tuple
            ``num_features`` needs one size per feature axis); at call for axes out of range
            or repeated for the input's rank, or feature axes whose sizes do not match
            ``num_features``. The message names the problem and the fix.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.norms import LayerNorm
        >>> ln = LayerNorm(4, rngs=nnx.Rngs(0))
        >>> y = ln(jnp.array([[1.0, 2.0, 3.0, 4.0]]))
        >>> round(float(y.mean()), 6), round(float(y.std()), 4)
        (0.0, 1.0)

        Per head, with a gain and bias for each head and unit (``(heads, head_dim)``):

        >>> q = jax.random.normal(jax.random.key(0), (2, 5, 4, 8))  # (batch, seq, heads, dim)
        >>> qk_norm = LayerNorm((4, 8), feature_axes=(-2, -1), rngs=nnx.Rngs(0))
        >>> qk_norm.scale[...].shape, qk_norm(q).shape
        ((4, 8), (2, 5, 4, 8))

        Over channels and space of images, one gain and bias per channel:

        >>> img = jax.random.normal(jax.random.key(1), (2, 6, 6, 3))  # (batch, H, W, C)
        >>> y = LayerNorm(3, reduction_axes=(1, 2, 3), rngs=nnx.Rngs(0))(img)
        >>> [round(float(s), 3) for s in y.std(axis=(1, 2, 3))]
        [1.0, 1.0]
    """

    def __init__(
        self,
        num_features: Features,
        *,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        epsilon_outside_sqrt: bool = False,
        one_pass_variance: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        shape = self._init_axes(num_features, reduction_axes, feature_axes)
        self.epsilon = epsilon
        self.epsilon_outside_sqrt = epsilon_outside_sqrt
        self.one_pass_variance = one_pass_variance
        self.dtype = dtype
        _gain_and_bias(self, shape, use_scale, use_bias, param_dtype)

    def __call__(self, x: Array) -> Array:
        reduce, shape = self._axes(x)
        trailing = reduce == tuple(range(x.ndim - len(reduce), x.ndim))
        if trailing and not (self.one_pass_variance or self.epsilon_outside_sqrt):
            # The default form through the fused standardization and its hand-written
            # derivative: the same values, fewer ops forward and backward than autodiff of the
            # two-pass variance. Several trailing axes are flattened into one.
            lead = x.shape[: x.ndim - len(reduce)]
            flat = x.reshape(*lead, -1)
            y = standardize_segments(flat, (flat.shape[-1],), epsilon=self.epsilon)
            return _affine(self, y.reshape(x.shape), shape).astype(self.dtype or x.dtype)
        mu, var = moments(x, reduce, one_pass=self.one_pass_variance)
        xc = x.astype(mu.dtype) - mu
        if self.epsilon_outside_sqrt:
            y = xc / (jnp.sqrt(var) + self.epsilon)
        else:
            y = xc * jax.lax.rsqrt(var + self.epsilon)
        return _affine(self, y, shape).astype(self.dtype or x.dtype)


class RMSNorm(_AxesNorm):
    """Root-mean-square normalization (Zhang & Sennrich, 2019): layer norm without the mean.

    ::

        y = g * a / sqrt(mean_i(a_i^2) + epsilon) [+ b]

    The mean is over the last axis, or over ``reduction_axes``; ``g`` and ``b`` have one entry
    per position on ``feature_axes``, both with the meaning of ``flax.nnx.RMSNorm`` (see
    :class:`LayerNorm`).

    Args:
        num_features: Size of the parameters ``g`` and ``b``: an int ``n`` gives them shape
            ``(n,)`` (Flax's layout; for several feature axes the product of their sizes), a
            tuple gives them that shape, the input's sizes on ``feature_axes`` in axis order.
        reduction_axes: Axes the mean square is computed over (int or tuple, negative allowed).
        feature_axes: Axes that get their own gain and bias (int or tuple, negative allowed).
        epsilon: Added to the mean square.
        use_scale: Learn the gain ``g`` (initialized to 1).
        use_bias: Learn a bias ``b`` (initialized to 0); off by default as in the RMSNorm paper,
            on inside :class:`NormalizedLinear` so that every method there has a gain and bias.
        dtype: Output dtype; defaults to the input's.
        param_dtype: Dtype of ``g`` and ``b``.
        rngs: Random streams (unused: the initial values are constants).

    Raises:
        ValueError: As for :class:`LayerNorm`, naming the problem and the fix.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.norms import RMSNorm
        >>> y = RMSNorm(2, rngs=nnx.Rngs(0))(jnp.array([[3.0, 4.0]]))
        >>> [round(float(v), 3) for v in y[0]]
        [0.849, 1.131]

        Per head of ``(batch, seq, heads, head_dim)``, Flax's flat ``heads * head_dim`` gain:

        >>> k = jax.random.normal(jax.random.key(0), (2, 5, 4, 8))
        >>> rms = RMSNorm(4 * 8, feature_axes=(-2, -1), rngs=nnx.Rngs(0))
        >>> rms.scale[...].shape, rms(k).shape
        ((32,), (2, 5, 4, 8))
    """

    def __init__(
        self,
        num_features: Features,
        *,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        epsilon: float = 1e-6,
        use_scale: bool = True,
        use_bias: bool = False,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        shape = self._init_axes(num_features, reduction_axes, feature_axes)
        self.epsilon = epsilon
        self.dtype = dtype
        _gain_and_bias(self, shape, use_scale, use_bias, param_dtype)

    def __call__(self, x: Array) -> Array:
        reduce, shape = self._axes(x)
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        ms = jnp.mean(jnp.square(xf), axis=reduce, keepdims=True)
        y = _affine(self, xf * jax.lax.rsqrt(ms + self.epsilon), shape)
        return y.astype(self.dtype or x.dtype)


class BatchNorm(nnx.Module):
    """Batch normalization (Ioffe & Szegedy, 2015), eq. 2 of Ba et al. (2016).

    In training (``use_running_average=False``) each unit (last axis) is standardized with the
    mean and variance over every other axis of the batch, and exponential running averages of
    both are updated; in evaluation the running averages are used::

        y = g * (a - mu_B) / sqrt(var_B + epsilon) + b
        running = momentum * running + (1 - momentum) * batch_statistic

    ``momentum`` follows Flax's convention (0.99 here is PyTorch's ``momentum=0.01``). With
    ``unbiased=True`` the batch variance is ``sum((a - mu)^2) / (n - 1)``, as the paper uses at
    batch size 4; the running variance then averages that same estimate.

    Which batch the statistics are over: under ``jax.jit`` with the batch sharded over devices
    (lnexp's training loop) the reductions are global, so the statistics are over the whole
    global batch, exactly as on one device. Inside ``shard_map`` each device sees only its shard:
    pass ``axis_name`` (the mesh axis the batch is split over) to average over all shards; without
    it the statistics are per device. Switch modes the NNX way: ``model.train()``/``model.eval()``.

    Args:
        num_features: Number of units (size of the last axis).
        momentum: Decay of the running averages.
        epsilon: Added to the variance.
        unbiased: Use the ``1/(n-1)`` variance in training.
        use_running_average: Start in evaluation mode.
        use_scale: Learn the gain ``g`` (initialized to 1).
        use_bias: Learn the bias ``b`` (initialized to 0).
        axis_name: Named mapped axis to average statistics over (``shard_map``).
        dtype: Output dtype; defaults to the input's.
        param_dtype: Dtype of ``g`` and ``b``.
        rngs: Random streams (unused: the initial values are constants).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.norms import BatchNorm
        >>> bn = BatchNorm(2, rngs=nnx.Rngs(0))
        >>> y = bn(jnp.array([[0.0, 10.0], [2.0, 30.0]]))
        >>> [round(float(v), 3) for v in y[:, 1]]
        [-1.0, 1.0]
        >>> bn.eval()  # now uses the running averages
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        unbiased: bool = False,
        use_running_average: bool = False,
        use_scale: bool = True,
        use_bias: bool = True,
        axis_name: str | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.num_features = num_features
        self.momentum = momentum
        self.epsilon = epsilon
        self.unbiased = unbiased
        self.use_running_average = use_running_average
        self.axis_name = axis_name
        self.dtype = dtype
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        _gain_and_bias(self, num_features, use_scale, use_bias, param_dtype)

    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        if use_running_average is None:
            use_running_average = self.use_running_average
        if use_running_average:
            mu, var = self.mean[...], self.var[...]
        else:
            reduce = tuple(range(x.ndim - 1))
            mu, var = moments(x, reduce, unbiased=self.unbiased, axis_name=self.axis_name)
            mu, var = mu.reshape(-1), var.reshape(-1)
            m = self.momentum
            self.mean[...] = jax.lax.stop_gradient(m * self.mean[...] + (1 - m) * mu)
            self.var[...] = jax.lax.stop_gradient(m * self.var[...] + (1 - m) * var)
        y = (x.astype(mu.dtype) - mu) * jax.lax.rsqrt(var + self.epsilon)
        return _affine(self, y).astype(self.dtype or x.dtype)


class Identity(nnx.Module):
    """The ``'none'`` normalizer: returns its input unchanged."""

    def __init__(self, num_features: int | None = None, **unused: Any):
        del num_features, unused

    def __call__(self, x: Array) -> Array:
        return x


class WeightNormLinear(nnx.Module):
    """A linear layer with weight normalization (Salimans & Kingma, 2016).

    Each output unit's weight vector is re-parameterized by a direction ``v`` and a length ``g``::

        w_j = g_j * v_j / ||v_j||,    y = x @ w + b

    ``v`` and ``g`` are both trainable :class:`nnx.Param`\\ s and ``v`` is stored un-normalized,
    so gradient steps move ``v`` freely while the layer only sees its direction. ``g`` starts at
    ``||v||``: at initialization the layer computes exactly the plain linear map ``x @ v + b``.
    :meth:`data_init` is the paper's data-dependent initialization.

    Written here because Flax's ``nnx.WeightNorm`` wraps a layer by overwriting its kernel on
    every call and keeps the scale out of training, and no Flax version has the data-dependent
    initialization.

    Args:
        in_features: Input size.
        out_features: Number of units.
        use_bias: Add a bias ``b`` (initialized to 0).
        kernel_init: Initializer of ``v`` (shape ``(in_features, out_features)``).
        epsilon: Added to ``||v||^2`` to guard against zero (not a normalizer's variance
            epsilon: it never sees the data).
        dtype: Computation dtype; defaults to the input's.
        param_dtype: Dtype of the parameters.
        rngs: Random streams; ``rngs.params()`` draws ``v``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.norms import WeightNormLinear
        >>> layer = WeightNormLinear(3, 2, rngs=nnx.Rngs(0))
        >>> x = jax.random.normal(jax.random.key(1), (5, 3))
        >>> bool(jnp.allclose(layer(x), x @ layer.v[...], atol=1e-6))
        True
        >>> y = layer.data_init(x)  # per-unit mean 0, std 1 on this batch
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        kernel_init: Initializer = nnx.initializers.lecun_normal(),
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = in_features
        self.out_features = out_features
        self.epsilon = epsilon
        self.dtype = dtype
        v = kernel_init(rngs.params(), (in_features, out_features), param_dtype)
        self.v = nnx.Param(v)
        self.g = nnx.Param(self._norm(v))
        self.bias = (
            nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else nnx.data(None)
        )

    def _norm(self, v: Array) -> Array:
        return jnp.sqrt(jnp.sum(jnp.square(v), axis=0) + self.epsilon)

    @property
    def kernel(self) -> Array:
        """The effective weight matrix ``g * v / ||v||``, shape ``(in_features, out_features)``."""
        v = self.v[...]
        return v * (self.g[...] / self._norm(v))

    def __call__(self, x: Array) -> Array:
        # A floating input keeps its dtype; an integer one (e.g. uint8 pixels) computes in the
        # parameters' dtype instead of truncating the kernel to integers.
        floating = jnp.issubdtype(x.dtype, jnp.floating)
        v = self.v[...]
        dtype = self.dtype or (x.dtype if floating else v.dtype)
        # x @ (v * s) computed as (x @ v) * s, s = g / ||v||: the scale goes on the (batch, out)
        # outputs instead of a materialized (in, out) kernel, which saves whole passes over the
        # weights forward and backward (Salimans & Kingma's own implementation does the same).
        y = jnp.dot(x.astype(dtype), v.astype(dtype)) * (self.g[...] / self._norm(v)).astype(dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(dtype)
        return y

    def data_init(self, x: Array, *, epsilon: float = 1e-6) -> Array:
        """Salimans & Kingma's data-dependent initialization from one batch ``x``.

        With ``t = x @ (v / ||v||)`` and its per-unit batch mean ``m`` and standard deviation
        ``s``, sets ``g = 1 / s`` and ``b = -m / s`` so that this batch's pre-activations have
        mean 0 and standard deviation 1 per unit. ``v`` is left as it is.

        Args:
            x: A batch of inputs, shape ``(batch, in_features)``.
            epsilon: Added to ``s`` to guard against constant units.

        Returns:
            The layer's output on ``x`` after the initialization.
        """
        v = self.v[...]
        t = jnp.dot(x.astype(jnp.float32), (v / self._norm(v)).astype(jnp.float32))
        m, var = moments(t, 0)
        s = jnp.sqrt(var.reshape(-1)) + epsilon
        self.g[...] = (1.0 / s).astype(self.g[...].dtype)
        if self.bias is not None:
            self.bias[...] = (-m.reshape(-1) / s).astype(self.bias[...].dtype)
        return self(x)


# ------------------------------------------------------------------------------------------------
# The registry of methods: everything the rest of lnexp knows about a normalization by its name.
# ------------------------------------------------------------------------------------------------

SUMMED_INPUTS = "summed_inputs"
"""Kind of a method that normalizes the summed inputs ``a = W x`` (or any activation)."""
WEIGHTS = "weights"
"""Kind of a method that re-parameterizes the weights ``W`` of the linear map itself."""


@dataclasses.dataclass(frozen=True)
class NormMethod:
    """One normalization method: how to build it and where lnexp may use it.

    In the terms of eq. 5, ``h = f(g / sigma * (a - mu) + b)`` with ``a = W x``, a method either
    computes ``mu, sigma`` from the summed inputs ``a`` (kind :data:`SUMMED_INPUTS`: BN, LN, RMS;
    ``'none'`` too, with ``mu = 0, sigma = 1``) or from the weights ``W`` (kind :data:`WEIGHTS`:
    WN's ``sigma_j = ||w_j||``, which becomes part of the linear layer).

    Attributes:
        name: The name configs and constructors use (``norm='layer'``).
        kind: :data:`SUMMED_INPUTS` or :data:`WEIGHTS`.
        build: For :data:`SUMMED_INPUTS`, the normalizer of the last axis,
            ``build(num_features, *, rngs, **kwargs) -> nnx.Module``; for :data:`WEIGHTS`, the
            whole linear layer, ``build(in_features, out_features, *, kernel_init, rngs,
            **kwargs) -> nnx.Module``.
        hyperparameters: The settings of the method itself that an experiment's config passes
            to ``build`` by these keyword names (``epsilon``, batch norm's ``momentum`` and
            ``unbiased``). Construction options (``use_scale``, ``dtype``, ...) are not listed:
            ``build`` takes them too, but configs do not set them.
        normalizes_logits: Whether the MLP (:class:`lnexp.models.mlp.MLP`) normalizes its logit
            layer with this method by default. The paper normalizes all of BN's layers and only
            the hidden ones with LN (Section 6.1); WN re-parameterizes every layer.
        recurrent: Whether the recurrent cells (:mod:`lnexp.cells`) accept the method: its
            statistics are per example, so it applies at every time step alike. Batch norm's
            statistics over the batch of one step are not, and weight norm is not a normalizer
            of activations.
        linear_bias: Whether the linear map in front keeps its own bias ``b``; every method
            except ``'none'`` brings its own ``b`` in its place.
        defaults: Keyword arguments for ``build`` where the method normalizes a linear map's
            output (:class:`NormalizedLinear`, the cells), below the caller's own: RMS norm
            gets ``use_bias=True`` there, so that every method has the ``g`` and ``b`` of eq. 5.
        data_init: Whether the built layer has ``data_init(x)``, a data-dependent
            initialization (weight norm's, Salimans & Kingma).

    Example:
        A method is one entry of :data:`REGISTRY` (here a hypothetical bias-free layer norm;
        the tests add it the same way)::

            REGISTRY["scale_only"] = NormMethod(
                "scale_only", SUMMED_INPUTS, functools.partial(LayerNorm, use_bias=False),
                hyperparameters=("epsilon",), recurrent=True,
            )
    """

    name: str
    kind: str
    build: Callable[..., nnx.Module]
    hyperparameters: tuple[str, ...] = ()
    normalizes_logits: bool = False
    recurrent: bool = False
    linear_bias: bool = False
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_init: bool = False

    def __post_init__(self):
        if self.kind not in (SUMMED_INPUTS, WEIGHTS):
            raise ValueError(f"NormMethod kind must be {SUMMED_INPUTS!r} or {WEIGHTS!r}.")
        if self.recurrent and self.kind != SUMMED_INPUTS:
            raise ValueError(f"Only {SUMMED_INPUTS!r} methods can normalize inside cells.")

    def normalizer(self, num_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
        """The normalizer of a linear map's ``num_features`` outputs: ``build`` with
        :attr:`defaults` below ``kwargs``. Only for :data:`SUMMED_INPUTS` methods."""
        if self.kind != SUMMED_INPUTS:
            raise TypeError(f"{self.name!r} normalizes weights, not activations.")
        return self.build(num_features, rngs=rngs, **{**self.defaults, **kwargs})


REGISTRY: dict[str, NormMethod] = {
    m.name: m
    for m in (
        NormMethod("none", SUMMED_INPUTS, Identity, recurrent=True, linear_bias=True),
        NormMethod("layer", SUMMED_INPUTS, LayerNorm, ("epsilon",), recurrent=True),
        NormMethod(
            "batch",
            SUMMED_INPUTS,
            BatchNorm,
            ("epsilon", "momentum", "unbiased"),
            normalizes_logits=True,
        ),
        NormMethod("weight", WEIGHTS, WeightNormLinear, normalizes_logits=True, data_init=True),
        NormMethod(
            "rms", SUMMED_INPUTS, RMSNorm, ("epsilon",), recurrent=True, defaults={"use_bias": True}
        ),
    )
}
"""Every normalization method by name: the one table a new method is added to.

Everything else reads it: :class:`NormalizedLinear` and :func:`make_norm` build from it, the MLP
takes its logits default, the cells the methods they accept, the experiments the hyperparameters
a config passes, the tests and benchmarks the methods they run. Weight norm's ``epsilon`` guards
``||v||`` and never sees the data, so it is no hyperparameter of the method.
"""

NORMS = tuple(REGISTRY)
"""The names of :data:`REGISTRY` (every value ``NormalizedLinear(norm=...)`` accepts)."""


class UnknownNormError(ValueError):
    """A normalization name that is not one of the valid ones; the message lists them.

    Attributes:
        name: The name given.
        valid: The names that would have been accepted.
        owner: What refused it (e.g. ``'GRUCell'``), or ``None``.
    """

    def __init__(self, name: str, valid: Iterable[str], owner: str | None = None):
        self.name = name
        self.valid = tuple(valid)
        self.owner = owner
        super().__init__(self.describe())

    def describe(self, source: str | None = None) -> str:
        """The message, naming where the name came from (e.g. ``'config.model.norm'``)."""
        where = f" in {source}" if source else ""
        owner = f" for {self.owner}" if self.owner else ""
        return (
            f"Unknown normalization {self.name!r}{where}{owner}: "
            f"expected one of {list(self.valid)}."
        )


def names(*, kind: str | None = None, recurrent: bool | None = None) -> tuple[str, ...]:
    """The names of the methods of :data:`REGISTRY` of this ``kind`` and ``recurrent`` flag."""
    return tuple(
        m.name
        for m in REGISTRY.values()
        if (kind is None or m.kind == kind) and (recurrent is None or m.recurrent == recurrent)
    )


def method(
    name: str, *, among: Iterable[str] | None = None, owner: str | None = None
) -> NormMethod:
    """The method called ``name``: the one place where a normalization's name is checked.

    Args:
        name: A key of :data:`REGISTRY`.
        among: The names acceptable here, for the message too (default: all of
            :data:`REGISTRY`), e.g. ``names(recurrent=True)``; a caller's own variants that are
            no method (the LSTM's ``'cell'``) may be listed, but are never looked up.
        owner: What asks, for the message (e.g. ``'GRUCell'``).

    Raises:
        UnknownNormError: (a ``ValueError``) when ``name`` is not one of ``among`` or not in
            the registry; the message lists the valid names.
    """
    valid = tuple(REGISTRY) if among is None else tuple(among)
    if name not in valid or name not in REGISTRY:
        raise UnknownNormError(name, valid, owner)
    return REGISTRY[name]


def make_norm(name: str, num_features: int, *, rngs: nnx.Rngs, **kwargs: Any) -> nnx.Module:
    """Builds the activation normalizer called ``name`` over ``num_features`` units.

    Args:
        name: A :data:`SUMMED_INPUTS` method of :data:`REGISTRY`: ``'none'``, ``'layer'``,
            ``'batch'``, ``'rms'``.
        num_features: Size of the normalized (last) axis.
        rngs: Random streams.
        **kwargs: Passed to the normalizer (e.g. ``epsilon``, ``unbiased`` for batch norm); the
            method's :attr:`NormMethod.defaults` are not applied (see
            :meth:`NormMethod.normalizer`).

    Raises:
        UnknownNormError: (a ``ValueError``) for an unknown name; the message lists the valid
            ones.
    """
    m = method(name, among=names(kind=SUMMED_INPUTS))
    return m.build(num_features, rngs=rngs, **kwargs)


class NormalizedLinear(nnx.Module):
    """A linear map whose summed inputs are normalized by ``norm`` (eq. 5 of Ba et al., 2016).

    ::

        a = x @ W                                      # summed inputs, no bias
        y = g / sigma * (a - mu) + b                   # mu, sigma from the chosen method

    * ``'none'``: ``y = x @ W + b`` (plain linear layer with bias);
    * ``'layer'``: ``mu, sigma`` over the units of each example (:class:`LayerNorm`);
    * ``'batch'``: ``mu, sigma`` per unit over the batch (:class:`BatchNorm`, with running
      averages in evaluation);
    * ``'weight'``: ``mu = 0, sigma_j = ||w_j||`` (:class:`WeightNormLinear`);
    * ``'rms'``: ``mu = 0, sigma`` the root mean square over units (:class:`RMSNorm`).

    The linear map has no bias of its own when a normalizer follows (the normalizer's ``b`` takes
    its place). The non-linearity ``f`` is left to the caller. How each method is built is its
    :class:`NormMethod` entry in :data:`REGISTRY`; a new entry is a new ``norm`` here.

    Args:
        in_features: Input size.
        out_features: Number of units ``H``.
        norm: The method, a key of :data:`REGISTRY`.
        kernel_init: Initializer of ``W`` (of ``v`` for weight norm).
        dtype: The computation dtype of the matrix product and the output (e.g. bfloat16; the
            parameters stay float32 and the normalizer's statistics at least float32);
            ``None``: a floating input's dtype out, the product promoted with the parameters.
        rngs: Random streams.
        **norm_kwargs: Passed to the normalizer (``epsilon``, ``unbiased``, ``momentum``, ...).

    Raises:
        UnknownNormError: (a ``ValueError``) for an unknown ``norm``; the message lists the
            valid names.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from lnexp.norms import NormalizedLinear
        >>> layer = NormalizedLinear(784, 1000, norm="layer", rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((2, 784))).shape
        (2, 1000)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        norm: str,
        kernel_init: Initializer = nnx.initializers.lecun_normal(),
        dtype: Any = None,
        rngs: nnx.Rngs,
        **norm_kwargs: Any,
    ):
        m = method(norm)
        self.norm_name = norm
        self.dtype = dtype
        # Only given when set, so that a method built without the argument still builds.
        typed = {} if dtype is None else {"dtype": dtype}
        if m.kind == WEIGHTS:
            self.linear = m.build(
                in_features,
                out_features,
                kernel_init=kernel_init,
                rngs=rngs,
                **typed,
                **norm_kwargs,
            )
            self.norm = Identity()
            return
        self.linear = nnx.Linear(
            in_features,
            out_features,
            use_bias=m.linear_bias,
            kernel_init=kernel_init,
            rngs=rngs,
            **typed,
        )
        self.norm = m.normalizer(out_features, rngs=rngs, **typed, **norm_kwargs)

    def __call__(self, x: Array) -> Array:
        y = self.norm(self.linear(x))
        if self.dtype is not None:
            return y.astype(self.dtype)
        # nnx.Linear promotes e.g. bfloat16 inputs to its float32 kernel; return a floating
        # input's dtype for every method, as WeightNormLinear and the normalizers do.
        return y.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else y
