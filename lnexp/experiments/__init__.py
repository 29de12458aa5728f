"""What differs per experiment, behind one small interface the training loop consumes.

An experiment module exposes ``build_task(config) -> Task``: a freshly initialized model, the
data as NumPy arrays, and the training and evaluation functions. :mod:`lnexp.train` knows nothing
else about it. Experiments are looked up by ``config.experiment``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from lnexp.errors import UserError

Batch = Mapping[str, jax.Array]

EXPERIMENTS = ("pimnist", "seqmnist")
"""Names ``config.experiment`` accepts; each is a module of this package."""


@dataclasses.dataclass(frozen=True)
class Task:
    """Everything the training loop needs from an experiment.

    Attributes:
        model: The freshly initialized NNX model.
        train_data: Arrays with a leading example axis; they stay on the devices for the whole
            run and training batches are gathered from them by index.
        eval_data: Split name -> arrays like ``train_data``; every split is evaluated after every
            epoch, in one jitted pass each.
        loss_fn: ``(model, batch, rng) -> (loss, metrics)``: the scalar training loss of a batch
            (the model is in training mode) and a dict of scalar metrics to log beside it.
        eval_fn: ``(model, batch) -> {name: per-example values}``; the loop averages each over the
            split and logs it as ``<split>_<name>``.
    """

    model: nnx.Module
    train_data: Mapping[str, np.ndarray]
    eval_data: Mapping[str, Mapping[str, np.ndarray]]
    loss_fn: Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    eval_fn: Callable[[nnx.Module, Batch], dict[str, jax.Array]]

    @property
    def num_train(self) -> int:
        return len(next(iter(self.train_data.values())))


def build_task(config: ml_collections.ConfigDict) -> Task:
    """Builds the task of the experiment named by ``config.experiment``."""
    name = config.experiment
    if name not in EXPERIMENTS:
        raise UserError(
            f"Unknown experiment {name!r} in config.experiment: expected one of "
            f"{list(EXPERIMENTS)}. Start from a config in configs/ rather than writing one."
        )
    module: Any = importlib.import_module(f"lnexp.experiments.{name}")
    return module.build_task(config)
