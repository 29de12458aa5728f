"""Sequential MNIST: a recurrent cell reads each image as 28 rows of 28 pixels."""

from __future__ import annotations

import jax
import ml_collections
from flax import nnx

from lnexp.config_ranges import Choice
from lnexp.data.mnist import load_mnist, pixels_to_unit_interval
from lnexp.errors import UserError, config_key
from lnexp.models.initializers import INITIALIZERS, get_initializer
from lnexp.models.recurrent import CELLS, RecurrentClassifier
from lnexp.studies import Task, compute_dtype
from lnexp.studies.classification import classification_fns

# Pixel mean and standard deviation of the MNIST training images (in [0, 1] units).
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


def rows(images: jax.Array) -> jax.Array:
    """Flat uint8 images ``(batch, 784)`` -> standardized sequences of rows ``(batch, 28, 28)``.

    Standardized rather than in [0, 1]: with blank (all-zero) top rows, a zero initial state and
    zero biases, every layer-normalized vector of the first steps is exactly zero, and layer norm
    multiplies the gradient through a zero-variance input by ``1/sqrt(epsilon)`` (about 316).
    Over a few blank rows the LN-LSTM's gradient then overflows float32 (its seqmnist run turned
    NaN after 5 steps); standardized blank rows are not zero, and the gradient stays small
    (``tests/test_experiments.py``).
    """
    x = (pixels_to_unit_interval(images) - PIXEL_MEAN) / PIXEL_STD
    return x.reshape(images.shape[0], 28, 28)


loss_fn, eval_fn = classification_fns(rows)

CHOICES = {
    "model.cell": Choice(tuple(CELLS), "the recurrent cell"),
    # Every cell's (the LSTM's 'cell' too: the GRU and simple cells refuse it when built).
    "model.norm": Choice(CELLS["lstm"].accepted_norms(), "the cell's normalization"),
    "model.kernel_init": Choice(tuple(INITIALIZERS), "the input weights' initializer"),
    "model.recurrent_kernel_init": Choice(
        tuple(INITIALIZERS), "the recurrent weights' initializer"
    ),
}
"""The names of this study's string fields (:func:`lnexp.config_ranges.check_ranges`)."""

REPORT_METRIC = "test_error"
"""What ``scripts/compare.py`` tabulates unless told (:func:`lnexp.studies.report_metrics`)."""
REPORT_METRICS = ("train_nll", "test_error")
"""The metrics it draws, one row of the figure each, unless told."""


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> RecurrentClassifier:
    model = config.model
    if model.cell not in CELLS:
        raise UserError(
            f"Unknown cell {model.cell!r} in config.model.cell: expected one of {sorted(CELLS)}."
        )
    with config_key("config.model.norm"):  # The cell says which norms it takes.
        return RecurrentClassifier(
            28,
            model.hidden_size,
            10,
            cell=model.cell,
            norm=model.norm,
            unroll=model.unroll,
            precompute_inputs=model.precompute_inputs,
            kernel_init=get_initializer(model.kernel_init),
            recurrent_kernel_init=get_initializer(model.recurrent_kernel_init),
            dtype=compute_dtype(config),
            rngs=rngs,
        )


def build_task(config: ml_collections.ConfigDict) -> Task:
    data = load_mnist(
        config.data.dir,
        limit_train=config.data.limit_train,
        source=config.data.get("source", "cache"),
        url=config.data.get("url"),
    )
    return Task(
        model=build_model(config, nnx.Rngs(config.seed)),
        train_data=data["train"],
        eval_data={"train": data["train"], "valid": data["valid"], "test": data["test"]},
        loss_fn=loss_fn,
        eval_fn=eval_fn,
    )
