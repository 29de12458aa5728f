"""Each experiment trains end to end through train_and_evaluate on tiny data."""

import json

import pytest
from conftest import load_config

from lnexp.errors import UserError
from lnexp.train import train_and_evaluate


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
