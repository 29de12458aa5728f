"""Mixed precision (config.dtype): the layers in bfloat16 and float16 against float32, every
experiment's :tiny config trained in bfloat16 and float16 (float32 parameters and optimizer
state in the checkpoint), float16's dynamic loss scaling, and the float32 path unchanged.

``scripts/device_check.sh`` runs this file on an accelerator."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import load_config
from flax import nnx

from lnexp import cells, config_ranges, norms
from lnexp.errors import UserError
from lnexp.models.transformer import causal_attention
from lnexp.studies import Task
from lnexp.training import train_and_evaluate
from lnexp.training.batches import Chunk
from lnexp.training.loss_scale import DynamicLossScale, all_finite, from_config
from lnexp.training.run_dir import RunDir
from lnexp.training.trainer import Trainer, make_mesh, put

LOW = [jnp.bfloat16, jnp.float16]
LOW_IDS = ["bf16", "f16"]
F32 = np.dtype(np.float32)
# Absolute tolerance of an O(1) output computed from inputs rounded to the dtype.
ATOL = {jnp.bfloat16: 5e-2, jnp.float16: 6e-3}


def normal(seed: int, shape, mean: float = 0.0, std: float = 1.0) -> np.ndarray:
    return (mean + std * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def as_f32(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x).astype(jnp.float32))


# --------------------------------------------------------------------------------------------
# The layers in bfloat16 and float16.


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("name", ["layer", "rms", "batch"])
def test_normalizers_in_low_precision_match_float32(name, dtype):
    """Statistics in float32, output in the input's dtype, within the dtype's rounding."""
    x = normal(0, (16, 32), mean=3.0, std=2.0)
    layer = norms.make_norm(name, 32, rngs=nnx.Rngs(0))
    reference = layer(jnp.asarray(x))
    low = norms.make_norm(name, 32, rngs=nnx.Rngs(0))(jnp.asarray(x, dtype))
    assert low.dtype == dtype
    np.testing.assert_allclose(as_f32(low), np.asarray(reference), atol=ATOL[dtype])


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("name", ["layer", "rms"])
def test_gradients_stay_finite_at_zero_variance(name, dtype):
    """A constant (LN) or zero (RMS) input: the gradient is 1/sqrt(epsilon) times larger than
    usual, and epsilon is added in float32, so it neither underflows nor overflows."""
    x = jnp.full((4, 64), 0.0 if name == "rms" else 5.0, dtype)
    layer = norms.make_norm(name, 64, rngs=nnx.Rngs(0))
    w = jnp.asarray(normal(1, (4, 64)), dtype)
    y, grad = jax.value_and_grad(lambda v: jnp.sum(layer(v) * w).astype(jnp.float32))(x)
    assert grad.dtype == dtype
    assert bool(jnp.isfinite(y)) and bool(jnp.all(jnp.isfinite(grad)))


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("norm", norms.NORMS)
def test_normalized_linear_computes_in_its_dtype_with_float32_parameters(norm, dtype):
    x = normal(2, (8, 24))
    reference = norms.NormalizedLinear(24, 16, norm=norm, rngs=nnx.Rngs(0))(jnp.asarray(x))
    layer = norms.NormalizedLinear(24, 16, norm=norm, dtype=dtype, rngs=nnx.Rngs(0))
    y = layer(jnp.asarray(x))  # A float32 input is cast by the layer.
    assert y.dtype == dtype
    assert {p.dtype for p in jax.tree.leaves(nnx.state(layer, nnx.Param))} == {F32}
    scale = 1.0 + float(np.abs(reference).max())
    np.testing.assert_allclose(as_f32(y), np.asarray(reference), atol=ATOL[dtype] * scale)


@pytest.mark.parametrize("dtype", LOW, ids=LOW_IDS)
@pytest.mark.parametrize("cell", ["simple", "gru", "lstm"])
def test_cells_compute_and_carry_in_their_dtype(cell, dtype):
    build = {"simple": cells.SimpleCell, "gru": cells.GRUCell, "lstm": cells.LSTMCell}[cell]
    xs = jnp.asarray(normal(3, (4, 6, 6)))
    carry32, ys32 = cells.scan(build(6, 16, rngs=nnx.Rngs(0)), xs)
    low = build(6, 16, dtype=dtype, rngs=nnx.Rngs(0))
    carry, ys = cells.scan(low, xs)
    assert ys.dtype == dtype
    assert {c.dtype for c in jax.tree.leaves(carry)} == {np.dtype(dtype)}
    assert {p.dtype for p in jax.tree.leaves(nnx.state(low, nnx.Param))} == {F32}
    # Rounding at every op of every step, carried and amplified by the recurrence (the LN-LSTM
    # most): the outputs' RMS error stays within a few units of the dtype's resolution.
    error = np.sqrt(np.mean((as_f32(ys) - np.asarray(ys32)) ** 2) / np.mean(np.square(ys32)))
    assert error < 8 * float(jnp.finfo(dtype).eps), error
    grads = jax.grad(lambda m: jnp.sum(cells.scan(m, xs)[1]).astype(jnp.float32))(low)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_float16_attention_matches_jax_in_float32():
    q, k, v = (jnp.asarray(normal(i, (2, 7, 3, 8))) for i in range(3))
    reference = jax.nn.dot_product_attention(q, k, v, is_causal=True)
    half = causal_attention(*(a.astype(jnp.float16) for a in (q, k, v)))
    assert half.dtype == jnp.float16
    np.testing.assert_allclose(as_f32(half), np.asarray(reference), atol=ATOL[jnp.float16])
    # Causal: the first position sees only itself.
    np.testing.assert_allclose(as_f32(half[:, 0]), np.asarray(v[:, 0]), atol=2e-3)


# --------------------------------------------------------------------------------------------
# The float32 path: the very program it was before config.dtype existed.


def _loss_jaxpr(module, config, batch, build):
    """The jaxpr of the value and gradient of the training loss, the model from ``build``."""
    model = build(config)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return module.loss_fn(nnx.merge(graphdef, p, rest), batch, jax.random.key(0))[0]

    return str(jax.make_jaxpr(jax.value_and_grad(loss))(params))


def _tiny_batches():
    rng = np.random.default_rng(0)
    image = {"image": rng.integers(0, 256, (4, 784)).astype(np.uint8), "label": np.arange(4)}
    ids = jnp.asarray(rng.integers(3, 40, (4, 6)).astype(np.int32))
    return image, {"prev": ids, "current": ids, "next": ids}, {"inputs": ids, "targets": ids}


@pytest.mark.parametrize("name", ["pimnist", "seqmnist", "skipthought", "transformer", "draw"])
def test_float32_models_do_not_cast(name, monkeypatch):
    """A float32 config builds the same program as a model built without any dtype (every
    layer's default): the float32 path has no cast and no other op it did not have before."""
    import importlib

    module = importlib.import_module(f"lnexp.studies.{name}.task")
    config = load_config(name, "tiny")
    assert config.dtype == "float32"
    image, triples, windows = _tiny_batches()
    draw = {"image": image["image"], "index": image["label"]}
    batch = {"pimnist": image, "seqmnist": image, "skipthought": triples, "draw": draw}.get(
        name, windows
    )
    rngs = lambda: nnx.Rngs(0)  # noqa: E731
    if name in ("pimnist", "seqmnist", "draw"):
        build = lambda c: module.build_model(c, rngs())  # noqa: E731
    else:
        build = lambda c: module.build_model(c, 40, rngs())  # noqa: E731
    typed = _loss_jaxpr(module, config, batch, build)
    monkeypatch.setattr(module, "compute_dtype", lambda config: None)
    assert typed == _loss_jaxpr(module, config, batch, build)


# --------------------------------------------------------------------------------------------
# The config fields.


def test_dtype_is_a_choice_refused_before_any_work():
    config = load_config("pimnist", dtype="float61")
    with pytest.raises(UserError) as info:
        config_ranges.check_ranges(config)
    message = str(info.value)
    for word in ("config.dtype='float61'", "'float32'", "'bfloat16'", "'float16'"):
        assert word in message


def test_run_directories_from_before_dtype_are_refused_until_it_is_added(tmp_path):
    """A run directory written before config.dtype and config.loss_scale existed (trained in
    float32 without loss scaling) resumes only once its config.json names them."""
    config = load_config("pimnist")
    run = RunDir(tmp_path)
    run.write_config(config)
    (tmp_path / "checkpoints" / "17").mkdir(parents=True)
    saved = json.loads(run.config_path.read_text())
    before = {"dtype": saved.pop("dtype"), "loss_scale": saved.pop("loss_scale")}
    run.config_path.write_text(json.dumps(saved))
    with pytest.raises(UserError) as info:
        run.check_compatible(config)
    message = str(info.value)
    fields = ["dtype", *(f"loss_scale.{k}" for k in sorted(before["loss_scale"]))]
    assert f"(missing: {', '.join(fields)})" in message, message
    assert 'dtype="float32"' in message and "new --workdir" in message
    assert (tmp_path / "checkpoints" / "17").is_dir()
    # The values of the runs from before: float32, the default loss-scale block.
    assert before == {
        "dtype": "float32",
        "loss_scale": {"initial": 2.0**15, "growth_interval": 2000, "factor": 2.0, "minimum": 1.0},
    }
    run.config_path.write_text(json.dumps({**saved, **before}))
    run.check_compatible(config)


def test_loss_scaling_only_in_float16():
    assert from_config(load_config("pimnist")) is None
    assert from_config(load_config("pimnist", dtype="bfloat16")) is None
    assert from_config(load_config("pimnist", dtype="float16")) == DynamicLossScale()


# --------------------------------------------------------------------------------------------
# Dynamic loss scaling.


def test_loss_scale_lowers_on_overflow_and_grows_after_the_interval():
    scaler = DynamicLossScale(initial=2.0**10, growth_interval=3, factor=2.0)
    state = scaler.init()
    scales = []
    for finite in (True, False, True, True, True, True, False, False):
        state = scaler.update(state, jnp.bool_(finite))
        scales.append(float(state["scale"]))
    # An overflow halves it and restarts the count; 3 finite steps in a row double it.
    assert scales == [2**10, 2**9, 2**9, 2**9, 2**10, 2**10, 2**9, 2**8]
    assert int(state["good_steps"]) == 0
    assert float(scaler.scale(state, jnp.float32(3.0))) == 3.0 * 2**8
    grads = {"w": jnp.full((2,), 2.0**8)}
    assert float(scaler.unscale(state, grads)["w"][0]) == 1.0
    assert bool(all_finite(grads)) and not bool(all_finite({"w": jnp.array([1.0, jnp.inf])}))
    collapsed = scaler.collapsed(np.array([1.0, 1.0, 2.0]), np.array([1.0, 0.0, 1.0]))
    assert collapsed.tolist() == [True, False, False]


def _overflow_trainer(scaler):
    """A float16 ``y = w x`` with the loss ``y^2`` in float32: at ``x = 1000`` the scaled
    gradient of ``y`` (``2 y S``) overflows float16; at ``x = 0.01`` it does not."""
    model = nnx.Linear(1, 1, use_bias=False, dtype=jnp.float16, rngs=nnx.Rngs(0))
    model.kernel[...] = jnp.full((1, 1), 0.5, jnp.float32)

    def loss_fn(m, batch, rng):
        return jnp.mean(jnp.square(m(batch["x"]).astype(jnp.float32))), {}

    data = {"x": np.array([[0.01], [1000.0]], np.float32)}
    task = Task(model=model, train_data=data, eval_data={}, loss_fn=loss_fn, eval_fn=None)
    trainer = Trainer(task, optax.adam(0.1), make_mesh(), 0, loss_scale=scaler)
    _, train_data, _ = trainer.put_data(eval_batch=1)
    return trainer, train_data


def test_an_overflowing_step_is_skipped_and_the_scale_recovers():
    scaler = DynamicLossScale(initial=2.0**15, growth_interval=2, factor=2.0)
    trainer, data = _overflow_trainer(scaler)
    state = put(trainer.initial_state, trainer.replicated)
    assert jax.tree.map(lambda a: a.dtype, state["loss_scale"]) == {
        "scale": jnp.float32,
        "good_steps": jnp.int32,
    }
    seen = []
    for example in (0, 1, 0, 0):  # The second step overflows.
        before = jax.tree.map(np.array, jax.device_get(state))  # Copies: the state is donated.
        state, metrics = trainer.train_chunk(state, data, Chunk(np.array([[example]]), None))
        after, metrics = jax.tree.map(np.array, jax.device_get((state, metrics)))
        skipped = bool(metrics["skipped"][0])
        seen.append((skipped, float(metrics["loss_scale"][0]), float(after["loss_scale"]["scale"])))
        assert int(after["step"]) == int(before["step"]) + 1  # A skipped step still counts.
        unchanged = [
            np.array_equal(a, b)
            for a, b in zip(
                jax.tree.leaves((after["params"], after["opt_state"])),
                jax.tree.leaves((before["params"], before["opt_state"])),
                strict=True,
            )
        ]
        assert all(unchanged) == skipped
        assert np.isfinite(jax.tree.leaves(after["params"])).all()
    assert seen == [
        (False, 2.0**15, 2.0**15),
        (True, 2.0**15, 2.0**14),  # Skipped, the scale lowered...
        (False, 2.0**14, 2.0**14),
        (False, 2.0**14, 2.0**15),  # ...and raised again after 2 finite steps.
    ]


# --------------------------------------------------------------------------------------------
# Every experiment's :tiny config in bfloat16 and float16.

# Short periods inside the first pass over the tiny data sets (one compiled chunk length).
SHORT = {
    "pimnist": dict(steps_per_epoch=8, steps_per_call=8),
    "seqmnist": dict(steps_per_epoch=8, steps_per_call=8),
    "skipthought": dict(steps_per_epoch=20),
    "transformer": dict(),
    "draw": dict(),
}
EXPERIMENTS = list(SHORT)


def tiny_config(name, dtype, mnist, books, cache, **overrides) -> ml_collections.ConfigDict:
    data = {"data__dir": str(mnist if name in ("pimnist", "seqmnist", "draw") else books)}
    if name == "skipthought":
        data["data__cache_dir"] = str(cache)
    return load_config(name, "tiny", dtype=dtype, **data, **SHORT[name], **overrides)


@pytest.fixture(scope="module")
def tiny_runs(tiny_mnist_dir, tiny_strokes_dir, tiny_books_dir, tmp_path_factory):
    """Each experiment's :tiny config trained for 2 short periods in bfloat16 and float16, once
    for the module: ``(experiment, dtype) -> run directory``."""
    root = tmp_path_factory.mktemp("precision")
    runs = {}
    for name in EXPERIMENTS:
        for dtype in ("bfloat16", "float16"):
            workdir = root / f"{name}-{dtype}"
            mnist = tiny_strokes_dir if name == "draw" else tiny_mnist_dir  # A bound to fall.
            config = tiny_config(name, dtype, mnist, tiny_books_dir, root / "cache")
            train_and_evaluate(config, workdir)
            runs[name, dtype] = workdir
    return runs


def read_records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_tiny_configs_train_in_low_precision(tiny_runs, name, dtype):
    records = read_records(tiny_runs[name, dtype])
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        numbers = {k: v for k, v in record.items() if isinstance(v, float)}
        assert all(math.isfinite(v) for v in numbers.values()), numbers
    assert records[1]["train_loss"] < records[0]["train_loss"]
    assert ("train_skipped_steps" in records[0]) == (dtype == "float16")
    if dtype == "float16":
        assert records[-1]["train_loss_scale"] >= 1.0


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_checkpoints_hold_float32_parameters_and_optimizer_state(tiny_runs, name, dtype):
    run = RunDir(tiny_runs[name, dtype])
    with run.checkpoints() as checkpoints:
        state = checkpoints.restore(run.latest_step())
    for part in ("params", "rest", "opt_state"):
        dtypes = {np.dtype(a.dtype) for a in jax.tree.leaves(state[part])}
        floating = {d for d in dtypes if np.issubdtype(d, np.floating) or d.name == "bfloat16"}
        assert floating <= {np.dtype(np.float32)}, (part, dtypes)
    # The loss scale is checkpointed with float16 only: other checkpoints are as they were.
    assert ("loss_scale" in state) == (dtype == "float16")
    if dtype == "float16":
        assert np.dtype(state["loss_scale"]["scale"].dtype) == np.float32


def test_bfloat16_sentence_vectors_are_float32(tiny_runs):
    from lnexp.studies.skipthought.encode import SentenceEncoder

    vectors = SentenceEncoder(tiny_runs["skipthought", "bfloat16"])(["Anna sees ben."])
    assert vectors.dtype == np.float32 and np.isfinite(vectors).all()


def test_float16_run_recovers_from_overflowing_steps(tiny_mnist_dir, tmp_path):
    """A scale far too large overflows the first steps: each is skipped and halves the scale
    until the gradients fit, then the run trains (and grows the scale every 4 finite steps)."""
    config = tiny_config(
        "pimnist", "float16", tiny_mnist_dir, None, None,
        loss_scale__initial=2.0**24, loss_scale__growth_interval=4,
    )  # fmt: skip
    train_and_evaluate(config, tmp_path)
    first, last = read_records(tmp_path)
    assert first["train_skipped_steps"] >= 2
    assert math.isfinite(first["train_loss"]) and last["train_loss"] < first["train_loss"]
    assert last["train_loss_scale"] < 2.0**24


def test_float16_run_stops_when_the_scale_reaches_its_minimum(tiny_mnist_dir, tmp_path):
    config = tiny_config(
        "pimnist", "float16", tiny_mnist_dir, None, None,
        loss_scale__initial=2.0**40, loss_scale__minimum=2.0**40,
    )  # fmt: skip
    with pytest.raises(UserError) as info:
        train_and_evaluate(config, tmp_path)
    message = str(info.value)
    for words in ("float16", "step 1,", "config.loss_scale.minimum", "--config.dtype=bfloat16"):
        assert words in message, message
    assert not (tmp_path / "metrics.jsonl").exists() or not read_records(tmp_path)
