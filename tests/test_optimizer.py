"""The optimizer of a config (lnexp.training.optimizer): the defaults are the plain Adam of the
runs before schedules existed (bit for bit), the learning rate at chosen steps of each schedule,
AdamW's mask, gradient clipping, the names refused before any work, and the clear refusal of
run directories written before these fields existed."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from conftest import REPO, load_config
from flax import nnx
from test_configs import OPTIMIZER_ADDED, VARIANTS
from test_train import assert_clean_cli_error, make_config, run_cli

from lnexp import config as config_files
from lnexp import config_ranges, training
from lnexp.config import import_file, resolve_learning_rate
from lnexp.errors import UserError
from lnexp.training.optimizer import learning_rate_schedule, make_optimizer, matrices
from lnexp.training.run_dir import RunDir

PEAK = 1e-3


def opt_block(**fields) -> ml_collections.ConfigDict:
    """configs/common.py's optimizer block at rate PEAK, with ``fields`` set."""
    common = import_file(REPO / "configs" / "common.py")
    opt = common.optimizer(learning_rate=PEAK)
    for key, value in fields.items():
        opt[key] = value
    return opt


def with_optimizer(**fields) -> ml_collections.ConfigDict:
    """A config of 10 epochs of 10 steps (100 steps) with that optimizer block."""
    return ml_collections.ConfigDict(
        {"num_epochs": 10, "steps_per_epoch": 10, "optimizer": opt_block(**fields)}
    )


def toy_params() -> dict[str, jax.Array]:
    keys = jax.random.split(jax.random.key(0), 3)
    return {
        "kernel": jax.random.normal(keys[0], (4, 3)),
        "bias": jax.random.normal(keys[1], (3,)),
        "scale": 1.0 + jax.random.normal(keys[2], (3,)),
    }


def run_updates(tx: optax.GradientTransformation, steps: int = 5, grad_scale: float = 10.0):
    """The updates of ``steps`` steps on random gradients, and the final optimizer state."""
    params = toy_params()
    state = tx.init(params)
    updates_seen = []
    for step in range(steps):
        keys = jax.random.split(jax.random.key(100 + step), len(params))
        grads = {
            k: grad_scale * jax.random.normal(key, p.shape)
            for key, (k, p) in zip(keys, params.items(), strict=True)
        }
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        updates_seen.append(updates)
    return updates_seen, state


def assert_same_bits(tx, reference) -> None:
    (ours, our_state), (theirs, their_state) = run_updates(tx), run_updates(reference)
    assert jax.tree.structure(our_state) == jax.tree.structure(their_state)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(our_state), jax.tree.leaves(their_state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------
# The defaults: the optimizer of before, bit for bit.


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_config_default_is_the_old_optimizer_bit_for_bit(variant):
    """What make_optimizer built before schedules existed: optax.adam(rate) (after the clip)."""
    config = resolve_learning_rate(config_files.load_config(REPO / "configs" / variant))
    opt = config.optimizer
    old = optax.adam(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    if opt.grad_clip_norm:
        old = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), old)
    assert_same_bits(make_optimizer(config, total_steps=1000), old)


def test_sgd_default_is_the_old_sgd_bit_for_bit():
    config = with_optimizer(name="sgd", momentum=0.9)
    assert_same_bits(make_optimizer(config), optax.sgd(PEAK, momentum=0.9))


def test_adamw_without_decay_is_adam_bit_for_bit():
    config = with_optimizer(name="adamw", weight_decay=0.0)
    assert_same_bits(make_optimizer(config), optax.adamw(PEAK, weight_decay=0.0, mask=matrices))
    ours, _ = run_updates(make_optimizer(config))
    theirs, _ = run_updates(optax.adam(PEAK))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# --------------------------------------------------------------------------------------------
# The learning rate at chosen steps.


def cosine(step: float, steps: float, end: float = 0.0) -> float:
    """The expected cosine decay from PEAK to ``end`` over ``steps`` steps."""
    return end + (PEAK - end) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


@pytest.mark.parametrize(
    "fields, total_steps, expected",
    [
        # Constant, no warmup: the rate at every step (step 0, middle, end, after the end).
        ({}, 100, {0: PEAK, 50: PEAK, 100: PEAK, 1000: PEAK}),
        # Constant after 10 steps of linear warmup from 0.
        ({"warmup_steps": 10}, 100, {0: 0.0, 1: PEAK / 10, 5: PEAK / 2, 10: PEAK, 60: PEAK}),
        # Cosine over the whole run: until total_steps.
        (
            {"schedule": "cosine"},
            100,
            {0: PEAK, 25: cosine(25, 100), 50: PEAK / 2, 100: 0.0, 150: 0.0},
        ),
        # Warmup, then cosine over the rest of the run (100 steps).
        (
            {"schedule": "cosine", "warmup_steps": 10},
            110,
            {0: 0.0, 5: PEAK / 2, 10: PEAK, 35: cosine(25, 100), 60: PEAK / 2, 110: 0.0},
        ),
        # Warmup, then cosine over decay_steps to a tenth of the peak, then that rate.
        (
            {
                "schedule": "cosine",
                "warmup_steps": 10,
                "decay_steps": 50,
                "end_learning_rate_factor": 0.1,
            },
            None,
            {
                0: 0.0,
                10: PEAK,
                35: cosine(25, 50, PEAK / 10),
                60: PEAK / 10,
                500: PEAK / 10,
            },
        ),
    ],
)
def test_learning_rate_at_chosen_steps(fields, total_steps, expected):
    schedule = learning_rate_schedule(opt_block(**fields), total_steps)
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, rel=1e-5, abs=1e-12), step


def test_the_optimizer_steps_at_the_schedule_s_rate():
    """SGD without momentum on gradients of ones: update t is -learning_rate(t). The total steps
    come from the config (10 epochs of steps_per_epoch=10) when not given."""
    config = with_optimizer(name="sgd", schedule="cosine", warmup_steps=4)
    tx = make_optimizer(config)
    schedule = learning_rate_schedule(config.optimizer, total_steps=100)
    params = {"w": jnp.zeros(3)}
    state = tx.init(params)
    for step in range(100):
        updates, state = tx.update({"w": jnp.ones(3)}, state, params)
        np.testing.assert_allclose(updates["w"], -schedule(step), rtol=1e-6, atol=1e-12)
    assert float(schedule(100)) == 0.0


def test_a_cosine_to_the_end_needs_the_number_of_steps():
    config = with_optimizer(schedule="cosine")
    del config["steps_per_epoch"]
    with pytest.raises(UserError, match="config.optimizer.decay_steps"):
        make_optimizer(config)
    make_optimizer(config, total_steps=50)
    config.optimizer.warmup_steps = 50
    with pytest.raises(UserError, match="config.optimizer.warmup_steps=50 leaves no step"):
        make_optimizer(config, total_steps=50)


def test_an_unresolved_learning_rate_is_refused():
    with pytest.raises(UserError, match="config.optimizer.learning_rate is None"):
        learning_rate_schedule(opt_block(learning_rate=None))


# --------------------------------------------------------------------------------------------
# AdamW's mask, and the gradient clip.


def model_params():
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.LayerNorm(4, rngs=nnx.Rngs(0)))
    _, params, _ = nnx.split(model, nnx.Param, ...)
    # Non-trivial values, so that a decay shows in every leaf.
    return jax.tree.map(lambda p: p + 0.5, params)


@pytest.mark.parametrize("matrices_only", [True, False])
def test_adamw_decays_only_matrices_when_asked(matrices_only):
    """With zero gradients Adam's step is 0, so the update is the decay alone: -lr * wd * p."""
    config = with_optimizer(name="adamw", weight_decay=0.1, decay_matrices_only=matrices_only)
    tx = make_optimizer(config)
    params = model_params()
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for (path, update), p in zip(
        jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(params), strict=True
    ):
        decayed = p.ndim >= 2 or not matrices_only
        expected = -PEAK * 0.1 * p if decayed else jnp.zeros_like(p)
        np.testing.assert_allclose(update, expected, rtol=1e-6, err_msg=str(path))
    assert sum(p.ndim >= 2 for p in jax.tree.leaves(params)) == 1  # Linear's kernel.


def test_adamw_mask_under_vmap_sees_each_seed_s_shapes():
    """The trainer vmaps the update over a seed axis: a bias stays 1-D, not decayed."""
    tx = make_optimizer(with_optimizer(name="adamw", weight_decay=0.1))
    stacked = jax.tree.map(lambda p: jnp.stack([p, 2 * p]), model_params())
    states = jax.vmap(tx.init)(stacked)
    zeros = jax.tree.map(jnp.zeros_like, stacked)
    updates, _ = jax.vmap(tx.update)(zeros, states, stacked)
    for update, p in zip(jax.tree.leaves(updates), jax.tree.leaves(stacked), strict=True):
        decayed = p.ndim >= 3  # A matrix, with the seed axis in front.
        np.testing.assert_allclose(update, -PEAK * 0.1 * p if decayed else 0 * p, rtol=1e-6)


def test_gradient_clipping_chains_before_the_optimizer():
    """Clipped: the update of gradients g with norm 100 is that of g / 100 unclipped."""
    fields = dict(name="adamw", weight_decay=0.1, schedule="cosine", warmup_steps=2)
    clipped = make_optimizer(with_optimizer(grad_clip_norm=1.0, **fields))
    plain = make_optimizer(with_optimizer(**fields))
    params = toy_params()
    grads = jax.tree.map(jnp.ones_like, params)
    norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
    grads = jax.tree.map(lambda g: 100.0 * g / norm, grads)
    small = jax.tree.map(lambda g: g / 100.0, grads)
    state_c, state_p = clipped.init(params), plain.init(params)
    for _ in range(4):
        up_c, state_c = clipped.update(grads, state_c, params)
        up_p, state_p = plain.update(small, state_p, params)
        for a, b in zip(jax.tree.leaves(up_c), jax.tree.leaves(up_p), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-9)


# --------------------------------------------------------------------------------------------
# Bad names and values, refused with the field to fix.


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("optimizer.schedule", "cosin", ["'constant', 'cosine'", "--config.optimizer.schedule="]),
        ("optimizer.name", "adamx", ["'adam', 'adamw', 'sgd'", "--config.optimizer.name="]),
    ],
)
def test_unknown_names_are_refused_before_any_work(key, value, words):
    config = load_config("pimnist", **{key.replace(".", "__"): value})
    for check in (config_ranges.check_ranges, make_optimizer):
        with pytest.raises(UserError) as info:
            check(config)
        for word in [f"config.{key}={value!r}", *words]:
            assert word in str(info.value), str(info.value)


def test_cli_unknown_schedule_is_refused_before_any_work(tiny_mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(workdir, tiny_mnist_dir, "--config.optimizer.schedule=cosin")
    assert result.returncode == 2
    assert_clean_cli_error(result, "config.optimizer.schedule='cosin'", "'cosine'")
    assert not workdir.exists()


def test_weight_decay_needs_adamw():
    config = with_optimizer(name="adam", weight_decay=0.1)
    with pytest.raises(UserError, match="--config.optimizer.name=adamw"):
        make_optimizer(config)


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("optimizer.warmup_steps", -1, ["an integer >= 0"]),
        ("optimizer.decay_steps", 0, ["an integer >= 1 (or None)"]),
        ("optimizer.weight_decay", -0.1, [">= 0"]),
        ("optimizer.end_learning_rate_factor", 1.5, ["[0, 1]"]),
    ],
)
def test_new_fields_out_of_range_are_refused(key, value, words):
    config = load_config("pimnist")
    *parents, leaf = key.split(".")
    with config.unlocked():
        config[parents[0]][leaf] = value
    with pytest.raises(UserError) as info:
        config_ranges.check_ranges(config)
    for word in [f"config.{key}=", *words]:
        assert word in str(info.value), str(info.value)


# --------------------------------------------------------------------------------------------
# Run directories written before these fields existed.


def without_optimizer_fields(path) -> dict:
    """Drops the fields of OPTIMIZER_ADDED from ``path``'s config.json, as it was written before
    they existed; returns the dropped values."""
    saved = json.loads(path.read_text())
    dropped = {k: saved["optimizer"].pop(k) for k in OPTIMIZER_ADDED}
    path.write_text(json.dumps(saved))
    return dropped


def test_run_directories_from_before_the_fields_are_refused_until_they_are_added(tmp_path):
    config = load_config("pimnist")
    run = RunDir(tmp_path)
    run.write_config(config)
    (tmp_path / "checkpoints" / "17").mkdir(parents=True)
    dropped = without_optimizer_fields(run.config_path)
    with pytest.raises(UserError) as info:
        run.check_compatible(config)
    message = str(info.value)
    missing = ", ".join(sorted(f"optimizer.{k}" for k in OPTIMIZER_ADDED))
    for words in (str(run.config_path), f"(missing: {missing})", "add the missing fields"):
        assert words in message, message
    assert 'optimizer.schedule="constant"' in message and "decay_steps=null" in message
    assert "new --workdir" in message
    assert "\n" not in message  # One paragraph.
    assert (tmp_path / "checkpoints" / "17").is_dir()
    # Also a changed field is named, in the same paragraph.
    also = r"missing: .* also differs from this config in: model\.norm\."
    with pytest.raises(UserError, match=also):
        run.check_compatible(load_config("pimnist", model__norm="batch"))
    # With the fields written back as the run was trained, it resumes (more epochs, as before).
    saved = json.loads(run.config_path.read_text())
    saved["optimizer"].update(dropped)
    run.config_path.write_text(json.dumps(saved))
    run.check_compatible(config)
    run.check_compatible(load_config("pimnist", num_epochs=80))
    for key, value in [("optimizer.warmup_steps", 10), ("optimizer.schedule", "cosine")]:
        with pytest.raises(UserError, match=f"changed: {key}"):
            run.check_compatible(load_config("pimnist", **{key.replace(".", "__"): value}))


def test_a_run_from_before_the_fields_is_refused_with_its_checkpoints_intact(
    tiny_mnist_dir, tmp_path
):
    training.train_and_evaluate(make_config(tiny_mnist_dir, num_epochs=1), tmp_path)
    run = RunDir(tmp_path)
    (step,) = run.checkpoint_steps()
    files = {p: p.read_bytes() for p in run.checkpoint_dir.rglob("*") if p.is_file()}
    records = run.metrics_path.read_text()
    dropped = without_optimizer_fields(run.config_path)
    with pytest.raises(UserError, match="lacks fields that the config has now"):
        training.train_and_evaluate(make_config(tiny_mnist_dir, num_epochs=2), tmp_path)
    assert run.checkpoint_steps() == [step] and run.metrics_path.read_text() == records
    assert {p: p.read_bytes() for p in run.checkpoint_dir.rglob("*") if p.is_file()} == files
    saved = json.loads(run.config_path.read_text())
    saved["optimizer"].update(dropped)
    run.config_path.write_text(json.dumps(saved))
    record = training.train_and_evaluate(make_config(tiny_mnist_dir, num_epochs=2), tmp_path)
    assert record["epoch"] == 2 and run.checkpoint_steps()[-1] > step


def test_more_epochs_are_refused_when_the_rate_decays_until_the_end(tmp_path):
    cosine_to_end = {"optimizer__schedule": "cosine"}
    run = RunDir(tmp_path)
    (tmp_path / "checkpoints" / "17").mkdir(parents=True)
    (tmp_path / "config.json").write_text(load_config("pimnist", **cosine_to_end).to_json())
    with pytest.raises(UserError, match="changed: num_epochs.*cosine learning-rate decay"):
        run.check_compatible(load_config("pimnist", num_epochs=80, **cosine_to_end))
    fixed = {**cosine_to_end, "optimizer__decay_steps": 1000}
    (tmp_path / "config.json").write_text(load_config("pimnist", **fixed).to_json())
    run.check_compatible(load_config("pimnist", num_epochs=80, **fixed))


# --------------------------------------------------------------------------------------------
# End to end.


def test_adamw_with_warmup_and_cosine_trains(tiny_mnist_dir, tmp_path):
    """The loop passes its number of steps: the cosine decays to 0 at the last step."""
    config = make_config(
        tiny_mnist_dir,
        num_epochs=2,
        optimizer__name="adamw",
        optimizer__weight_decay=0.1,
        optimizer__schedule="cosine",
        optimizer__warmup_steps=5,
    )
    record = training.train_and_evaluate(config, tmp_path)
    assert record["epoch"] == 2 and math.isfinite(record["train_nll"])
    saved = json.loads((tmp_path / "config.json").read_text())["optimizer"]
    assert (saved["name"], saved["schedule"], saved["warmup_steps"]) == ("adamw", "cosine", 5)
