"""The choices of the Figure 6 ablation: input scaling, initializers, schedule (issue 26)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config

from lnexp.data.mnist import load_mnist, pixels_to_unit_interval
from lnexp.errors import UserError
from lnexp.models.initializers import get_initializer
from lnexp.reporting.runs import read_metrics
from lnexp.studies.pimnist import task as pimnist
from lnexp.training import train_and_evaluate


def test_standardizer_uses_the_training_split_and_floors_the_std():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (200, 784)).astype(np.uint8)
    train[:, 0] = 0  # A border pixel: constant over the training split.
    train[:, 1] = 0
    train[:2, 1] = 255  # A rare pixel (1 %): std 0.099, below the floor.
    standardize = pimnist.pixel_standardizer(train)
    x = np.asarray(standardize(train))
    unit = train / 255.0
    free = slice(2, None)
    np.testing.assert_allclose(x[:, free].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, free].std(0), 1.0, atol=1e-4)
    # Constant pixel: centred, not divided by ~0; rare pixel: divided by the floor.
    np.testing.assert_allclose(x[:, 0], 0.0)
    np.testing.assert_allclose(x[:, 1], (unit[:, 1] - unit[:, 1].mean()) / pimnist.STD_FLOOR, 1e-5)
    assert np.isfinite(np.asarray(standardize(np.full((1, 784), 255, np.uint8)))).all()
    # The same numbers inside jit, on a JAX uint8 array.
    np.testing.assert_allclose(jax.jit(standardize)(jnp.asarray(train)), x, rtol=1e-5, atol=1e-6)


def test_unit_scaling_is_the_default():
    config = load_config("pimnist")
    assert config.data.input_scaling == "unit"


def test_unit_scaling_is_the_papers_input():
    config = load_config("pimnist")
    to_inputs, loss_fn, eval_fn = pimnist.input_fns(config, np.zeros((2, 784), np.uint8))
    assert to_inputs is pixels_to_unit_interval
    assert (loss_fn, eval_fn) == (pimnist.loss_fn, pimnist.eval_fn)


def test_standardized_inputs_train_and_differ_from_unit(tiny_mnist_dir, tmp_path):
    finals = {}
    for scaling in ("unit", "standardize"):
        config = load_config(
            "pimnist", "tiny", data__dir=str(tiny_mnist_dir), data__input_scaling=scaling
        )
        train_and_evaluate(config, tmp_path / scaling)
        records = read_metrics(tmp_path / scaling)
        assert records[-1]["epoch"] == 2
        finals[scaling] = records[-1]["train_nll"]
    assert finals["unit"] != finals["standardize"]


def test_unknown_input_scaling_is_refused_before_the_run_directory(tiny_mnist_dir, tmp_path):
    config = load_config(
        "pimnist", "tiny", data__dir=str(tiny_mnist_dir), data__input_scaling="zscore"
    )
    with pytest.raises(UserError, match="input_scaling") as info:
        train_and_evaluate(config, tmp_path / "run")
    assert "standardize" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_the_standardizer_is_fitted_on_the_training_images(tiny_mnist_dir):
    data = load_mnist(str(tiny_mnist_dir))
    standardize = pimnist.pixel_standardizer(data["train"]["image"])
    x = np.asarray(standardize(data["train"]["image"]))
    busy = pixels_to_unit_interval(data["train"]["image"]).std(0) > pimnist.STD_FLOOR
    np.testing.assert_allclose(x[:, busy].mean(0), 0.0, atol=1e-4)


@pytest.mark.parametrize("scale", [0.01])
def test_small_normal_initializer_has_a_fixed_scale(scale):
    init = get_initializer(f"normal_{scale}")
    for fan_in in (100, 1000):
        w = np.asarray(init(jax.random.key(0), (fan_in, 500)))
        assert abs(w.std() - scale) < 0.05 * scale
        assert abs(w.mean()) < 0.05 * scale
