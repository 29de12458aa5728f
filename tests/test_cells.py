"""Tests of lnexp.cells: the paper's equations in NumPy, Flax parity, scan, padding, invariances."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lnexp import norms
from lnexp.cells import GRUCell, LSTMCell, SimpleCell, scan

D, H, B, T = 3, 5, 3, 5
EPS = 1e-5
CLASSES = {"simple": SimpleCell, "lstm": LSTMCell, "gru": GRUCell}

# Every cell and option: (kind, constructor kwargs).
CONFIGS = [
    ("simple", dict(norm="layer")),
    ("simple", dict(norm="none")),
    ("simple", dict(norm="layer", activation_fn=jax.nn.relu)),
    ("lstm", dict(norm="layer")),
    ("lstm", dict(norm="none")),
    ("lstm", dict(norm="layer", ln_per_gate=True)),
    ("lstm", dict(norm="layer", carry_normalized_cell=True)),
    ("lstm", dict(norm="cell")),
    ("lstm", dict(norm="cell", carry_normalized_cell=True)),
    ("lstm", dict(norm="layer", forget_bias=1.0)),
    ("lstm", dict(norm="none", forget_bias=1.0)),
    ("gru", dict(norm="layer")),
    ("gru", dict(norm="none")),
    ("gru", dict(norm="layer", reset_after=False)),
    ("gru", dict(norm="none", reset_after=False)),
    # RMS norm in place of every LN (a registry method with per-example statistics).
    ("simple", dict(norm="rms")),
    ("lstm", dict(norm="rms")),
    ("lstm", dict(norm="rms", ln_per_gate=True)),
    ("lstm", dict(norm="rms", carry_normalized_cell=True)),
    ("gru", dict(norm="rms")),
    ("gru", dict(norm="rms", reset_after=False)),
]
LN_DEFAULTS = [("simple", {}), ("lstm", {}), ("gru", {})]


def config_id(config) -> str:
    kind, kwargs = config
    opts = [f"{k}={getattr(v, '__name__', v)}" for k, v in kwargs.items()]
    return "-".join([kind, *opts])


def make(kind: str, seed: int = 0, **kwargs):
    """A cell with random non-trivial parameters: kernels N(0, 0.5^2), gains 1 + N(0, 0.3^2)."""
    cell = CLASSES[kind](D, H, rngs=nnx.Rngs(seed), **kwargs)
    state = nnx.state(cell, nnx.Param)
    leaves, treedef = jax.tree.flatten_with_path(state)
    keys = jax.random.split(jax.random.key(seed + 100), len(leaves))
    new = []
    for (path, leaf), key in zip(leaves, keys, strict=True):
        noise = jax.random.normal(key, leaf.shape, leaf.dtype)
        name = str(path[-1])
        new.append(1.0 + 0.3 * noise if "scale" in name else 0.5 * noise)
    nnx.update(cell, jax.tree.unflatten(treedef, new))
    return cell


def data(seed: int = 1, batch: int = B, steps: int = T) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, steps, D))


def random_carry(kind: str, seed: int = 2, batch: int = B):
    keys = jax.random.split(jax.random.key(seed))
    h = 0.5 * jax.random.normal(keys[0], (batch, H))
    return (0.5 * jax.random.normal(keys[1], (batch, H)), h) if kind == "lstm" else h


def f64(x) -> np.ndarray:
    return np.asarray(x, np.float64)


def assert_trees_close(a, b, **tol) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(f64(x), f64(y), **tol)


# ------------------------------------------------------------------------------------------------
# float64 NumPy references: the paper's equations step by step
# ------------------------------------------------------------------------------------------------


def sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def ln(a, norm):
    """LN with the gain and bias of the lnexp LayerNorm module ``norm``."""
    mu = a.mean(-1, keepdims=True)
    var = ((a - mu) ** 2).mean(-1, keepdims=True)
    return (a - mu) / np.sqrt(var + EPS) * f64(norm.scale[...]) + f64(norm.bias[...])


def rms(a, norm):
    """RMS norm with the gain and bias of the lnexp RMSNorm module ``norm``: no centering."""
    ms = (a**2).mean(-1, keepdims=True)
    return a / np.sqrt(ms + EPS) * f64(norm.scale[...]) + f64(norm.bias[...])


NORMALIZERS = {"layer": ln, "rms": rms}  # The references of the methods the cells accept.


def gate_ln(a, gate_norm, per_gate, fn=ln):
    """LN (or ``fn``) over the whole stacked-gate vector, or block by block with ``per_gate``."""
    if not per_gate:
        return fn(a, gate_norm.norm)
    blocks = np.split(a, len(gate_norm.blocks), axis=-1)
    return np.concatenate([fn(x, n) for x, n in zip(blocks, gate_norm.blocks, strict=True)], -1)


# The references take the options from the test's kwargs (defaults: the paper's form), never
# from the module, so a module that ignores or mis-stores an option fails.


def simple_ref(cell, xs, h, norm="layer", activation_fn=jnp.tanh):
    f = {jnp.tanh: np.tanh, jax.nn.relu: lambda v: np.maximum(v, 0.0)}[activation_fn]
    Wx, Wh = f64(cell.dense_i.kernel[...]), f64(cell.dense_h.kernel[...])
    h, ys = f64(h), []
    for x in f64(xs).transpose(1, 0, 2):
        a = h @ Wh + x @ Wx  # eq. 4: LN of the summed inputs
        h = f(a + f64(cell.bias[...]) if norm == "none" else NORMALIZERS[norm](a, cell.norm))
        ys.append(h)
    return h, np.stack(ys, 1)


def lstm_ref(
    cell, xs, carry, norm="layer", ln_per_gate=False, carry_normalized_cell=False, forget_bias=0.0
):
    Wx, Wh, b = (f64(v[...]) for v in (cell.dense_i.kernel, cell.dense_h.kernel, cell.bias))
    (c, h), ys = map(f64, carry), []
    for x in f64(xs).transpose(1, 0, 2):
        ax, ah = x @ Wx, h @ Wh
        if norm not in ("none", "cell"):  # eq. 20
            fn = NORMALIZERS[norm]
            ax = gate_ln(ax, cell.norm_i, ln_per_gate, fn)
            ah = gate_ln(ah, cell.norm_h, ln_per_gate, fn)
        f, i, o, g = np.split(ah + ax + b, 4, axis=-1)
        c = sig(f + forget_bias) * c + sig(i) * np.tanh(g)  # eq. 21
        if norm != "none":  # norm='cell': LN on c only
            c_hat = NORMALIZERS["layer" if norm == "cell" else norm](c, cell.norm_c)
        else:
            c_hat = c
        h = sig(o) * np.tanh(c_hat)  # eq. 22
        if carry_normalized_cell:
            c = c_hat
        ys.append(h)
    return (c, h), np.stack(ys, 1)


def gru_ref(cell, xs, h, norm="layer", reset_after=True):
    Wx, Wh = f64(cell.dense_i.kernel[...]), f64(cell.dense_h.kernel[...])
    W_zr, W, U_zr, U = Wx[:, : 2 * H], Wx[:, 2 * H :], Wh[:, : 2 * H], Wh[:, 2 * H :]
    layer = norm != "none"
    n = NORMALIZERS.get(norm)
    h, ys = f64(h), []
    for x in f64(xs).transpose(1, 0, 2):
        if layer:
            gx, cx = n(x @ W_zr, cell.norm_i), n(x @ W, cell.norm_i_candidate)
        else:
            b = f64(cell.bias[...])
            gx, cx = x @ W_zr + b[: 2 * H], x @ W + b[2 * H :]
        gh = n(h @ U_zr, cell.norm_h) if layer else h @ U_zr
        z, r = np.split(sig(gx + gh), 2, axis=-1)  # eqs. 26-27
        if reset_after:
            hc = n(h @ U, cell.norm_h_candidate) if layer else h @ U
            candidate = np.tanh(cx + r * hc)
        else:
            hc = (r * h) @ U
            candidate = np.tanh(cx + (n(hc, cell.norm_h_candidate) if layer else hc))
        h = (1.0 - z) * h + z * candidate  # eq. 28
        ys.append(h)
    return h, np.stack(ys, 1)


REFERENCES = {"simple": simple_ref, "lstm": lstm_ref, "gru": gru_ref}


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_numpy_reference(config):
    kind, kwargs = config
    cell = make(kind, **kwargs)
    xs, carry0 = data(), random_carry(kind)
    carry, ys = scan(cell, xs, initial_carry=carry0)
    ref_carry, ref_ys = REFERENCES[kind](cell, xs, carry0, **kwargs)
    np.testing.assert_allclose(f64(ys), ref_ys, rtol=1e-4, atol=1e-5)
    assert_trees_close(carry, ref_carry, rtol=1e-4, atol=1e-5)
    assert float(np.abs(ref_ys).min(axis=(0, 1)).max()) > 1e-3  # outputs are not trivial


def test_options_change_the_function():
    """Every LSTM/GRU option is a different function on the same parameters."""
    xs = data()

    def out(kind, **kwargs):
        cell = make(kind, **kwargs)
        return f64(scan(cell, xs, initial_carry=random_carry(kind))[1])

    base = out("lstm")
    for kwargs in [
        dict(ln_per_gate=True),
        dict(carry_normalized_cell=True),
        dict(norm="cell"),
        dict(forget_bias=1.0),
    ]:
        assert np.abs(out("lstm", **kwargs) - base).max() > 1e-2, kwargs
    assert np.abs(out("gru", reset_after=False) - out("gru")).max() > 1e-2


# ------------------------------------------------------------------------------------------------
# norm='none' against Flax's built-in cells
# ------------------------------------------------------------------------------------------------


def randomize_flax(cell, seed):
    state = nnx.state(cell, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    new = [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    nnx.update(cell, jax.tree.unflatten(treedef, new))


def set_params(cell, **values):
    for name, value in values.items():
        obj = cell
        *parents, leaf = name.split(".")
        for p in parents:
            obj = getattr(obj, p)
        getattr(obj, leaf)[...] = value


def flax_twin(kind):
    """A random Flax cell and our ``norm='none'`` cell holding the same function."""
    rngs = nnx.Rngs(3)
    if kind == "simple":
        ref = nnx.SimpleCell(D, H, rngs=rngs)
        randomize_flax(ref, 4)
        ours = SimpleCell(D, H, norm="none", rngs=rngs)
        set_params(
            ours,
            **{
                "dense_i.kernel": ref.dense_i.kernel[...],
                "bias": ref.dense_i.bias[...],
                "dense_h.kernel": ref.dense_h.kernel[...],
            },
        )
    elif kind == "lstm":
        ref = nnx.LSTMCell(D, H, rngs=rngs)
        randomize_flax(ref, 4)
        ours = LSTMCell(D, H, norm="none", rngs=rngs)
        gates_i = [ref.if_, ref.ii, ref.io, ref.ig]  # our order f, i, o, g
        gates_h = [ref.hf, ref.hi, ref.ho, ref.hg]
        cat = lambda xs: jnp.concatenate([x[...] for x in xs], axis=-1)
        set_params(
            ours,
            **{
                "dense_i.kernel": cat([g.kernel for g in gates_i]),
                "dense_h.kernel": cat([g.kernel for g in gates_h]),
                "bias": cat([g.bias for g in gates_h]),
            },
        )
    else:
        ref = nnx.GRUCell(D, H, rngs=rngs)
        randomize_flax(ref, 4)
        ours = GRUCell(D, H, norm="none", rngs=rngs)

        def reorder(w):  # Flax [r, z, n] with h' = (1-z) n + z h  ->  ours [z, r, n], z negated
            r, z, n = jnp.split(w, 3, axis=-1)
            return jnp.concatenate([-z, r, n], axis=-1)

        set_params(
            ours,
            **{
                "dense_i.kernel": reorder(ref.dense_i.kernel[...]),
                "bias": reorder(ref.dense_i.bias[...]),
                "dense_h.kernel": reorder(ref.dense_h.kernel[...]),
            },
        )
    return ref, ours


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
def test_none_matches_flax_cell(kind):
    ref, ours = flax_twin(kind)
    xs, carry0 = data(), random_carry(kind)
    ref_carry, ref_ys = nnx.RNN(ref, return_carry=True)(xs, initial_carry=carry0)
    carry, ys = scan(ours, xs, initial_carry=carry0)
    np.testing.assert_allclose(f64(ys), f64(ref_ys), rtol=1e-5, atol=1e-5)
    assert_trees_close(carry, ref_carry, rtol=1e-5, atol=1e-5)
    one_step = ours(carry0, xs[:, 0])[1]
    np.testing.assert_allclose(f64(one_step), f64(ref(carry0, xs[:, 0])[1]), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# scan helper, nnx.RNN, padding
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", LN_DEFAULTS, ids=config_id)
def test_scan_matches_manual_steps_and_nnx_rnn(config):
    kind, kwargs = config
    cell = make(kind, **kwargs)
    xs, carry0 = data(), random_carry(kind)
    carry, ys = scan(cell, xs, initial_carry=carry0)

    manual, outs = carry0, []
    for t in range(T):
        manual, y = cell(manual, xs[:, t])
        outs.append(y)
    np.testing.assert_allclose(f64(ys), f64(jnp.stack(outs, 1)), rtol=1e-5, atol=1e-6)
    assert_trees_close(carry, manual, rtol=1e-5, atol=1e-6)

    rnn_carry, rnn_ys = nnx.RNN(cell, return_carry=True)(xs, initial_carry=carry0)
    np.testing.assert_allclose(f64(ys), f64(rnn_ys), rtol=1e-5, atol=1e-6)
    assert_trees_close(carry, rnn_carry, rtol=1e-5, atol=1e-6)

    for options in [dict(unroll=2), dict(unroll=True), dict(precompute_inputs=False)]:
        o_carry, o_ys = scan(cell, xs, initial_carry=carry0, **options)
        np.testing.assert_allclose(f64(o_ys), f64(ys), rtol=1e-5, atol=1e-6, err_msg=str(options))
        assert_trees_close(o_carry, carry, rtol=1e-5, atol=1e-6)

    tm_carry, tm_ys = scan(cell, xs.transpose(1, 0, 2), initial_carry=carry0, time_major=True)
    np.testing.assert_allclose(f64(tm_ys.transpose(1, 0, 2)), f64(ys), rtol=1e-5, atol=1e-6)
    assert_trees_close(tm_carry, carry, rtol=1e-5, atol=1e-6)

    zero_carry, _ = scan(cell, xs)  # default initial carry: zeros, as nnx.RNN's
    assert_trees_close(zero_carry, nnx.RNN(cell, return_carry=True)(xs)[0], atol=1e-6)


# Masking is the same code for every cell: one cell with an array carry, one with a tuple.
@pytest.mark.parametrize("config", LN_DEFAULTS[1:], ids=config_id)
def test_padding_changes_neither_outputs_nor_final_carry(config):
    kind, kwargs = config
    cell = make(kind, **kwargs)
    lengths = jnp.array([T, 2, 4])
    valid = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    xs = data(1)
    xs_other = jnp.where(valid, xs, 100.0 * data(7))  # different garbage in the padded tail

    carry, ys = scan(cell, xs, seq_lengths=lengths)
    carry_o, ys_o = scan(cell, xs_other, seq_lengths=lengths)
    np.testing.assert_array_equal(f64(ys), f64(ys_o))
    assert_trees_close(carry, carry_o, rtol=0, atol=0)
    carry_s, ys_s = scan(cell, xs_other, seq_lengths=lengths, precompute_inputs=False)
    np.testing.assert_allclose(f64(ys_s), f64(ys), rtol=1e-5, atol=1e-6)
    assert_trees_close(carry_s, carry, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(f64(jnp.where(valid, 0.0, ys)), 0.0)  # padded outputs zero

    rnn_carry, rnn_ys = nnx.RNN(cell, return_carry=True)(xs_other, seq_lengths=lengths)
    np.testing.assert_allclose(f64(jnp.where(valid, rnn_ys, 0.0)), f64(ys), atol=1e-6)
    assert_trees_close(rnn_carry, carry, rtol=1e-5, atol=1e-6)

    for b, n in [(1, 2), (2, 4)]:  # the padded rows, each alone and unpadded
        alone_carry, alone_ys = scan(cell, xs[b : b + 1, :n])
        np.testing.assert_allclose(f64(alone_ys[0]), f64(ys[b, :n]), rtol=1e-5, atol=1e-6)
        row = jax.tree.map(lambda x, b=b: x[b : b + 1], carry)
        assert_trees_close(alone_carry, row, rtol=1e-5, atol=1e-6)


def test_reverse_matches_nnx_rnn_on_padded_batch():
    cell = make("lstm")
    lengths = jnp.array([T, 2, 4])
    valid = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    xs = jnp.where(valid, data(1), 50.0)
    carry, ys = scan(cell, xs, seq_lengths=lengths, reverse=True)
    rnn = nnx.RNN(cell, reverse=True, keep_order=True, return_carry=True)
    rnn_carry, rnn_ys = rnn(xs, seq_lengths=lengths)
    np.testing.assert_allclose(f64(ys), f64(jnp.where(valid, rnn_ys, 0.0)), atol=1e-6)
    assert_trees_close(carry, rnn_carry, rtol=1e-5, atol=1e-6)
    # Row 1 (length 2) read backwards is x_1 then x_0.
    (_, h), _ = scan(cell, xs[1:2, 1::-1])
    np.testing.assert_allclose(f64(h[0]), f64(carry[1][1]), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Invariances (the paper's Table 1, "weight matrix re-scaling", inside the recurrence)
# ------------------------------------------------------------------------------------------------


def rescaled_outputs(cell, xs, carry0, scales):
    """Outputs of ``cell`` with ``dense_i.kernel * d_i`` and ``dense_h.kernel * d_h``, for every
    ``(d_i, d_h)`` in ``scales`` (one compiled, vmapped run)."""
    graphdef, state = nnx.split(cell)

    def run(d_i, d_h):
        def scale(path, x):
            keys = [str(getattr(k, "key", k)) for k in path]
            if "kernel" not in keys:
                return x
            return x * (d_i if "dense_i" in keys else d_h)

        scaled = jax.tree.map_with_path(scale, state)
        return scan(nnx.merge(graphdef, scaled), xs, initial_carry=carry0)[1]

    d_i, d_h = jnp.array(scales, jnp.float32).T
    return f64(jax.jit(jax.vmap(run))(d_i, d_h))


# The invariance is exact for epsilon -> 0; a tiny epsilon keeps it from blurring the check when
# a kernel is scaled down (with the default 1e-5 it is still within ~1e-3).
LN_INVARIANT = [
    ("lstm", dict(epsilon=1e-9)),
    ("lstm", dict(epsilon=1e-9, ln_per_gate=True)),
    ("lstm", dict(epsilon=1e-9, carry_normalized_cell=True)),
    ("gru", dict(epsilon=1e-9)),
    ("gru", dict(epsilon=1e-9, reset_after=False)),
    ("lstm", dict(norm="rms", epsilon=1e-9)),  # RMS norm: the same invariance, no centering
    ("gru", dict(norm="rms", epsilon=1e-9)),
]


@pytest.mark.parametrize("config", LN_INVARIANT, ids=config_id)
def test_ln_cells_invariant_to_kernel_rescaling(config):
    kind, kwargs = config
    scales = [(1.0, 1.0), (7.0, 1.0), (1.0, 7.0), (0.3, 1.0), (1.0, 0.3), (5.0, 0.2)]
    out = rescaled_outputs(make(kind, **kwargs), data(), random_carry(kind), scales)
    assert np.abs(out[0]).max() > 0.1
    for scale, o in zip(scales[1:], out[1:], strict=True):
        np.testing.assert_allclose(o, out[0], atol=2e-5, err_msg=f"(d_i, d_h) = {scale}")


def test_ln_simple_cell_invariant_to_joint_rescaling_only():
    """Eq. 4 normalizes the sum W_hh h + W_xh x: scaling both is invisible, one alone is not."""
    scales = [(1.0, 1.0), (7.0, 7.0), (0.3, 0.3), (7.0, 1.0), (1.0, 0.3)]
    cell = make("simple", epsilon=1e-9)
    out = rescaled_outputs(cell, data(), random_carry("simple"), scales)
    np.testing.assert_allclose(out[1], out[0], atol=2e-5)
    np.testing.assert_allclose(out[2], out[0], atol=2e-5)
    assert np.abs(out[3] - out[0]).max() > 1e-2
    assert np.abs(out[4] - out[0]).max() > 1e-2


@pytest.mark.parametrize(
    "config",
    [("simple", dict(norm="none")), ("lstm", dict(norm="none")), ("lstm", dict(norm="cell"))]
    + [("gru", dict(norm="none"))],
    ids=config_id,
)
def test_plain_cells_not_invariant_to_kernel_rescaling(config):
    kind, kwargs = config
    scales = [(1.0, 1.0), (3.0, 1.0), (1.0, 3.0)]
    out = rescaled_outputs(make(kind, **kwargs), data(), random_carry(kind), scales)
    for scale, o in zip(scales[1:], out[1:], strict=True):
        assert np.abs(o - out[0]).max() > 1e-2, scale


# ------------------------------------------------------------------------------------------------
# Gradients, initialization, API details
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", LN_DEFAULTS, ids=config_id)
def test_gradients_finite_over_200_steps(config):
    kind, kwargs = config
    cell = CLASSES[kind](D, H, rngs=nnx.Rngs(0), **kwargs)
    xs = 3.0 * data(steps=200)

    @nnx.jit
    def grads(cell):
        return nnx.grad(lambda c: jnp.sum(scan(c, xs)[1]))(cell)

    g = jax.tree.leaves(nnx.state(grads(cell), nnx.Param))
    assert all(bool(jnp.isfinite(x).all()) for x in g)
    assert sum(float(jnp.abs(x).sum()) for x in g) > 0


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
def test_initialization_as_papers_code(kind):
    blocks = {"simple": 1, "lstm": 4, "gru": 3}[kind]
    cell = CLASSES[kind](D, H, rngs=nnx.Rngs(0))
    Wx, Wh = f64(cell.dense_i.kernel[...]), f64(cell.dense_h.kernel[...])
    assert Wx.shape == (D, blocks * H) and Wh.shape == (H, blocks * H)
    assert np.abs(Wx).max() <= 0.1 and np.abs(Wx).max() > 0.05
    for block in np.split(Wh, blocks, axis=-1):  # each gate's recurrent matrix is orthogonal
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    params = nnx.state(cell, nnx.Param)
    for path, leaf in jax.tree.flatten_with_path(params)[0]:
        name = str(path[-1])
        if "scale" in name:
            np.testing.assert_array_equal(f64(leaf), 1.0)
        elif "bias" in name:
            np.testing.assert_array_equal(f64(leaf), 0.0)


def test_initialize_carry_and_rnn_cell_api():
    lstm, gru = LSTMCell(D, H, rngs=nnx.Rngs(0)), GRUCell(D, H, rngs=nnx.Rngs(0))
    assert isinstance(lstm, nnx.RNNCellBase) and lstm.num_feature_axes == 1
    c, h = lstm.initialize_carry((2, 4, D))
    assert c.shape == h.shape == (2, 4, H) and not bool(c.any())
    ones = gru.initialize_carry((B, D), nnx.Rngs(0), carry_init=nnx.initializers.ones)
    np.testing.assert_array_equal(f64(ones), 1.0)
    with pytest.raises(ValueError, match="rngs"):
        gru.initialize_carry((B, D), carry_init=nnx.initializers.ones)
    # Extra batch axes work in scan too.
    _, ys = scan(gru, jnp.ones((2, 2, T, D)))
    assert ys.shape == (2, 2, T, H)


@pytest.mark.parametrize(
    "kind, kwargs, match",
    [
        ("simple", dict(norm="batch"), "Unknown norm"),
        ("simple", dict(norm="cell"), "Unknown norm"),
        ("gru", dict(norm="batch"), "Unknown norm"),
        ("lstm", dict(norm="weight"), "Unknown norm"),
        ("lstm", dict(norm="none", ln_per_gate=True), "ln_per_gate"),
        ("lstm", dict(norm="cell", ln_per_gate=True), "ln_per_gate"),
        ("lstm", dict(norm="none", carry_normalized_cell=True), "carry_normalized_cell"),
    ],
)
def test_invalid_options_raise(kind, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CLASSES[kind](D, H, rngs=nnx.Rngs(0), **kwargs)


def test_cells_accept_the_recurrent_methods_of_the_registry():
    """The registry says which methods a cell takes (per-example statistics); errors list them."""
    assert SimpleCell.accepted_norms() == GRUCell.accepted_norms() == ("none", "layer", "rms")
    assert LSTMCell.accepted_norms() == ("none", "layer", "rms", "cell")
    with pytest.raises(norms.UnknownNormError) as info:
        GRUCell(D, H, norm="batch", rngs=nnx.Rngs(0))
    assert str(info.value) == (
        "Unknown normalization 'batch' for GRUCell: expected one of ['none', 'layer', 'rms']."
    )
    with pytest.raises(ValueError, match=r"\['none', 'layer', 'rms', 'cell'\]"):
        LSTMCell(D, H, norm="weight", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
def test_rms_cells_have_the_ln_parameters_and_another_function(kind):
    """RMS norm takes LN's place with the same gains and biases; only the centering differs."""
    rms_cell, ln_cell = make(kind, norm="rms"), make(kind, norm="layer")
    paths = [path for path, _ in jax.tree.flatten_with_path(nnx.state(ln_cell, nnx.Param))[0]]
    assert [p for p, _ in jax.tree.flatten_with_path(nnx.state(rms_cell, nnx.Param))[0]] == paths
    nnx.update(rms_cell, nnx.state(ln_cell, nnx.Param))
    xs, carry = data(), random_carry(kind)
    out_rms = f64(scan(rms_cell, xs, initial_carry=carry)[1])
    out_ln = f64(scan(ln_cell, xs, initial_carry=carry)[1])
    assert np.abs(out_rms - out_ln).max() > 1e-2


@pytest.mark.parametrize("kind", ["simple", "lstm", "gru"])
def test_a_method_added_to_the_registry_works_in_every_cell(scale_only_norm, kind):
    """tests/conftest.py's bias-free LN, one registry entry, is a cell option with no other
    change; with LN's biases at their initial 0 the two cells compute the same function."""
    ours = CLASSES[kind](D, H, norm=scale_only_norm, rngs=nnx.Rngs(0))
    layer = CLASSES[kind](D, H, norm="layer", rngs=nnx.Rngs(0))
    assert scale_only_norm in CLASSES[kind].accepted_norms()
    biases = [p for p, _ in jax.tree.flatten_with_path(nnx.state(ours, nnx.Param))[0]]
    assert all("norm" not in str(p) for p in biases if "bias" in str(p))  # gains only
    xs, carry = data(), random_carry(kind)
    np.testing.assert_allclose(
        f64(scan(ours, xs, initial_carry=carry)[1]),
        f64(scan(layer, xs, initial_carry=carry)[1]),
        rtol=1e-5,
        atol=1e-6,
    )
