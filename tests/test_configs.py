"""The config files: every variant loads (by path, from any working directory, as absl's
config_flags and lnexp.config load them), and the blocks configs/common.py gives them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from lnexp import config as config_files

VARIANTS = [
    "pimnist.py",
    "pimnist.py:tuned",
    "seqmnist.py",
    "skipthought.py",
    "skipthought.py:paper",
    "skipthought.py:tiny",
]
# The fields added with learning-rate schedules and weight decay, at the values every config
# keeps (plain Adam at a constant rate: the values of the runs written before they existed, whose
# config.json must name them to resume; CHANGELOG.md).
OPTIMIZER_ADDED = {
    "schedule": "constant",
    "warmup_steps": 0,
    "decay_steps": None,
    "end_learning_rate_factor": 0.0,
    "weight_decay": 0.0,
    "decay_matrices_only": True,
}
ADAM = {"name": "adam", "b1": 0.9, "b2": 0.999, "eps": 1e-8, "momentum": 0.0} | OPTIMIZER_ADDED
# The shared blocks as each config had them written out before configs/common.py.
EXPECTED = {
    "pimnist.py": {
        "loop": (64, 128, 500, 5000),
        "optimizer": ADAM | {"learning_rate": 3e-4, "grad_clip_norm": 0.0},
        "checkpoint": {"keep": 3, "every_epochs": 1, "keep_every_steps": None},
    },
    "pimnist.py:tuned": {
        "loop": (64, 128, 500, 5000),
        "optimizer": ADAM | {"learning_rate": None, "grad_clip_norm": 0.0},
        "checkpoint": {"keep": 3, "every_epochs": 1, "keep_every_steps": None},
    },
    "seqmnist.py": {
        "loop": (10, 128, 100, 5000),
        "optimizer": ADAM | {"learning_rate": 1e-3, "grad_clip_norm": 1.0},
        "checkpoint": {"keep": 3, "every_epochs": 1, "keep_every_steps": None},
    },
    "skipthought.py": {
        "loop": (12, 64, 10, 250),
        "optimizer": ADAM | {"learning_rate": 1e-3, "grad_clip_norm": 5.0},
        "checkpoint": {"keep": 12, "every_epochs": 1, "keep_every_steps": None},
    },
    "skipthought.py:paper": {
        "loop": (200, 64, 10, 250),
        "optimizer": ADAM | {"learning_rate": 2e-4, "grad_clip_norm": 5.0},
        "checkpoint": {"keep": 10, "every_epochs": 1, "keep_every_steps": None},
    },
    "skipthought.py:tiny": {
        "loop": (2, 16, 10, 64),
        "optimizer": ADAM | {"learning_rate": 1e-3, "grad_clip_norm": 5.0},
        "checkpoint": {"keep": 12, "every_epochs": 1, "keep_every_steps": None},
    },
}
MNIST_DATA = {
    "source": "cache",
    "url": "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "dir": None,
    "limit_train": None,
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_shared_blocks(variant):
    config = config_files.load_config(REPO / "configs" / variant).to_dict()
    expected = EXPECTED[variant]
    loop = (config["num_epochs"], config["batch_size"], config["steps_per_call"])
    assert (*loop, config["eval_batch_size"]) == expected["loop"]
    assert (config["seed"], config["log_every_s"]) == (0, 30.0)
    optimizer = dict(config["optimizer"])
    tuned = optimizer.pop("tuned_rates", None)
    assert optimizer == expected["optimizer"]
    assert (tuned is not None) == variant.endswith(":tuned")
    assert config["checkpoint"] == expected["checkpoint"]
    if "mnist" in variant:
        data = dict(config["data"])
        if variant.startswith("pimnist"):  # PI-MNIST's own field (the Figure 6 ablation).
            assert data.pop("input_scaling") == "unit"
        assert data == MNIST_DATA
    # Every float field stays a float (an override like learning_rate=1 must not become an int).
    floats = ("learning_rate", "b1", "b2", "eps", "momentum", "grad_clip_norm", "weight_decay")
    for key in (*floats, "end_learning_rate_factor"):
        if optimizer[key] is not None:
            assert type(optimizer[key]) is float, key


def every_variant() -> list[str]:
    """Every config file of configs/ with every variant it declares (``VARIANTS``), and those
    of this file's table."""
    found = set(VARIANTS)
    for path in sorted((REPO / "configs").glob("*.py")):
        if path.name == "common.py":
            continue
        found.add(path.name)
        module = config_files.import_file(path)
        found.update(f"{path.name}:{v}" for v in getattr(module, "VARIANTS", ()))
    return sorted(found)


@pytest.mark.parametrize("variant", every_variant())
def test_every_config_loads_and_builds_its_optimizer(variant):
    from lnexp.config_ranges import check_ranges
    from lnexp.training.optimizer import make_optimizer

    config = config_files.resolve_learning_rate(
        config_files.load_config(REPO / "configs" / variant)
    )
    check_ranges(config)
    assert set(OPTIMIZER_ADDED) <= set(config.optimizer)
    tx = make_optimizer(config, total_steps=10 * config.optimizer.warmup_steps + 10)
    params = {"w": np.ones((2, 2), np.float32), "b": np.ones(2, np.float32)}
    tx.update(params, tx.init(params), params)


def test_configs_load_by_path_from_another_directory(tmp_path):
    """absl's config_flags (python -m lnexp.main) and lnexp's loader import configs/common.py
    by path, so a config file works from any working directory."""
    script = (
        "import json, sys\n"
        "from absl import flags\n"
        "from ml_collections import config_flags\n"
        "from lnexp.config import load_config\n"
        "config_flags.DEFINE_config_file('config')\n"
        "flags.FLAGS(['x', '--config=' + sys.argv[1]])\n"
        "print(json.dumps([flags.FLAGS.config.to_dict() == load_config(sys.argv[1]).to_dict(),"
        " flags.FLAGS.config.optimizer.to_dict()]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for variant in ("pimnist.py:tuned", "skipthought.py:tiny"):
        result = subprocess.run(
            [sys.executable, "-c", script, str(REPO / "configs" / variant)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        same, optimizer = json.loads(result.stdout.splitlines()[-1])
        assert same
        assert optimizer["grad_clip_norm"] == EXPECTED[variant]["optimizer"]["grad_clip_norm"]
