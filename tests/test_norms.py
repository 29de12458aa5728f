"""Tests of lnexp.norms: formulas, Flax parity, the paper's Table 1, numerics, interop."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.core import FrozenDict

from lnexp import norms
from lnexp.norms import (
    NORMS,
    BatchNorm,
    LayerNorm,
    NormalizedLinear,
    RMSNorm,
    WeightNormLinear,
    make_norm,
    moments,
    standardize_segments,
)

SHAPES = [(3, 5), (2, 4, 7), (1, 16)]
# Output tolerances (rtol, atol) per input dtype; outputs are O(1) to O(10).
TOL = {
    jnp.float32: (1e-5, 1e-5),
    jnp.bfloat16: (2e-2, 3e-2),
    jnp.float16: (3e-3, 3e-3),
}


# ------------------------------------------------------------------------------------------------
# float64 NumPy references of the formulas
# ------------------------------------------------------------------------------------------------


def f64(x) -> np.ndarray:
    """Any (JAX, bf16 included) array as float64 NumPy."""
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def ln_ref(x, g, b, eps, outside=False):
    x = f64(x)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    xhat = (x - mu) / (np.sqrt(var) + eps) if outside else (x - mu) / np.sqrt(var + eps)
    return xhat * f64(g) + f64(b)


def rms_ref(x, g, b, eps):
    x = f64(x)
    ms = (x**2).mean(-1, keepdims=True)
    y = x / np.sqrt(ms + eps) * f64(g)
    return y if b is None else y + f64(b)


def bn_stats_ref(x, unbiased=False):
    x = f64(x).reshape(-1, np.shape(x)[-1])
    n = x.shape[0]
    mu = x.mean(0)
    ss = ((x - mu) ** 2).sum(0)
    var = ss / (n - 1) if (unbiased and n > 1) else ss / n
    return mu, var


def bn_apply_ref(x, mu, var, g, b, eps):
    return (f64(x) - f64(mu)) / np.sqrt(f64(var) + eps) * f64(g) + f64(b)


def wn_ref(x, v, g, b, eps=0.0):
    v = f64(v)
    w = f64(g) * v / np.sqrt((v**2).sum(0) + eps)
    return f64(x) @ w + f64(b)


def assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(f64(actual), expected, rtol=rtol * scale, atol=atol * scale)


def rand(seed, shape, loc=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(loc, scale, shape).astype(np.float32)


def set_affine(module, seed):
    """Random non-trivial gain (away from 0 and 1) and bias."""
    n = module.scale[...].shape[0]
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n)
    module.scale[...] = jnp.asarray(g, jnp.float32)
    if module.bias is not None:
        module.bias[...] = jnp.asarray(rng.normal(0, 1, n), jnp.float32)
    return module.scale[...], (None if module.bias is None else module.bias[...])


DTYPES = [jnp.float32, jnp.bfloat16]
DT_IDS = ["f32", "bf16"]


# ------------------------------------------------------------------------------------------------
# 1. Each module against its formula
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES + [jnp.float16], ids=DT_IDS + ["f16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize(
    "form", ["default", "eps_outside_sqrt", "one_pass"], ids=["default", "outside", "onepass"]
)
def test_layer_norm_matches_formula(form, shape, dtype):
    eps = 1e-3  # large enough that a misplaced epsilon shows up
    ln = LayerNorm(
        shape[-1],
        epsilon=eps,
        epsilon_outside_sqrt=form == "eps_outside_sqrt",
        one_pass_variance=form == "one_pass",
        rngs=nnx.Rngs(0),
    )
    g, b = set_affine(ln, 1)
    x = jnp.asarray(rand(2, shape, 0.5, 2.0), dtype)
    y = ln(x)
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, ln_ref(x, g, b, eps, outside=form == "eps_outside_sqrt"), dtype)


def test_layer_norm_epsilon_placement_is_distinguishable():
    """The two epsilon forms differ on a small-variance input (so the test above can fail)."""
    x = jnp.asarray(rand(0, (4, 8), 0.0, 0.03))
    a = LayerNorm(8, epsilon=1e-3, rngs=nnx.Rngs(0))(x)
    b = LayerNorm(8, epsilon=1e-3, epsilon_outside_sqrt=True, rngs=nnx.Rngs(0))(x)
    assert float(jnp.max(jnp.abs(a - b))) > 0.1


@pytest.mark.parametrize("dtype", DTYPES + [jnp.float16], ids=DT_IDS + ["f16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("use_bias", [False, True])
def test_rms_norm_matches_formula(use_bias, shape, dtype):
    eps = 1e-3
    rms = RMSNorm(shape[-1], epsilon=eps, use_bias=use_bias, rngs=nnx.Rngs(0))
    g, b = set_affine(rms, 3)
    x = jnp.asarray(rand(4, shape, 0.5, 2.0), dtype)
    y = rms(x)
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, rms_ref(x, g, b, eps), dtype)


@pytest.mark.parametrize("dtype", DTYPES + [jnp.float16], ids=DT_IDS + ["f16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
def test_batch_norm_train_and_eval_match_formula(unbiased, shape, dtype):
    eps, m = 1e-3, 0.8
    bn = BatchNorm(shape[-1], momentum=m, epsilon=eps, unbiased=unbiased, rngs=nnx.Rngs(0))
    g, b = set_affine(bn, 5)
    run_mu, run_var = np.zeros(shape[-1]), np.ones(shape[-1])
    for step in range(2):  # two steps: the running-average recurrence, not just its first term
        x = jnp.asarray(rand(6 + step, shape, 1.5, 3.0), dtype)
        y = bn(x)
        assert y.dtype == dtype and y.shape == shape
        mu, var = bn_stats_ref(x, unbiased)
        assert_close(y, bn_apply_ref(x, mu, var, g, b, eps), dtype)
        run_mu = m * run_mu + (1 - m) * mu
        run_var = m * run_var + (1 - m) * var
        assert bn.mean[...].dtype == jnp.float32
        np.testing.assert_allclose(f64(bn.mean[...]), run_mu, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(f64(bn.var[...]), run_var, rtol=1e-5, atol=1e-5)

    bn.eval()
    x = jnp.asarray(rand(9, shape, -1.0, 2.0), dtype)
    y = bn(x)
    assert y.dtype == dtype
    assert_close(y, bn_apply_ref(x, run_mu, run_var, g, b, eps), dtype)
    # Evaluation does not touch the running statistics.
    np.testing.assert_allclose(f64(bn.mean[...]), run_mu, rtol=1e-5, atol=1e-5)
    bn.train()
    assert_close(bn(x), bn_apply_ref(x, *bn_stats_ref(x, unbiased), g, b, eps), dtype)


def test_batch_norm_unbiased_differs_from_biased():
    x = jnp.asarray(rand(0, (4, 3)))
    a = BatchNorm(3, rngs=nnx.Rngs(0))(x)
    b = BatchNorm(3, unbiased=True, rngs=nnx.Rngs(0))(x)
    # sqrt(4/3): unbiased outputs are smaller by this factor (up to epsilon).
    np.testing.assert_allclose(f64(a) / f64(b), np.sqrt(4 / 3), rtol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES + [jnp.float16], ids=DT_IDS + ["f16"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_weight_norm_linear_matches_formula(shape, dtype):
    layer = WeightNormLinear(shape[-1], 6, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(7)
    layer.v[...] = jnp.asarray(rng.normal(0, 3.0, (shape[-1], 6)), jnp.float32)
    layer.g[...] = jnp.asarray(rng.uniform(0.5, 2.0, 6), jnp.float32)
    layer.bias[...] = jnp.asarray(rng.normal(0, 1, 6), jnp.float32)
    x = jnp.asarray(rand(8, shape), dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == shape[:-1] + (6,)
    ref = wn_ref(x, layer.v[...], layer.g[...], layer.bias[...])
    assert_close(y, ref, dtype, scale=2.0)
    # The effective kernel has column norms g, direction v.
    k = f64(layer.kernel)
    np.testing.assert_allclose(np.linalg.norm(k, axis=0), f64(layer.g[...]), rtol=1e-5)


def normalized_linear_ref(layer, x, eps):
    """Reference output of a NormalizedLinear in training mode."""
    name = layer.norm_name
    if name == "weight":
        lin = layer.linear
        return wn_ref(x, lin.v[...], lin.g[...], lin.bias[...], eps)
    a = f64(x) @ f64(layer.linear.kernel[...])
    if name == "none":
        return a + f64(layer.linear.bias[...])
    g, b = layer.norm.scale[...], layer.norm.bias[...]
    if name == "layer":
        return ln_ref(a, g, b, eps)
    if name == "rms":
        return rms_ref(a, g, b, eps)
    mu, var = bn_stats_ref(a)
    return bn_apply_ref(a, mu, var, g, b, eps)


def randomize_normalized_linear(layer, seed):
    rng = np.random.default_rng(seed)
    if layer.norm_name == "weight":
        lin = layer.linear
        lin.v[...] = jnp.asarray(rng.normal(0, 2.0, lin.v[...].shape), jnp.float32)
        lin.g[...] = jnp.asarray(rng.uniform(0.5, 2.0, lin.g[...].shape), jnp.float32)
        lin.bias[...] = jnp.asarray(rng.normal(0, 1, lin.bias[...].shape), jnp.float32)
        return
    k = layer.linear.kernel
    k[...] = jnp.asarray(rng.normal(0, 1.0, k[...].shape) / np.sqrt(k[...].shape[0]), jnp.float32)
    if layer.norm_name == "none":
        b = layer.linear.bias
        b[...] = jnp.asarray(rng.normal(0, 1, b[...].shape), jnp.float32)
    else:
        set_affine(layer.norm, seed + 1)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7)], ids=str)
@pytest.mark.parametrize("norm", NORMS)
def test_normalized_linear_matches_formula(norm, shape, dtype):
    eps = 1e-3
    kw = {} if norm == "none" else {"epsilon": eps}
    layer = NormalizedLinear(shape[-1], 6, norm=norm, rngs=nnx.Rngs(0), **kw)
    randomize_normalized_linear(layer, 11)
    x = jnp.asarray(rand(12, shape), dtype)
    y = layer(x)
    assert y.shape == shape[:-1] + (6,)
    assert y.dtype == dtype, f"{norm}: {dtype.__name__} in, {y.dtype} out"
    assert_close(y, normalized_linear_ref(layer, x, eps), dtype, scale=2.0)


@pytest.mark.parametrize("norm", NORMS)
def test_normalized_linear_integer_input_is_computed_in_float(norm):
    """Raw integer inputs (e.g. uint8 pixels) must not truncate the weights to integers."""
    kw = {} if norm == "none" else {"epsilon": 1e-3}
    layer = NormalizedLinear(5, 6, norm=norm, rngs=nnx.Rngs(0), **kw)
    randomize_normalized_linear(layer, 11)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (4, 5)), jnp.uint8)
    y = layer(x)
    assert y.dtype == jnp.float32
    assert_close(y, normalized_linear_ref(layer, x, 1e-3), jnp.float32, scale=10.0)


@pytest.mark.parametrize("norm", NORMS)
def test_normalized_linear_structure(norm):
    layer = NormalizedLinear(5, 6, norm=norm, rngs=nnx.Rngs(0), epsilon=1e-3)
    params = nnx.state(layer, nnx.Param)
    n_params = sum(p.size for p in jax.tree.leaves(params))
    # none: W + b; layer/batch/rms: W + gain + bias; weight: v + g + b.
    assert n_params == {"none": 36, "weight": 42}.get(norm, 42)
    if norm not in ("none", "weight"):
        assert layer.linear.bias is None  # the normalizer's bias replaces the linear one
        assert layer.norm.epsilon == 1e-3  # norm_kwargs reach the normalizer
    if norm == "batch":
        assert len(jax.tree.leaves(nnx.state(layer, nnx.BatchStat))) == 2


# ------------------------------------------------------------------------------------------------
# 2. Agreement with flax.nnx's built-ins
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7)], ids=str)
def test_layer_norm_equals_flax(shape):
    n = shape[-1]
    ours = LayerNorm(n, epsilon=1e-4, rngs=nnx.Rngs(0))
    theirs = nnx.LayerNorm(n, epsilon=1e-4, use_fast_variance=False, rngs=nnx.Rngs(0))
    g, b = set_affine(ours, 1)
    theirs.scale[...], theirs.bias[...] = g, b
    x = jnp.asarray(rand(2, shape, 3.0, 2.0))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 5), (2, 4, 7)], ids=str)
def test_rms_norm_equals_flax(shape):
    n = shape[-1]
    ours = RMSNorm(n, epsilon=1e-4, rngs=nnx.Rngs(0))
    theirs = nnx.RMSNorm(n, epsilon=1e-4, rngs=nnx.Rngs(0))
    g, _ = set_affine(ours, 1)
    theirs.scale[...] = g
    x = jnp.asarray(rand(2, shape, 1.0, 2.0))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 5), (2, 4, 7)], ids=str)
def test_batch_norm_equals_flax(shape):
    n = shape[-1]
    ours = BatchNorm(n, momentum=0.7, epsilon=1e-4, rngs=nnx.Rngs(0))
    theirs = nnx.BatchNorm(
        n,
        momentum=0.7,
        epsilon=1e-4,
        use_running_average=False,
        use_fast_variance=False,
        rngs=nnx.Rngs(0),
    )
    g, b = set_affine(ours, 1)
    theirs.scale[...], theirs.bias[...] = g, b
    for step in range(3):
        x = jnp.asarray(rand(10 + step, shape, 2.0, 3.0))
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=2e-6)
        np.testing.assert_allclose(ours.mean[...], theirs.mean[...], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours.var[...], theirs.var[...], rtol=1e-6, atol=1e-6)
    ours.eval()
    theirs.eval()
    x = jnp.asarray(rand(20, shape, 2.0, 3.0))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6, atol=2e-6)


# ------------------------------------------------------------------------------------------------
# 2b. Several axes: Flax's reduction_axes and feature_axes
# ------------------------------------------------------------------------------------------------

# (input shape, reduction_axes, feature_axes): the default, per head of (batch, seq, heads,
# head_dim), channels and space of (batch, H, W, C), and axes that are not trailing.
AXES = {
    "default": ((3, 5), -1, -1),
    "per_head": ((2, 3, 4, 8), -1, (-2, -1)),
    "channels_and_space": ((2, 5, 6, 3), (1, 2, 3), -1),
    "heads_and_dim": ((2, 3, 4, 8), (-2, -1), (-2, -1)),
    "space_only": ((2, 5, 6, 3), (1, 2), -1),  # not trailing: the unfused path
    "middle_feature": ((3, 4, 5), -1, 1),  # parameters broadcast over the last axis
    "mixed_signs": ((2, 3, 4, 8), (2, -1), (3, -2)),
}


def flax_pair(cls, axes, layout, **kwargs):
    """Ours and Flax's ``cls`` over ``axes``, with the same random gain (and bias) in both.

    ``layout='flat'`` gives ours Flax's ``(prod(feature sizes),)`` parameters, ``'shaped'`` the
    feature sizes as the parameters' shape.
    """
    shape, reduction_axes, feature_axes = axes
    features = sorted({a % len(shape) for a in np.atleast_1d(feature_axes)})
    sizes = tuple(shape[a] for a in features)
    n = int(np.prod(sizes))
    flax_cls = {LayerNorm: nnx.LayerNorm, RMSNorm: nnx.RMSNorm}[cls]
    flax_kwargs = dict(kwargs)
    ours_kwargs = {k: v for k, v in kwargs.items() if k != "use_fast_variance"}
    if cls is LayerNorm:
        ours_kwargs["one_pass_variance"] = kwargs.get("use_fast_variance", False)
    else:
        ours_kwargs["use_bias"] = False  # Flax's RMSNorm has no bias
        flax_kwargs.pop("use_fast_variance", None)
    common = dict(reduction_axes=reduction_axes, feature_axes=feature_axes, rngs=nnx.Rngs(0))
    theirs = flax_cls(n, epsilon=1e-4, **common, **flax_kwargs)
    ours = cls(n if layout == "flat" else sizes, epsilon=1e-4, **common, **ours_kwargs)
    rng = np.random.default_rng(7)
    names = ["scale"] + (["bias"] if cls is LayerNorm else [])
    for name in names:
        value = jnp.asarray(rng.uniform(0.5, 2.0, n) * rng.choice([-1.0, 1.0], n), jnp.float32)
        getattr(theirs, name)[...] = value
        getattr(ours, name)[...] = value.reshape(getattr(ours, name)[...].shape)
    return ours, theirs, names


def value_and_grads(model, x, w):
    """``sum(model(x) * w)``'s value, gradient w.r.t. ``x`` and w.r.t. each parameter (flat)."""
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(params, x):
        return jnp.sum(nnx.merge(graphdef, params)(x) * w)

    y = model(x)
    grad_params, grad_x = jax.grad(loss, argnums=(0, 1))(params, x)
    return y, grad_x, {k: v[...].reshape(-1) for k, v in grad_params.items()}


@pytest.mark.parametrize("layout", ["flat", "shaped"])
@pytest.mark.parametrize("variance", ["two_pass", "one_pass"])
@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
def test_layer_norm_over_axes_equals_flax(axes, variance, layout):
    ours, theirs, names = flax_pair(
        LayerNorm, axes, layout, use_fast_variance=variance == "one_pass"
    )
    x = jnp.asarray(rand(2, axes[0], 3.0, 2.0))
    w = jnp.asarray(rand(3, axes[0]))
    y, gx, gp = value_and_grads(ours, x, w)
    y_ref, gx_ref, gp_ref = value_and_grads(theirs, x, w)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)
    assert set(gp) == set(gp_ref) == set(names)
    for name in names:
        np.testing.assert_allclose(gp[name], gp_ref[name], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layout", ["flat", "shaped"])
@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
def test_rms_norm_over_axes_equals_flax(axes, layout):
    ours, theirs, names = flax_pair(RMSNorm, axes, layout)
    x = jnp.asarray(rand(2, axes[0], 1.0, 2.0))
    w = jnp.asarray(rand(3, axes[0]))
    y, gx, gp = value_and_grads(ours, x, w)
    y_ref, gx_ref, gp_ref = value_and_grads(theirs, x, w)
    assert y.shape == x.shape and y.dtype == x.dtype
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-4, atol=1e-5)
    assert set(gp) == set(gp_ref) == {"scale"}
    np.testing.assert_allclose(gp["scale"], gp_ref["scale"], rtol=1e-5, atol=1e-4)


def axes_ref(x, g, b, eps, reduction_axes, feature_axes, *, center=True, outside=False):
    """float64 LN (or RMS, ``center=False``) over ``reduction_axes`` with ``g``, ``b`` of the
    input's feature-axis sizes, broadcast over the other axes."""
    x = f64(x)
    axes = tuple(np.atleast_1d(reduction_axes))
    mu = x.mean(axes, keepdims=True) if center else 0.0
    var = ((x - mu) ** 2).mean(axes, keepdims=True)
    y = (x - mu) / (np.sqrt(var) + eps) if outside else (x - mu) / np.sqrt(var + eps)
    shape = [1] * x.ndim
    for a in np.atleast_1d(feature_axes):
        shape[a] = x.shape[a]
    y = y * f64(g).reshape(shape)
    return y if b is None else y + f64(b).reshape(shape)


def random_affine(module, seed):
    rng = np.random.default_rng(seed)
    for name in ("scale", "bias"):
        p = getattr(module, name)
        if p is not None:
            p[...] = jnp.asarray(rng.uniform(0.5, 2.0, p[...].shape), jnp.float32)
    return module.scale[...], (None if module.bias is None else module.bias[...])


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize(
    "form", ["default", "eps_outside_sqrt", "one_pass"], ids=["default", "outside", "onepass"]
)
@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
def test_layer_norm_over_axes_matches_formula(axes, form, dtype):
    """Every form over every axes, against float64 NumPy; the output keeps the input's dtype."""
    shape, reduction_axes, feature_axes = axes
    sizes = tuple(shape[a] for a in sorted({a % len(shape) for a in np.atleast_1d(feature_axes)}))
    eps = 1e-3
    ln = LayerNorm(
        sizes,
        reduction_axes=reduction_axes,
        feature_axes=feature_axes,
        epsilon=eps,
        epsilon_outside_sqrt=form == "eps_outside_sqrt",
        one_pass_variance=form == "one_pass",
        rngs=nnx.Rngs(0),
    )
    g, b = random_affine(ln, 1)
    x = jnp.asarray(rand(2, shape, 0.5, 2.0), dtype)
    y = ln(x)
    assert y.dtype == dtype and y.shape == shape
    expected = axes_ref(
        x, g, b, eps, reduction_axes, feature_axes, outside=form == "eps_outside_sqrt"
    )
    assert_close(y, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DT_IDS)
@pytest.mark.parametrize("axes", list(AXES.values()), ids=list(AXES))
def test_rms_norm_over_axes_with_bias_matches_formula(axes, dtype):
    shape, reduction_axes, feature_axes = axes
    sizes = tuple(shape[a] for a in sorted({a % len(shape) for a in np.atleast_1d(feature_axes)}))
    rms = RMSNorm(
        sizes,
        reduction_axes=reduction_axes,
        feature_axes=feature_axes,
        epsilon=1e-3,
        use_bias=True,
        rngs=nnx.Rngs(0),
    )
    g, b = random_affine(rms, 1)
    x = jnp.asarray(rand(2, shape, 0.5, 2.0), dtype)
    y = rms(x)
    assert y.dtype == dtype and y.shape == shape
    assert_close(y, axes_ref(x, g, b, 1e-3, reduction_axes, feature_axes, center=False), dtype)


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_parameter_trees_over_axes_are_flax_s(cls):
    """An int ``num_features`` gives Flax's parameter tree: Flax's state loads into ours."""
    shape, reduction_axes, feature_axes = AXES["per_head"]
    kwargs = dict(reduction_axes=reduction_axes, feature_axes=feature_axes, epsilon=1e-4)
    flax_cls = {LayerNorm: nnx.LayerNorm, RMSNorm: nnx.RMSNorm}[cls]
    theirs = flax_cls(32, **kwargs, use_fast_variance=False, rngs=nnx.Rngs(0))
    ours = cls(32, **kwargs, rngs=nnx.Rngs(0))
    shapes = [
        jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(m, nnx.Param))) for m in (ours, theirs)
    ]
    assert shapes[0] == shapes[1]
    for seed, name in enumerate(shapes[1]):
        getattr(theirs, name)[...] = jnp.asarray(rand(seed, (32,), 1.0, 0.5))
    nnx.update(ours, nnx.state(theirs, nnx.Param))
    x = jnp.asarray(rand(6, shape, 1.0, 2.0))
    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-5, atol=1e-5)
    assert cls((4, 8), **kwargs, rngs=nnx.Rngs(0)).scale[...].shape == (4, 8)


def test_default_path_is_unchanged():
    """The default (-1, -1) LayerNorm is the fused standardization times gain plus bias, bit for
    bit, and RMSNorm its former formula; several trailing axes also take the fused path."""
    x = jnp.asarray(rand(0, (4, 3, 16), 3.0, 2.0), jnp.bfloat16)
    ln = LayerNorm(16, epsilon=1e-4, rngs=nnx.Rngs(0))
    g, b = set_affine(ln, 1)
    before = (standardize_segments(x, (16,), epsilon=1e-4) * g + b).astype(x.dtype)
    np.testing.assert_array_equal(f64(ln(x)), f64(before))
    assert "custom_jvp_call" in str(jax.make_jaxpr(ln)(x))
    rms = RMSNorm(16, epsilon=1e-4, rngs=nnx.Rngs(0))
    g, _ = set_affine(rms, 2)
    xf = x.astype(jnp.float32)
    before = (xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + 1e-4) * g).astype(x.dtype)
    np.testing.assert_array_equal(f64(rms(x)), f64(before))
    fused = LayerNorm(16, reduction_axes=(-2, -1), rngs=nnx.Rngs(0))
    assert "custom_jvp_call" in str(jax.make_jaxpr(fused)(x))
    unfused = LayerNorm(16, reduction_axes=(0, 1), rngs=nnx.Rngs(0))
    assert "custom_jvp_call" not in str(jax.make_jaxpr(unfused)(x))


def test_axes_under_jit():
    shape, reduction_axes, feature_axes = AXES["per_head"]
    ln = LayerNorm(
        (4, 8), reduction_axes=reduction_axes, feature_axes=feature_axes, rngs=nnx.Rngs(0)
    )
    random_affine(ln, 0)
    x = jnp.asarray(rand(1, shape))
    np.testing.assert_allclose(nnx.jit(lambda m, x: m(x))(ln, x), ln(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
@pytest.mark.parametrize(
    "kwargs, shape, match",
    [
        (dict(num_features=4, reduction_axes=2), (3, 4), r"reduction_axes=\(2,\) has \[2\] out"),
        (dict(num_features=4, feature_axes=-3), (3, 4), r"feature_axes=\(-3,\) has \[-3\] out"),
        (dict(num_features=4, reduction_axes=(1, -1)), (3, 4), "names the same axis twice"),
        (dict(num_features=8, feature_axes=(-2, -1)), (2, 4, 8), r"=32 .* or num_features=\(4, 8"),
        (dict(num_features=(8, 4), feature_axes=(-2, -1)), (2, 4, 8), "does not match"),
        (dict(num_features=5), (3, 4), r"num_features=5 does not match .* sizes \(4,\)"),
    ],
    ids=["reduction_range", "feature_range", "repeated", "flat_size", "shape_order", "size"],
)
def test_bad_axes_raise_at_call(cls, kwargs, shape, match):
    module = cls(**kwargs, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=match):
        module(jnp.ones(shape))


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_features=(4, 8)), "one size per feature axis"),
        (dict(num_features=8, reduction_axes=()), "at least one axis"),
        (dict(num_features=8, reduction_axes=1.5), "reduction_axes must be an int"),
        (dict(num_features=8, feature_axes="last"), "feature_axes must be an int"),
        (dict(num_features=0), "must be positive"),
        (dict(num_features=True), "num_features must be an int"),
    ],
    ids=["shape_length", "empty", "float_axis", "str_axis", "zero", "bool"],
)
def test_bad_arguments_raise_at_construction(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs, rngs=nnx.Rngs(0))


# ------------------------------------------------------------------------------------------------
# 3. Table 1 of the paper
# ------------------------------------------------------------------------------------------------

TRANSFORMS = (
    "weight_matrix_rescaling",
    "weight_matrix_recentering",
    "weight_vector_rescaling",
    "dataset_rescaling",
    "dataset_recentering",
    "single_case_rescaling",
)
TABLE_1 = {  # True: the paper says "invariant"; False: "no".
    "batch": dict(zip(TRANSFORMS, [True, False, True, True, True, False], strict=True)),
    "weight": dict(zip(TRANSFORMS, [True, False, True, False, False, False], strict=True)),
    "layer": dict(zip(TRANSFORMS, [True, True, False, True, False, True], strict=True)),
}
T_IN, T_OUT, T_BATCH, T_DRAWS = 6, 8, 16, 20
T_UNIT, T_CASE = 2, 3  # the unit whose weights / the example that gets re-scaled


def table_layer(method):
    return NormalizedLinear(T_IN, T_OUT, norm=method, rngs=nnx.Rngs(0), epsilon=1e-10)


@functools.cache
def table_forward(method):
    """jit(vmap) over draws: (state, x) -> training-mode output of the layer."""
    graphdef = nnx.graphdef(table_layer(method))
    return jax.jit(jax.vmap(lambda state, x: nnx.merge(graphdef, state)(x)))


def table_state(method, w, g, b):
    """The layer's state with a leading axis of draws: weights ``w``, gain ``g``, bias ``b``."""
    state = nnx.state(table_layer(method))
    pure = nnx.to_pure_dict(state)
    pure = jax.tree.map(lambda a: np.broadcast_to(a, (T_DRAWS,) + a.shape), pure)
    if method == "weight":
        pure["linear"]["v"], pure["linear"]["g"], pure["linear"]["bias"] = w, g, b
    else:
        pure["linear"]["kernel"], pure["norm"]["scale"], pure["norm"]["bias"] = w, g, b
    pure = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), pure)
    nnx.replace_by_pure_dict(state, pure)
    return state


def table_draws(seed):
    rng = np.random.default_rng(seed)
    d_shape = (T_DRAWS,)
    w = rng.normal(0, 1 / np.sqrt(T_IN), (T_DRAWS, T_IN, T_OUT))
    x = rng.normal(0, 1, (T_DRAWS, T_BATCH, T_IN))
    g = rng.uniform(0.5, 2.0, (T_DRAWS, T_OUT))
    b = rng.normal(0, 1, (T_DRAWS, T_OUT))
    # d in [0.2, 5], kept away from 1 so that "no" cells change visibly.
    d = np.where(
        rng.random(d_shape) < 0.5, rng.uniform(0.2, 0.67, d_shape), rng.uniform(1.5, 5, d_shape)
    )
    c = rng.normal(0, 1, (T_DRAWS, T_IN))
    return w, x, g, b, d, c


def apply_transform(name, w, x, d, c):
    w, x = w.copy(), x.copy()
    if name == "weight_matrix_rescaling":  # W' = d W
        w *= d[:, None, None]
    elif name == "weight_matrix_recentering":  # W' = W + 1 c^T; kernel is (in, out)
        w += c[:, :, None]
    elif name == "weight_vector_rescaling":  # one unit's incoming weights
        w[:, :, T_UNIT] *= d[:, None]
    elif name == "dataset_rescaling":  # x' = d x for every example
        x *= d[:, None, None]
    elif name == "dataset_recentering":  # x' = x + c, same c for all examples
        x += c[:, None, :]
    elif name == "single_case_rescaling":  # x_k' = d x_k
        x[:, T_CASE] *= d[:, None]
    else:
        raise AssertionError(name)
    return w, x


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("method", list(TABLE_1))
def test_table_1(method, transform):
    invariant = TABLE_1[method][transform]
    forward = table_forward(method)
    w, x, g, b, d, c = table_draws(100 * list(TABLE_1).index(method) + TRANSFORMS.index(transform))
    w2, x2 = apply_transform(transform, w, x, d, c)
    y = forward(table_state(method, w, g, b), jnp.asarray(x, jnp.float32))
    y2 = forward(table_state(method, w2, g, b), jnp.asarray(x2, jnp.float32))
    diff = np.asarray(jnp.max(jnp.abs(y2 - y), axis=(1, 2)))  # per draw
    if invariant:
        assert diff.max() < 1e-4, f"{method} should be invariant to {transform}: {diff}"
    else:
        assert diff.min() > 5e-2, f"{method} should change under {transform}: {diff}"


def test_table_1_is_complete():
    assert sum(len(row) for row in TABLE_1.values()) == 18


# ------------------------------------------------------------------------------------------------
# 4. Batch-size independence of LN; convergence of BN's running averages
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("norm", ["layer_norm", "normalized_linear_layer", "normalized_linear_rms"])
def test_example_alone_equals_example_in_batch(norm, mode):
    if norm == "layer_norm":
        module = LayerNorm(7, rngs=nnx.Rngs(0))
        set_affine(module, 1)
    else:
        module = NormalizedLinear(5, 7, norm=norm.rsplit("_", 1)[1], rngs=nnx.Rngs(0))
        randomize_normalized_linear(module, 1)
    getattr(module, mode)()
    x = jnp.asarray(rand(2, (9, 7 if norm == "layer_norm" else 5), 1.0, 2.0))
    batch = module(x)
    for i in (0, 4, 8):
        np.testing.assert_allclose(module(x[i : i + 1]), batch[i : i + 1], rtol=1e-6, atol=1e-6)
    # Another batch around the same example does not change its output either.
    other = jnp.concatenate([x[4:5], 10 * x[:3] + 5])
    np.testing.assert_allclose(module(other)[0], batch[4], rtol=1e-6, atol=1e-6)


def test_batch_norm_in_training_depends_on_batch():
    """Control for the test above: the same check catches a batch-dependent layer."""
    module = NormalizedLinear(5, 7, norm="batch", rngs=nnx.Rngs(0))
    x = jnp.asarray(rand(2, (9, 5), 1.0, 2.0))
    other = jnp.concatenate([x[4:5], 10 * x[:3] + 5])
    assert float(jnp.max(jnp.abs(module(other)[0] - module(x)[4]))) > 1e-2


def test_batch_norm_running_averages_converge():
    mean = np.array([3.0, -5.0, 10.0, 0.5], np.float32)
    std = np.array([0.5, 2.0, 4.0, 1.0], np.float32)
    bn = BatchNorm(4, momentum=0.95, rngs=nnx.Rngs(0))

    @nnx.jit
    def step(bn, x):
        bn(x)

    rng = np.random.default_rng(0)
    for _ in range(300):
        step(bn, jnp.asarray(rng.normal(mean, std, (64, 4)), jnp.float32))
    assert np.all(np.abs(f64(bn.mean[...]) - mean) < 0.15 * std), (bn.mean[...], mean)
    np.testing.assert_allclose(bn.var[...], std**2, rtol=0.15)


# ------------------------------------------------------------------------------------------------
# 5. WeightNormLinear: init, data-dependent init, gradients
# ------------------------------------------------------------------------------------------------


def test_weight_norm_linear_is_plain_linear_at_init():
    layer = WeightNormLinear(5, 4, rngs=nnx.Rngs(3))
    x = jnp.asarray(rand(0, (6, 5)))
    np.testing.assert_allclose(layer(x), x @ layer.v[...] + layer.bias[...], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.g[...], jnp.linalg.norm(layer.v[...], axis=0), rtol=1e-6)


def test_weight_norm_data_init_standardizes_the_batch():
    layer = WeightNormLinear(5, 4, rngs=nnx.Rngs(3))
    x = jnp.asarray(rand(0, (64, 5), 2.0, 3.0))
    v_before = layer.v[...]
    y = layer.data_init(x)
    np.testing.assert_array_equal(layer.v[...], v_before)  # direction untouched
    np.testing.assert_allclose(y, layer(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(jnp.mean(y, 0), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(y, 0), 1.0, rtol=1e-4)
    # Before the data init this batch was far from standardized.
    plain = x @ v_before
    assert float(jnp.max(jnp.abs(jnp.mean(plain, 0)))) > 0.5


def test_weight_norm_gradients_reach_g_and_v_and_v_stays_raw():
    layer = WeightNormLinear(5, 4, rngs=nnx.Rngs(3))
    layer.v[...] = 3.0 * layer.v[...]  # column norms far from 1
    x = jnp.asarray(rand(0, (16, 5)))
    target = jnp.asarray(rand(1, (16, 4)))

    def loss_fn(model):
        return jnp.mean((model(x) - target) ** 2)

    loss0, grads = nnx.value_and_grad(loss_fn)(layer)
    assert float(jnp.max(jnp.abs(grads["g"][...]))) > 1e-4
    assert float(jnp.max(jnp.abs(grads["v"][...]))) > 1e-4
    # d loss / d v is orthogonal to v (only the direction of v matters).
    np.testing.assert_allclose(jnp.sum(grads["v"][...] * layer.v[...], axis=0), 0.0, atol=1e-5)

    v_old = np.array(layer.v[...])
    params = nnx.state(layer, nnx.Param)
    tx = optax.sgd(0.1)
    updates, _ = tx.update(grads, tx.init(params), params)
    new_params = optax.apply_updates(params, updates)
    nnx.update(layer, new_params)
    np.testing.assert_allclose(
        layer.v[...], v_old - 0.1 * np.asarray(grads["v"][...]), rtol=1e-6, atol=1e-7
    )
    norms = jnp.linalg.norm(layer.v[...], axis=0)
    assert float(jnp.min(jnp.abs(norms - 1.0))) > 0.5  # still the raw, unnormalized v
    assert float(loss_fn(layer)) < float(loss0)


# ------------------------------------------------------------------------------------------------
# 6. Numerics
# ------------------------------------------------------------------------------------------------


def ln_rel_error(one_pass):
    x = jnp.asarray(rand(0, (8, 256), 1e4, 1.0))
    y = LayerNorm(256, one_pass_variance=one_pass, rngs=nnx.Rngs(0))(x)
    ref = ln_ref(x, 1.0, 0.0, 1e-5)
    return float(np.max(np.abs(f64(y) - ref)) / np.max(np.abs(ref)))


def test_two_pass_variance_is_precise_for_large_mean():
    assert ln_rel_error(one_pass=False) < 1e-3


def test_one_pass_variance_loses_precision_for_large_mean():
    assert ln_rel_error(one_pass=True) > 1e-3


def test_moments_default_is_two_pass():
    x = jnp.asarray(rand(0, (4, 128), 1e4, 1.0))
    mu, var = moments(x, -1)
    _, ref_var = bn_stats_ref(f64(x).T)
    np.testing.assert_allclose(f64(var).ravel(), ref_var, rtol=1e-3)
    assert mu.dtype == var.dtype == jnp.float32


@pytest.mark.parametrize("spread", [0.0, 0.5, 4.0])
def test_float16_large_values_stay_finite(spread):
    rng = np.random.default_rng(0)
    x = jnp.asarray(1000 + spread * rng.integers(-2, 3, (4, 16)), jnp.float16)
    for m in (
        LayerNorm(16, rngs=nnx.Rngs(0)),
        LayerNorm(16, epsilon_outside_sqrt=True, rngs=nnx.Rngs(0)),
        RMSNorm(16, rngs=nnx.Rngs(0)),
        BatchNorm(16, rngs=nnx.Rngs(0)),
        WeightNormLinear(16, 8, rngs=nnx.Rngs(0)),
    ):
        y = m(x)
        assert y.dtype == jnp.float16
        assert bool(jnp.all(jnp.isfinite(y))), type(m).__name__
    y = LayerNorm(16, rngs=nnx.Rngs(0))(x)
    np.testing.assert_allclose(f64(y), ln_ref(x, 1.0, 0.0, 1e-5), rtol=3e-3, atol=3e-3)


# ------------------------------------------------------------------------------------------------
# 7. Reuse from Linen
# ------------------------------------------------------------------------------------------------


class _LinenNet(linen.Module):
    norm: str

    @linen.compact
    def __call__(self, x):
        h = nnx.bridge.ToLinen(NormalizedLinear, args=(4, 8), kwargs=FrozenDict(norm=self.norm))(x)
        return linen.Dense(1)(jax.nn.relu(h))


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_usable_from_linen_via_to_linen(norm):
    x = jnp.asarray(rand(0, (16, 4)))
    target = jnp.sum(x, -1, keepdims=True)
    net = _LinenNet(norm)
    variables = net.init(jax.random.key(0), x)
    params = variables["params"]
    inner = params["ToLinen_0"]
    assert inner["linear"]["kernel"].shape == (4, 8)
    assert inner["norm"]["scale"].shape == (8,)
    mutable = ["batch_stats"] if norm == "batch" else []
    if norm == "batch":
        assert set(variables["batch_stats"]["ToLinen_0"]["norm"]) == {"mean", "var"}

    def loss_fn(params, variables):
        out, updates = net.apply({**variables, "params": params}, x, mutable=mutable)
        return jnp.mean((out - target) ** 2), updates

    tx = optax.sgd(0.05)
    (loss0, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, variables)
    assert float(jnp.max(jnp.abs(grads["ToLinen_0"]["linear"]["kernel"]))) > 0
    new_params = optax.apply_updates(params, tx.update(grads, tx.init(params), params)[0])
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), params, new_params)
    assert changed["ToLinen_0"]["linear"]["kernel"] and changed["ToLinen_0"]["norm"]["scale"]
    loss1, _ = loss_fn(new_params, variables)
    assert float(loss1) < float(loss0)
    if norm == "batch":
        stats = updates["batch_stats"]["ToLinen_0"]["norm"]
        assert not np.allclose(stats["mean"], 0.0)  # the running mean moved


# ------------------------------------------------------------------------------------------------
# 8. Unknown names
# ------------------------------------------------------------------------------------------------


def test_unknown_norm_lists_valid_names():
    assert set(NORMS) == {"none", "layer", "batch", "weight", "rms"}
    with pytest.raises(ValueError, match="Unknown normalization") as info:
        NormalizedLinear(3, 4, norm="group", rngs=nnx.Rngs(0))
    for name in NORMS:
        assert repr(name) in str(info.value)


def test_make_norm_builds_and_rejects():
    for name, cls in [("layer", LayerNorm), ("batch", BatchNorm), ("rms", RMSNorm)]:
        assert isinstance(make_norm(name, 4, rngs=nnx.Rngs(0)), cls)
    assert make_norm("batch", 4, rngs=nnx.Rngs(0), unbiased=True).unbiased
    x = jnp.ones((2, 4))
    assert make_norm("none", 4, rngs=nnx.Rngs(0))(x) is x
    for bad in ("group", "weight"):  # weight norm is a layer, not an activation normalizer
        with pytest.raises(ValueError, match="Unknown normalization") as info:
            make_norm(bad, 4, rngs=nnx.Rngs(0))
        for name in ("none", "layer", "batch", "rms"):
            assert repr(name) in str(info.value)


# ------------------------------------------------------------------------------------------------
# 9. Batch norm across devices
# ------------------------------------------------------------------------------------------------

_SHARDED_BN = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from flax import nnx
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from lnexp.norms import BatchNorm, moments

    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map
    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, (16, 5)), jnp.float32)
    x = x * jnp.arange(1, 17, dtype=jnp.float32)[:, None]  # shards have different statistics

    for unbiased in (False, True):
        def run(axis_name):
            bn = BatchNorm(5, momentum=0.5, unbiased=unbiased, axis_name=axis_name,
                           rngs=nnx.Rngs(0))
            graphdef, state = nnx.split(bn)

            def f(state, x):
                bn = nnx.merge(graphdef, state)
                y = bn(x)
                return y, nnx.state(bn)
            return graphdef, state, f

        graphdef, state, f = run(None)
        y_ref, s_ref = jax.jit(f)(state, x)
        # Without axis_name, shard_map statistics are per shard: must differ.
        y_local = jax.jit(shard_map(f, mesh=mesh, in_specs=(P(), P("data")),
                                    out_specs=(P("data"), P("data"))))(state, x)[0]
        assert float(jnp.max(jnp.abs(y_local - y_ref))) > 1e-2
        graphdef, state, f = run("data")
        y_sm, s_sm = jax.jit(shard_map(f, mesh=mesh, in_specs=(P(), P("data")),
                                       out_specs=(P("data"), P())))(state, x)
        np.testing.assert_allclose(y_sm, y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s_sm["mean"][...], s_ref["mean"][...], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(s_sm["var"][...], s_ref["var"][...], rtol=1e-5, atol=1e-5)

        # Plain jit over a batch-sharded array: the statistics are global.
        xs = jax.device_put(x, NamedSharding(mesh, P("data")))
        assert len(xs.addressable_shards) == 4
        mu_s, var_s = jax.jit(lambda a: moments(a, 0, unbiased=unbiased))(xs)
        mu_g, var_g = moments(x, 0, unbiased=unbiased)
        np.testing.assert_allclose(mu_s, mu_g, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(var_s, var_g, rtol=1e-6, atol=1e-6)
        graphdef, state, f = run(None)
        y_j, s_j = jax.jit(f)(state, xs)
        np.testing.assert_allclose(y_j, y_ref, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(s_j["var"][...], s_ref["var"][...], rtol=1e-6, atol=1e-6)
    print("OK")
    """
)


def test_batch_norm_statistics_across_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED_BN], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stderr[-4000:]


# ------------------------------------------------------------------------------------------------
# standardize_segments: the fused layer norm of the recurrent cells
# ------------------------------------------------------------------------------------------------

SEGMENTS = [(12,), (8, 4), (3, 3, 3, 3), (6, 4, 2)]


def segments_ref(x, sizes, eps=1e-5):
    cuts = np.cumsum(sizes)[:-1]
    return np.concatenate([ln_ref(p, 1.0, 0.0, eps) for p in np.split(f64(x), cuts, -1)], -1)


@pytest.mark.parametrize("sizes", SEGMENTS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_standardize_segments_matches_per_segment_layer_norm(sizes, dtype):
    x = jnp.asarray(rand(0, (2, 3, 12), 3.0, 2.0), dtype)
    y = standardize_segments(x, sizes)
    assert y.dtype == jnp.float32 and y.shape == x.shape
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(f64(y), segments_ref(x, sizes), rtol=rtol, atol=atol)


@pytest.mark.parametrize("sizes", SEGMENTS)
def test_standardize_segments_derivatives_match_autodiff(sizes):
    """The hand-written derivative equals autodiff of the plain formula: grad, jvp, Hessian."""
    x = jnp.asarray(rand(1, (5, 12), 2.0, 1.0))
    w = jnp.asarray(rand(2, (5, 12), 1.0, 0.0))

    def plain(x):
        cuts = list(np.cumsum(sizes)[:-1])
        parts = jnp.split(x, cuts, axis=-1)
        return jnp.concatenate(
            [(p - p.mean(-1, keepdims=True)) * jax.lax.rsqrt(p.var(-1, keepdims=True) + 1e-5)
             for p in parts], axis=-1)  # fmt: skip

    def loss(f):
        return lambda x: jnp.sum(jnp.sin(f(x) * w))

    # Each derivative jitted: one compilation, not one per op of the eager trace.
    fused = functools.partial(standardize_segments, sizes=sizes)
    grads = [jax.jit(jax.grad(loss(f)))(x) for f in (fused, plain)]
    np.testing.assert_allclose(*grads, atol=2e-5)
    jvp = [jax.jit(lambda x, t, f=f: jax.jvp(f, (x,), (t,))[1])(x, w) for f in (fused, plain)]
    np.testing.assert_allclose(*jvp, atol=2e-5)
    if sizes == (8, 4):  # Second order once: compiling Hessians is slow.
        hess = [jax.jit(jax.hessian(loss(f)))(x[:1]) for f in (fused, plain)]
        np.testing.assert_allclose(*hess, atol=2e-4)


def test_standardize_segments_gradient_has_input_dtype():
    x = jnp.ones((2, 6), jnp.bfloat16).at[:, 0].set(3.0)
    g = jax.grad(lambda x: standardize_segments(x, (6,))[:, 0].sum())(x)
    assert g.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(g)))


def test_standardize_segments_rejects_sizes_that_do_not_partition():
    with pytest.raises(ValueError, match="do not partition"):
        standardize_segments(jnp.ones((2, 6)), (4, 4))


# ------------------------------------------------------------------------------------------------
# 10. The registry of methods
# ------------------------------------------------------------------------------------------------

# A value (away from the default) for every hyperparameter a registered method takes: a method
# with a new hyperparameter fails test_every_hyperparameter_reaches_the_layer until it is here.
HYPERPARAMETER_VALUES = {"epsilon": 1e-3, "momentum": 0.5, "unbiased": True}


def test_registry_is_the_paper_table():
    """The methods, their kinds and where lnexp may use them (the MLP's logits as in Sec. 6.1)."""
    assert tuple(norms.REGISTRY) == NORMS == ("none", "layer", "batch", "weight", "rms")
    assert all(name == m.name for name, m in norms.REGISTRY.items())
    assert norms.names(kind=norms.WEIGHTS) == ("weight",)
    assert norms.names(kind=norms.SUMMED_INPUTS) == ("none", "layer", "batch", "rms")
    assert norms.names(recurrent=True) == ("none", "layer", "rms")
    logits = {name: m.normalizes_logits for name, m in norms.REGISTRY.items()}
    assert logits == {"none": False, "layer": False, "batch": True, "weight": True, "rms": False}
    assert [n for n, m in norms.REGISTRY.items() if m.data_init] == ["weight"]
    assert [n for n, m in norms.REGISTRY.items() if m.linear_bias] == ["none"]


@pytest.mark.parametrize("norm", NORMS)
def test_every_hyperparameter_reaches_the_layer(norm):
    m = norms.method(norm)
    kwargs = {name: HYPERPARAMETER_VALUES[name] for name in m.hyperparameters}
    layer = NormalizedLinear(5, 6, norm=norm, rngs=nnx.Rngs(0), **kwargs)
    for name, value in kwargs.items():
        assert getattr(layer.norm, name) == value, name
    if m.kind == norms.SUMMED_INPUTS:
        normalizer = m.normalizer(6, rngs=nnx.Rngs(0), **kwargs)
        assert type(normalizer) is type(layer.norm)
        assert type(make_norm(norm, 6, rngs=nnx.Rngs(0))) is type(layer.norm)


def test_method_is_the_one_check_of_a_name():
    assert norms.method("layer") is norms.REGISTRY["layer"]
    with pytest.raises(norms.UnknownNormError) as info:
        norms.method("group")
    assert isinstance(info.value, ValueError)
    assert info.value.name == "group" and info.value.valid == NORMS
    assert str(info.value) == (
        "Unknown normalization 'group': expected one of "
        "['none', 'layer', 'batch', 'weight', 'rms']."
    )
    with pytest.raises(norms.UnknownNormError) as info:
        norms.method("batch", among=norms.names(recurrent=True), owner="GRUCell")
    assert info.value.describe("config.model.norm") == (
        "Unknown normalization 'batch' in config.model.norm for GRUCell: expected one of "
        "['none', 'layer', 'rms']."
    )


def test_a_method_added_to_the_registry_reaches_every_layer(scale_only_norm):
    """One entry (tests/conftest.py's bias-free LN) is all NormalizedLinear, make_norm and the
    MLP need: no other file names the method."""
    from lnexp.models.mlp import MLP

    layer = NormalizedLinear(5, 6, norm=scale_only_norm, rngs=nnx.Rngs(0), epsilon=1e-3)
    assert layer.linear.bias is None and layer.norm.bias is None  # g * (a - mu) / sigma
    g, _ = set_affine(layer.norm, 1)
    x = jnp.asarray(rand(2, (3, 5)))
    a = f64(x) @ f64(layer.linear.kernel[...])
    assert_close(layer(x), ln_ref(a, g, np.zeros(6), 1e-3), jnp.float32, scale=2.0)
    assert isinstance(make_norm(scale_only_norm, 6, rngs=nnx.Rngs(0)), LayerNorm)
    with pytest.raises(norms.UnknownNormError, match="'scale_only'"):
        norms.method("group")  # the valid names now list it

    model = MLP((5, 8, 3), norm=scale_only_norm, rngs=nnx.Rngs(0), epsilon=1e-3)
    assert [layer.norm_name for layer in model.layers] == [scale_only_norm, "none"]
    assert model(x).shape == (3, 3)


def test_the_mlp_takes_its_logits_default_from_the_registry(monkeypatch):
    from lnexp.models.mlp import MLP

    def last_norm(norm: str) -> str:
        return MLP((5, 8, 3), norm=norm, rngs=nnx.Rngs(0)).layers[-1].norm_name

    assert [last_norm(n) for n in NORMS] == ["none", "none", "batch", "weight", "none"]
    layer = dataclasses.replace(norms.REGISTRY["layer"], normalizes_logits=True)
    monkeypatch.setitem(norms.REGISTRY, "layer", layer)
    assert last_norm("layer") == "layer"


def test_the_layers_import_nothing_from_the_application():
    """lnexp.norms and lnexp.cells are the reusable part: no models, configs, errors, training."""
    code = (
        "import sys, lnexp.norms, lnexp.cells; "
        "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] == 'lnexp')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["lnexp", "lnexp.cells", "lnexp.norms"]


def test_layer_norm_backward_in_a_residual_stack_is_not_recomputed():
    """XLA must not fuse the residual stream's cotangent chain into every layer norm's backward
    (lnexp.norms._standardize_segments_jvp's barrier): that recomputation once made LayerNorm's
    backward in a Transformer 4x as many elementwise ops as RMSNorm's and cost 25% of a step.
    Counted in the optimized HLO, so the check does not depend on the machine's speed."""
    import re

    from lnexp.bench.norms import NORMS, ResidualStack

    def elementwise_ops(name):
        graphdef, params = nnx.split(ResidualStack(NORMS[name], 32, depth=4))
        x = jax.random.normal(jax.random.key(0), (4, 8, 32))
        loss = lambda p, x: jnp.sum(nnx.merge(graphdef, p)(x) ** 2)  # noqa: E731
        hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(params, x).compile().as_text()
        return len(re.findall(r" (?:multiply|add|subtract|negate)\(", hlo))

    # 1.7x with the barrier (the mean and the second reduction), 3.2x without it (and growing
    # faster than the depth: 4.5x at depth 8).
    assert elementwise_ops("lnexp LayerNorm") <= 2.2 * elementwise_ops("lnexp RMSNorm")
