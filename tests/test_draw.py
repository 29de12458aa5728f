"""DRAW (paper Fig. 4): the filterbank and read/write against NumPy references of Gregor et al.'s
equations, the bound's parts, binarization, LN vs none, training and resuming the :tiny config,
the pictures, the paper's curves."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config
from flax import nnx
from test_train import assert_trees_equal, read_records, restore_latest, without_timing

from lnexp import studies, training
from lnexp.data import binarized_mnist
from lnexp.errors import UserError
from lnexp.models.draw import DRAW, bernoulli_nll, filterbank, gaussian_kl, negative_bound
from lnexp.studies.draw import pictures as draw_pictures
from lnexp.studies.draw import report as draw_study
from lnexp.studies.draw import task as experiment


def small_draw(**kwargs) -> DRAW:
    settings = dict(glimpses=3, hidden_size=8, latent_size=2, norm="cell", rngs=nnx.Rngs(0))
    return DRAW(**(settings | kwargs))


def randomize(model: DRAW, seed: int = 0, scale: float = 0.3) -> DRAW:
    """Every parameter replaced by a random draw (the zero-initialized output maps included)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [scale * jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)]
    return nnx.merge(graphdef, jax.tree.unflatten(tree, leaves), rest)


# --------------------------------------------------------------------------------------------
# The filterbank (Gregor et al., eqs. 19-26) and the attention (eqs. 21-24, 27-29).


def np_filterbank(gx, gy, sigma2, delta, N, A, B):
    """Eqs. 19-20 and 25-26 as written: exp, then divide by the row's sum."""
    i = np.arange(1, N + 1)
    mu_x = gx[:, None] + (i - N / 2 - 0.5) * delta[:, None]
    mu_y = gy[:, None] + (i - N / 2 - 0.5) * delta[:, None]
    fx = np.exp(-((np.arange(1, A + 1) - mu_x[..., None]) ** 2) / (2 * sigma2[:, None, None]))
    fy = np.exp(-((np.arange(1, B + 1) - mu_y[..., None]) ** 2) / (2 * sigma2[:, None, None]))
    return fx / fx.sum(-1, keepdims=True), fy / fy.sum(-1, keepdims=True)


@pytest.mark.parametrize(("N", "A", "B"), [(2, 28, 28), (5, 28, 28), (3, 12, 7), (1, 9, 9)])
def test_filterbank_matches_the_equations(N, A, B):
    rng = np.random.default_rng(N)
    gx, gy = rng.uniform(1, A, 4), rng.uniform(1, B, 4)
    sigma2, delta = rng.uniform(0.5, 20, 4), rng.uniform(0.5, 6, 4)
    Fx, Fy = filterbank(*map(jnp.asarray, (gx, gy, sigma2, delta)), N, A, B)
    assert Fx.shape == (4, N, A) and Fy.shape == (4, N, B)
    ref_x, ref_y = np_filterbank(gx, gy, sigma2, delta, N, A, B)
    np.testing.assert_allclose(Fx, ref_x, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(Fy, ref_y, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(Fx.sum(-1), 1.0, rtol=1e-6)


def test_filterbank_limits_of_small_and_large_variance():
    one = jnp.ones(1)
    # Centres at pixel 14.5 -/+ 3 = 11.5 and 17.5 (halfway between pixels), 8 and 10 (on pixels).
    Fx, Fy = filterbank(14.5 * one, 9.0 * one, 1e-6 * one, 6.0 * one, 2, 28, 20)
    assert np.isfinite(Fx).all() and np.isfinite(Fy).all()
    np.testing.assert_allclose(Fx[0, 0, 10:12], [0.5, 0.5])  # pixels 11 and 12: a tie
    np.testing.assert_allclose(Fx[0, 0].sum(), 1.0)
    np.testing.assert_allclose(Fy[0, 0], np.eye(20)[5], atol=1e-12)  # mu = 6: pixel 6
    np.testing.assert_allclose(Fy[0, 1], np.eye(20)[11], atol=1e-12)  # mu = 12: pixel 12
    Fx, Fy = filterbank(14.5 * one, 9.0 * one, 1e12 * one, 6.0 * one, 2, 28, 20)
    np.testing.assert_allclose(Fx, np.full((1, 2, 28), 1 / 28), rtol=1e-5)
    np.testing.assert_allclose(Fy, np.full((1, 2, 20), 1 / 20), rtol=1e-5)
    # A centre far outside the image: still a distribution (its edge pixel), no NaN.
    Fx, _ = filterbank(-1e4 * one, one, one, one, 1, 28, 28)
    np.testing.assert_allclose(Fx[0, 0], np.eye(28)[0])


def attention_params(model_attention, h):
    """Eqs. 21-24 in NumPy from the attention's linear map."""
    p = model_attention.params
    gx_, gy_, log_s2, log_d_, log_g = np.split(
        np.asarray(h) @ np.asarray(p.kernel[...]) + np.asarray(p.bias[...]), 5, axis=-1
    )
    N, A, B = model_attention.N, model_attention.A, model_attention.B
    gx, gy = (A + 1) / 2 * (gx_ + 1), (B + 1) / 2 * (gy_ + 1)
    delta = (max(A, B) - 1) / (N - 1) * np.exp(log_d_)
    return gx[:, 0], gy[:, 0], np.exp(log_s2)[:, 0], delta[:, 0], np.exp(log_g)[:, 0]


def test_read_and_write_match_the_equations():
    model = randomize(small_draw(read_size=2, write_size=3, image_shape=(7, 6)), scale=0.2)
    rng = np.random.default_rng(0)
    x, x_hat = rng.uniform(size=(2, 42)), rng.normal(size=(2, 42))
    h = rng.normal(size=(2, 8))

    gx, gy, s2, delta, gamma = attention_params(model.read_attention, h)
    Fx, Fy = np_filterbank(gx, gy, s2, delta, 2, 6, 7)
    images = [x.reshape(2, 7, 6), x_hat.reshape(2, 7, 6)]
    patches = [np.einsum("bnh,bhw,bmw->bnm", Fy, im, Fx) for im in images]  # F_Y x F_X^T
    expected = gamma[:, None] * np.concatenate([p.reshape(2, -1) for p in patches], -1)
    np.testing.assert_allclose(model.read(jnp.asarray(x), jnp.asarray(x_hat), h), expected,
                               rtol=1e-4, atol=1e-6)  # fmt: skip

    gx, gy, s2, delta, gamma = attention_params(model.write_attention, h)
    Fx, Fy = np_filterbank(gx, gy, s2, delta, 3, 6, 7)
    w = h @ np.asarray(model.write_patch.kernel[...]) + np.asarray(model.write_patch.bias[...])
    canvas = np.einsum("bnh,bnm,bmw->bhw", Fy, w.reshape(2, 3, 3), Fx) / gamma[:, None, None]
    np.testing.assert_allclose(model.write(jnp.asarray(h, jnp.float32)), canvas.reshape(2, -1),
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_initial_read_grid_sees_the_digit_not_the_border():
    """At t = 1 (h_dec = 0) the read grid is centred, spans the central half of the image and
    has filters half a stride wide: a 2 x 2 read of an image that is 0 outside its central
    20 x 20 box is not 0 (with a zero bias it would read the corner pixels: 0)."""
    model = small_draw(read_size=2)
    gx, gy, s2, delta, gamma = attention_params(model.read_attention, np.zeros((1, 8)))
    np.testing.assert_allclose([gx[0], gy[0], delta[0], np.sqrt(s2[0]), gamma[0]],
                               [14.5, 14.5, 13.5, 6.75, 1.0], rtol=1e-6)  # fmt: skip
    image = np.zeros((28, 28))
    image[4:24, 4:24] = 1.0
    r = model.read(jnp.asarray(image.reshape(1, -1)), jnp.zeros((1, 784)), jnp.zeros((1, 8)))
    assert (np.asarray(r)[0, :4] > 0.5).all()


# --------------------------------------------------------------------------------------------
# The bound.


def test_kl_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    mu, log_sigma = rng.normal(size=5), rng.normal(scale=0.5, size=5)
    z = mu + np.exp(log_sigma) * rng.normal(size=(400_000, 5))
    log_q = -0.5 * (((z - mu) / np.exp(log_sigma)) ** 2) - log_sigma - 0.5 * np.log(2 * np.pi)
    log_p = -0.5 * z**2 - 0.5 * np.log(2 * np.pi)
    estimate = np.mean(np.sum(log_q - log_p, -1))
    se = np.std(np.sum(log_q - log_p, -1)) / np.sqrt(len(z))
    kl = float(gaussian_kl(jnp.asarray(mu), jnp.asarray(log_sigma)))
    assert abs(kl - estimate) < 4 * se, (kl, estimate, se)
    assert float(gaussian_kl(jnp.zeros(7), jnp.zeros(7))) == 0.0  # q = p: the constant is -1/2


def test_untrained_bound_is_784_log_2():
    """The canvas starts at 0 (every pixel 1/2) and q(z_t) equals the prior: 784 log 2 nats,
    whatever the image and the noise."""
    model = DRAW(glimpses=4, hidden_size=16, latent_size=5, norm="none", rngs=nnx.Rngs(1))
    x = (np.random.default_rng(0).uniform(size=(3, 784)) < 0.2).astype(np.float32)
    noise = jax.random.normal(jax.random.key(0), (4, 3, 5))
    bound, recon, kl = negative_bound(model, jnp.asarray(x), noise)
    np.testing.assert_allclose(bound, 784 * math.log(2), rtol=1e-6)
    np.testing.assert_allclose(kl, 0.0, atol=1e-6)


def test_bound_is_reconstruction_plus_the_glimpses_kl():
    model = randomize(small_draw(attention=False), scale=0.1)
    x = jnp.asarray((np.random.default_rng(1).uniform(size=(2, 784)) < 0.3).astype(np.float32))
    noise = jax.random.normal(jax.random.key(1), (3, 2, 2))
    canvas, kl_t = model(x, noise)
    bound, recon, kl = negative_bound(model, x, noise)
    p = 1 / (1 + np.exp(-np.asarray(canvas, np.float64)))
    nll = -np.sum(np.asarray(x) * np.log(p) + (1 - np.asarray(x)) * np.log(1 - p), -1)
    np.testing.assert_allclose(recon, nll, rtol=1e-5)
    np.testing.assert_allclose(kl, np.asarray(kl_t).sum(0), rtol=1e-6)
    np.testing.assert_allclose(bound, recon + kl, rtol=1e-6)
    assert (np.asarray(kl_t) > 0).all()
    # The returned canvases: the last is c_T.
    _, _, canvases = model(x, noise, canvases=True)
    assert canvases.shape == (3, 2, 784)
    np.testing.assert_array_equal(canvases[-1], canvas)


def test_bernoulli_nll_is_optax_op_for_op():
    """The model needs only JAX; its reconstruction term is optax's, the same computation."""
    optax = pytest.importorskip("optax")
    logits, labels = jnp.zeros((2, 5)), jnp.ones((2, 5))
    ours = jax.make_jaxpr(bernoulli_nll)(logits, labels)
    theirs = jax.make_jaxpr(optax.sigmoid_binary_cross_entropy)(logits, labels)
    assert str(ours) == str(theirs)


def test_ln_changes_only_the_cells_output_path():
    """norm='cell' vs 'none' with the same weights: the gates and the carried c_t are the same,
    h_t = s(o) tanh(LN(c_t)) instead of s(o) tanh(c_t)."""
    plain, ln = small_draw(norm="none"), small_draw(norm="cell")
    _, plain_params, _ = nnx.split(plain, nnx.Param, ...)
    _, ln_params, _ = nnx.split(ln, nnx.Param, ...)
    plain_keys = {k for k, _ in nnx.to_flat_state(plain_params)}
    extra = {k for k, _ in nnx.to_flat_state(ln_params)} - plain_keys
    assert {k[:2] for k in extra} == {("encoder", "norm_c"), ("decoder", "norm_c")}
    ln = randomize(ln)
    ln_flat = dict(nnx.to_flat_state(nnx.split(ln, nnx.Param, ...)[1]))
    for path, variable in nnx.to_flat_state(nnx.split(plain, nnx.Param, ...)[1]):
        variable[...] = ln_flat[path][...]  # The same weights, shared by both.

    rng = np.random.default_rng(0)
    carry = (jnp.asarray(rng.normal(size=(2, 8))), jnp.asarray(rng.normal(size=(2, 8))))
    z = jnp.asarray(rng.normal(size=(2, 2)))
    (c_plain, h_plain), _ = plain.decoder(carry, z)
    (c_ln, h_ln), _ = ln.decoder(carry, z)
    np.testing.assert_array_equal(c_plain, c_ln)
    gates = plain.decoder.dense_h(carry[1]) + plain.decoder.input_projection(z)
    o = jax.nn.sigmoid(jnp.split(gates, 4, -1)[2])
    np.testing.assert_allclose(h_plain, o * jnp.tanh(c_plain), rtol=1e-6)
    np.testing.assert_allclose(h_ln, o * jnp.tanh(ln.decoder.norm_c(c_ln)), rtol=1e-6)
    assert not np.allclose(h_plain, h_ln)


# --------------------------------------------------------------------------------------------
# Binarization.


def test_fixed_binarization_is_deterministic_per_seed():
    grey = np.random.default_rng(0).integers(0, 256, (50, 784)).astype(np.uint8)
    a, b = binarized_mnist.binarize_fixed(grey, 0), binarized_mnist.binarize_fixed(grey, 0)
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0, 255}
    assert (binarized_mnist.binarize_fixed(grey, 1) != a).any()
    # P(1) = grey / 255.
    ones = binarized_mnist.binarize_fixed(np.full((400, 784), 64, np.uint8), 3).mean() / 255
    assert abs(ones - 64 / 255) < 0.005


def test_dynamic_binarization_draws_from_the_key_and_keeps_binary_images():
    grey = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 784)).astype(np.uint8))
    key = jax.random.key(0)
    a = binarized_mnist.bernoulli_pixels(key, grey)
    np.testing.assert_array_equal(a, binarized_mnist.bernoulli_pixels(key, grey))
    assert not np.array_equal(a, binarized_mnist.bernoulli_pixels(jax.random.key(1), grey))
    binary = (grey > 127).astype(jnp.uint8) * 255
    np.testing.assert_array_equal(binarized_mnist.bernoulli_pixels(key, binary), binary / 255)


def test_the_loss_draws_each_step_anew_and_the_same_for_the_same_key():
    """The loop's key of a step is fold_in(key(seed), step): the same (seed, step) gives the same
    draw (so a resumed epoch is the same), the next step another."""
    model = randomize(small_draw())
    batch = {"image": jnp.full((4, 784), 100, jnp.uint8), "index": jnp.arange(4)}
    key = jax.random.key(0)
    same = [experiment.loss_fn(model, batch, jax.random.fold_in(key, 5))[0] for _ in range(2)]
    other = experiment.loss_fn(model, batch, jax.random.fold_in(key, 6))[0]
    assert same[0] == same[1]
    assert other != same[0]


def test_evaluation_noise_depends_on_the_image_index_only():
    model = small_draw()
    a = experiment.eval_noise(model, jnp.array([0, 1, 2]))
    b = experiment.eval_noise(model, jnp.array([2, 1]))
    assert a.shape == (3, 3, 2)
    np.testing.assert_array_equal(a[:, 2], b[:, 0])
    np.testing.assert_array_equal(a[:, 1], b[:, 1])


def write_amat(directory, sizes=(6, 3, 2), seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "valid", "test"), sizes, strict=True):
        arrays[split] = (rng.uniform(size=(n, 784)) < 0.3).astype(np.uint8)
        lines = [" ".join(map(str, row)) for row in arrays[split]]
        (directory / f"binarized_mnist_{split}.amat").write_text("\n".join(lines) + "\n")
    return arrays


def test_fixed_binarization_files_are_read_as_they_are(tmp_path):
    arrays = write_amat(tmp_path)
    splits, fixed = binarized_mnist.load_binarized_mnist(binarized_dir=tmp_path, mnist_dir=None)
    assert fixed
    for name, array in arrays.items():
        np.testing.assert_array_equal(splits[name]["image"], array * 255)
        np.testing.assert_array_equal(splits[name]["index"], np.arange(len(array)))
    # A training draw leaves them unchanged.
    drawn = binarized_mnist.bernoulli_pixels(
        jax.random.key(3), jnp.asarray(splits["train"]["image"])
    )
    np.testing.assert_array_equal(drawn, arrays["train"])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, ["Cannot read", "binarized_mnist_valid.amat"]),
        ("0 1 0\n", ["784 per line", "cut short"]),
        (" ".join(["2"] * 784) + "\n", ["other than 0 and 1"]),
        ("a b c\n", ["other than numbers"]),
    ],
)
def test_bad_binarization_files_are_one_clear_error(tmp_path, content, words):
    write_amat(tmp_path)
    path = tmp_path / "binarized_mnist_valid.amat"
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(UserError) as e:
        binarized_mnist.load_binarized_mnist(binarized_dir=tmp_path, mnist_dir=None)
    for word in words:
        assert word in str(e.value)
    assert "config.data.binarized_dir" in str(e.value)


def test_idx_source_is_split_50_10_10_and_binarized_once(tiny_mnist_dir):
    """The tiny IDX set (600 training images, 100 test) split as 50,000 / 10,000 of 60,000."""
    splits, fixed = binarized_mnist.load_binarized_mnist(
        binarized_dir=None, mnist_dir=tiny_mnist_dir
    )
    again, _ = binarized_mnist.load_binarized_mnist(binarized_dir=None, mnist_dir=tiny_mnist_dir)
    assert not fixed
    assert [len(splits[s]["image"]) for s in ("train", "valid", "test")] == [500, 100, 100]
    assert len(np.unique(splits["train"]["image"])) > 2  # Grey: drawn at every visit.
    for split in ("valid", "test"):
        assert set(np.unique(splits[split]["image"])) <= {0, 255}
        np.testing.assert_array_equal(splits[split]["image"], again[split]["image"])
    with pytest.raises(UserError, match="limit_train"):
        binarized_mnist.load_binarized_mnist(
            binarized_dir=None, mnist_dir=tiny_mnist_dir, limit_train=501
        )


# --------------------------------------------------------------------------------------------
# Training through the loop.


def tiny_config(mnist_dir, **overrides):
    return load_config("draw", "tiny", data__dir=str(mnist_dir), **overrides)


@pytest.fixture(scope="module")
def tiny_run(tiny_strokes_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("draw") / "run"
    training.train_and_evaluate(tiny_config(tiny_strokes_dir), workdir)
    return workdir


def test_tiny_config_bound_falls(tiny_run):
    records = read_records(tiny_run)
    assert [r["epoch"] for r in records] == [1, 2]
    first, last = records
    assert last["test_bound"] < first["test_bound"] < 784 * math.log(2)
    assert last["train_loss"] < first["train_loss"]
    assert {experiment.REPORT_METRIC, *experiment.REPORT_METRICS} <= last.keys()
    for r in records:
        for split in ("valid", "test"):
            parts = r[f"{split}_recon"] + r[f"{split}_kl"]
            assert r[f"{split}_bound"] == pytest.approx(parts, rel=1e-5)


def test_resume_is_bitwise_identical(tiny_run, tiny_strokes_dir, tmp_path):
    training.train_and_evaluate(tiny_config(tiny_strokes_dir, num_epochs=1), tmp_path)
    training.train_and_evaluate(tiny_config(tiny_strokes_dir), tmp_path)
    strip = lambda records: [  # noqa: E731
        {k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in without_timing(records)
    ]
    assert strip(read_records(tmp_path)) == strip(read_records(tiny_run))
    assert_trees_equal(restore_latest(tmp_path), restore_latest(tiny_run))


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("model__norm", "weight", ["config.model.norm", "'cell'"]),
        ("model__glimpses", 0, ["config.model.glimpses", ">= 1"]),
        ("data__binarized_dir", "/nonexistent", ["binarized_mnist_train.amat"]),
    ],
)
def test_bad_config_values_are_user_errors(tiny_mnist_dir, tmp_path, key, value, words):
    with pytest.raises(UserError) as e:
        training.train_and_evaluate(tiny_config(tiny_mnist_dir, **{key: value}), tmp_path / "r")
    for word in words:
        assert word in str(e.value)


def test_paper_curves_are_the_experiments_references():
    curves = experiment.reference_curves()
    assert set(curves) == {("none",), ("cell",), ("weight",)}
    base = curves[("none",)]
    assert base["test_bound"][-1] == pytest.approx(83.971)
    assert base["test_bound_epoch"][-1] == pytest.approx(108.41)
    config = {"experiment": "draw", "model.norm": "cell"}
    np.testing.assert_array_equal(
        studies.reference_curve(config)["test_bound"], curves[("cell",)]["test_bound"]
    )


# --------------------------------------------------------------------------------------------
# The pictures and the study report.


def test_pictures_command_writes_png_files(tiny_run, tiny_strokes_dir):
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run(
        [sys.executable, "-m", "lnexp.studies.draw.pictures", "--workdir", str(tiny_run),
         "--samples", "6", "--digits", "3"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    import matplotlib.image

    samples = matplotlib.image.imread(tiny_run / "pictures" / "samples.png")
    canvas = matplotlib.image.imread(tiny_run / "pictures" / "canvas.png")
    # 6 samples in 3 columns of 28 + 1 pixels; 3 digits x (3 glimpses + the digit).
    assert samples.shape[:2] == (2 * 29 + 1, 3 * 29 + 1)
    assert canvas.shape[:2] == (3 * 29 + 1, 4 * 29 + 1)
    first = (tiny_run / "pictures" / "samples.png").read_bytes()
    draw_pictures.write_pictures(tiny_run, samples=6, digits=3)  # The same seed: the same PNG.
    assert (tiny_run / "pictures" / "samples.png").read_bytes() == first


def test_pictures_of_another_experiment_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"experiment": "pimnist"}')
    with pytest.raises(UserError, match="not a DRAW run"):
        draw_pictures.write_pictures(tmp_path)


def write_run(root, norm, bounds, seed=0):
    """A synthetic run directory of configs/draw.py with the given test bound per epoch."""
    import json

    run = root / f"model.norm={norm}" / f"seed={seed}"
    run.mkdir(parents=True)
    config = {"experiment": "draw", "seed": seed, "model": {"norm": norm}}
    (run / "config.json").write_text(json.dumps(config))
    lines = [
        json.dumps({"epoch": e + 1, "step": 10 * (e + 1), "test_bound": b, "test_recon": b - 20,
                    "test_kl": 20.0, "valid_bound": b + 1, "wall_s": 60.0 * (e + 1)})
        for e, b in enumerate(bounds)
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_study_reads_speed_and_final_bounds(tmp_path):
    write_run(tmp_path, "none", [120, 110, 104, 100, 98, 96])
    write_run(tmp_path, "cell", [115, 104, 98, 95, 94, 93])
    write_run(tmp_path, "cell", [117, 106, 96, 97, 96, 95], seed=1)
    result = draw_study.study(tmp_path)
    assert result["horizon"] == 6
    ln = result["models"]["cell"]
    assert ln["test_bound"] == pytest.approx(94.0) and ln["test_bound_std"] == pytest.approx(
        math.sqrt(2)
    )
    assert ln["seeds"] == [0, 1] and ln["wall_s"] == pytest.approx(360.0)
    # The mean LN curve is 116, 105, 97, 96, 95, 94: at or below the baseline's final 96 at 4.
    assert result["ours"]["target"] == 96
    assert result["ours"]["epochs_to_reach"] == {"cell": 4.0, "none": 6.0}
    assert result["ours"]["speedup"]["cell"] == pytest.approx(1.5)
    assert "twice as fast: holds" in result["verdicts"][1]
    assert "lower test bound: holds" in result["verdicts"][0]
    # The paper's own curves, read the same way at its last plotted epoch: LN at 74 of 100.
    end = result["paper_at_end"]
    assert end["target"] == pytest.approx(83.971)
    assert end["epochs_to_reach"]["none"] == pytest.approx(100.0)
    assert end["epochs_to_reach"]["cell"] == pytest.approx(74.0)
    text = draw_study.write(tmp_path, tmp_path / "out", export=True)
    assert "| LN (on c_t) (`cell`) | 2 | 94.00 ± 1.41 |" in text
    assert (tmp_path / "out" / "draw.png").stat().st_size > 0
    assert (
        tmp_path / "out" / "draw_runs" / "model.norm=cell" / "seed=1" / "metrics.jsonl"
    ).exists()


@pytest.mark.parametrize(
    ("ln_bounds", "verdict"),
    [
        ([118, 108, 101, 99, 96, 95], "faster, not twice as fast"),
        ([121, 112, 106, 102, 100, 97], "does not hold (LN never reaches"),
    ],
)
def test_study_verdicts_when_ln_is_not_twice_as_fast(tmp_path, ln_bounds, verdict):
    write_run(tmp_path, "none", [120, 110, 104, 100, 98, 96])
    write_run(tmp_path, "cell", ln_bounds)
    lines = draw_study.study(tmp_path)["verdicts"]
    assert verdict in lines[1]
    assert "(one seed each: no error bar)" in lines[0]


def test_study_without_a_baseline_is_one_error(tmp_path):
    write_run(tmp_path, "cell", [100, 99])
    with pytest.raises(UserError, match="model.norm=none"):
        draw_study.study(tmp_path)


def test_study_over_seeds_states_the_spread_and_each_seeds_speed(tmp_path):
    """With several seeds: each LN run against the baseline run of its seed, and the verdicts
    weigh the spread (lower bound by 2 se of the difference; twice as fast on every seed)."""
    for seed, final in enumerate([96, 97, 98]):
        write_run(tmp_path, "none", [120, 110, 104, 100, 99, final], seed=seed)
    # Seed 0 reaches 96 at epoch 4 (1.5x); seed 1 reaches 97 at 3 (2x); seed 2 reaches 98 at 5.
    write_run(tmp_path, "cell", [115, 104, 98, 95, 94, 93], seed=0)
    write_run(tmp_path, "cell", [115, 104, 96, 95, 94, 92], seed=1)
    write_run(tmp_path, "cell", [115, 104, 100, 99, 98, 94], seed=2)
    result = draw_study.study(tmp_path)
    rows = result["models"]["cell"]["per_seed"]
    assert [r["target"] for r in rows] == [96, 97, 98]
    assert [r["epochs_to_reach"] for r in rows] == [4.0, 3.0, 5.0]
    assert [r["speedup"] for r in rows] == pytest.approx([1.5, 2.0, 1.2])
    # 93.0 ± 1.0 vs 97.0 ± 1.0 over 3 seeds: -4.00 ± 0.82, beyond 2 se.
    assert "lower test bound: holds** (93.00 ± 1.00 over 3 seeds" in result["verdicts"][0]
    assert "-4.00 ± 0.82 (se)" in result["verdicts"][0]
    assert "twice as fast: holds on 2 of 3 seeds" in result["verdicts"][1]
    assert (
        "per seed, against the same seed's baseline: 1.50x, 2.00x, 1.20x" in (result["verdicts"][1])
    )
    text = draw_study.markdown(result)
    assert "| LN (on c_t) (`cell`) | 2 | 98.00 | 5 | 6 | 1.20x |" in text
    # Within the noise: inconclusive.
    close = tmp_path / "close"
    for seed, final in enumerate([96, 97, 98]):
        write_run(close, "none", [120, 110, 104, 100, 98, final], seed=seed)
        write_run(close, "cell", [120, 110, 104, 100, 98, final - 1 + 2 * (seed == 2)], seed=seed)
    assert "lower test bound: inconclusive**" in draw_study.study(close)["verdicts"][0]
    # No spread at all (identical finals): the rule still reads, no division by zero.
    same = tmp_path / "same"
    for seed in (0, 1):
        write_run(same, "none", [120, 110, 104, 100, 98, 96], seed=seed)
        write_run(same, "cell", [115, 104, 98, 95, 94, 93], seed=seed)
    assert "lower test bound: holds** (93.00 ± 0.00 over 2" in draw_study.study(same)["verdicts"][0]
    # One seed of the baseline only: no error bar, said so.
    write_run(same / "one", "none", [120, 110, 104, 100, 98, 96])
    for seed in (0, 1):
        write_run(same / "one", "cell", [115, 104, 98, 95, 94, 93], seed=seed)
    assert (
        "(one seed for the baseline: no error bar)" in draw_study.study(same / "one")["verdicts"][0]
    )
