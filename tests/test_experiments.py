"""Each experiment trains end to end through train_and_evaluate on tiny data."""

import json

import pytest
from conftest import load_config

from lnexp.errors import UserError
from lnexp.studies.seqmnist import task as seqmnist
from lnexp.training import train_and_evaluate


@pytest.mark.parametrize(
    "cell,norm",
    [("gru", "layer"), ("gru", "none"), ("lstm", "layer"), ("lstm", "cell"), ("simple", "layer")],
)
def test_seqmnist_learns(tiny_mnist_dir, tmp_path, cell, norm):
    config = load_config(
        "seqmnist",
        data__dir=str(tiny_mnist_dir),
        num_epochs=2,
        batch_size=50,
        model__cell=cell,
        model__norm=norm,
        model__hidden_size=16,
        optimizer__learning_rate=3e-3,
    )
    last = train_and_evaluate(config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert last["train_loss"] < records[0]["train_loss"]  # mean training loss of each epoch
    assert last["train_nll"] < 2.25  # below chance, log(10) = 2.30
    assert 0.0 <= last["test_error"] <= 1.0
    assert {seqmnist.REPORT_METRIC, *seqmnist.REPORT_METRICS} <= last.keys()  # compare.py's


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("model__cell", "transformer", ["cell", "gru", "lstm", "simple"]),
        ("model__norm", "batch", ["norm", "layer", "none"]),
    ],
)
def test_seqmnist_rejects_unknown_choices(tiny_mnist_dir, tmp_path, key, value, words):
    config = load_config("seqmnist", data__dir=str(tiny_mnist_dir), **{key: value})
    with pytest.raises(UserError) as info:
        train_and_evaluate(config, tmp_path)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    "cell,norm", [("gru", "layer"), ("lstm", "layer"), ("lstm", "cell"), ("simple", "layer")]
)
def test_seqmnist_gradients_stay_small_over_blank_rows(cell, norm):
    """MNIST's blank top rows once made every LN input of the first steps exactly zero, and the
    LN-LSTM gradient overflowed (1/sqrt(eps) per step); standardized rows keep it small."""
    import jax
    import numpy as np
    from flax import nnx

    from lnexp.studies.seqmnist import task as seqmnist

    config = load_config("seqmnist", model__cell=cell, model__norm=norm)
    model = seqmnist.build_model(config, nnx.Rngs(0))
    images = np.random.default_rng(0).integers(0, 256, (32, 28, 28)).astype(np.uint8)
    images[:, :10] = 0  # Ten blank rows, as at the top of many digits.
    batch = {"image": images.reshape(32, 784), "label": np.arange(32) % 10}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return seqmnist.loss_fn(nnx.merge(graphdef, p, rest), batch, None)[0]

    grads = jax.grad(loss)(params)
    assert max(float(np.abs(g).max()) for g in jax.tree.leaves(grads)) < 100.0


# --------------------------------------------------------------------------------------------
# The experiments take their normalizations from lnexp.norms.REGISTRY.


def test_pimnist_passes_every_hyperparameter_of_the_method():
    from lnexp import norms
    from lnexp.studies.pimnist import task as pimnist

    for name, method in norms.REGISTRY.items():
        for batch_size, unbiased in ((4, True), (128, False)):
            config = load_config("pimnist", model__norm=name, batch_size=batch_size)
            kwargs = pimnist.norm_kwargs(config)
            assert tuple(kwargs) == method.hyperparameters, name
            if "epsilon" in kwargs:
                assert kwargs["epsilon"] == config.model.epsilon
            if name == "batch":  # bn_unbiased=None: unbiased at small batch sizes (the paper)
                assert kwargs == dict(epsilon=1e-5, momentum=0.99, unbiased=unbiased)


def test_pimnist_refuses_a_hyperparameter_without_a_config_field(monkeypatch):
    """A method's hyperparameter is never dropped silently: without a config field, an error."""
    from lnexp import norms
    from lnexp.studies.pimnist import task as pimnist

    group = norms.NormMethod(
        "group", norms.SUMMED_INPUTS, norms.LayerNorm, hyperparameters=("epsilon", "num_groups")
    )
    monkeypatch.setitem(norms.REGISTRY, "group", group)
    with pytest.raises(UserError, match="'num_groups'.*no field 'num_groups'"):
        pimnist.norm_kwargs(load_config("pimnist", model__norm="group"))


@pytest.mark.parametrize("cell", ["simple", "gru", "lstm"])
def test_seqmnist_and_skipthought_take_the_cells_registry_methods(cell, scale_only_norm):
    from flax import nnx

    from lnexp.studies.seqmnist import task as seqmnist
    from lnexp.studies.skipthought import task as skipthought

    for norm in ("rms", scale_only_norm):
        config = load_config("seqmnist", model__cell=cell, model__norm=norm, model__hidden_size=8)
        assert seqmnist.build_model(config, nnx.Rngs(0)).cell.norm_name == norm
    config = load_config("skipthought", model__norm="rms")
    config.model.update(embed_dim=4, hidden_size=8)
    assert skipthought.build_model(config, 20, nnx.Rngs(0)).encoder.norm_name == "rms"
    config.model.norm = "batch"
    with pytest.raises(UserError, match=r"'batch' in config.model.norm for GRUCell.*'rms'"):
        skipthought.build_model(config, 20, nnx.Rngs(0))
