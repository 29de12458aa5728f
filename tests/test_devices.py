"""One device against every device this process sees, on whatever platform it runs (a
machine's GPUs in ``scripts/device_check.sh``; forced CPU devices there with ``--dry-run``).

With a single device there is nothing to compare and the test is skipped; ``tests/test_train.py``
compares 1 and 8 forced CPU devices in the ordinary suite."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from conftest import load_config
from jax.sharding import Mesh

from lnexp.training import loop, train_and_evaluate


def read_records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(jax.device_count() < 2, reason="needs several devices")
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_one_device_matches_every_device(tiny_mnist_dir, tmp_path, monkeypatch, norm):
    """configs/pimnist.py:tiny on one device and data parallel over all of them: the same
    metrics to float tolerance (batch norm's statistics over the whole batch in both)."""
    n = jax.device_count()
    batch = 32 if 32 % n == 0 else 4 * n
    config = load_config(
        "pimnist", "tiny", data__dir=str(tiny_mnist_dir), model__norm=norm, batch_size=batch,
        steps_per_epoch=8, steps_per_call=8,
    )  # fmt: skip
    records = {}
    # Exact float32 products (no TF32 on GPUs), so that only the order of the sums differs.
    with jax.default_matmul_precision("highest"):
        for devices in (1, n):
            mesh = Mesh(np.asarray(jax.devices()[:devices]), ("data",))
            monkeypatch.setattr(loop, "make_mesh", lambda mesh=mesh: mesh)
            train_and_evaluate(config, tmp_path / str(devices))
            records[devices] = read_records(tmp_path / str(devices))
    for one, every in zip(records[1], records[n], strict=True):
        assert (one["epoch"], one["step"]) == (every["epoch"], every["step"])
        for key in one:
            if key.endswith(("_nll", "_loss")):
                np.testing.assert_allclose(every[key], one[key], rtol=1e-4, err_msg=key)
            elif key.endswith("_error"):  # At most one example of 50 classified differently.
                assert abs(one[key] - every[key]) <= 1 / 50 + 1e-6, (key, one[key], every[key])
