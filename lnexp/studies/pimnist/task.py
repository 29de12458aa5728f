"""Permutation-invariant MNIST (paper Section 6.1, Fig. 6): a 784-1000-1000-10 ReLU MLP, and
the paper's Fig. 6 curves it is compared with."""

from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from importlib import resources

import jax
import ml_collections
import numpy as np
from flax import nnx

from lnexp import norms
from lnexp.config_ranges import Choice, check_choice
from lnexp.data.mnist import load_mnist, pixels_to_unit_interval
from lnexp.errors import UserError, config_key
from lnexp.models.initializers import INITIALIZERS, get_initializer
from lnexp.models.mlp import MLP
from lnexp.studies import Task, compute_dtype
from lnexp.studies.classification import classification_fns

# Batch norm uses the unbiased (1/(n-1)) variance at batch sizes up to this when
# config.model.bn_unbiased is None; the paper does so at batch size 4.
UNBIASED_BN_MAX_BATCH = 16

# The config.model field of each hyperparameter named differently there (batch norm's own
# settings); every other hyperparameter is config.model.<its name>, e.g. config.model.epsilon.
CONFIG_FIELDS = {"momentum": "bn_momentum", "unbiased": "bn_unbiased"}


def norm_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The hyperparameters of ``config.model.norm``'s method, each from its config field.

    The method's :attr:`lnexp.norms.NormMethod.hyperparameters` say which: ``epsilon`` for
    layer, batch and RMS norm, ``momentum`` and ``unbiased`` too for batch norm. A field the
    method does not take is not passed, by design (the one ``config.model.epsilon`` serves every
    method; ``'none'`` and weight norm take none). A hyperparameter without a config field is an
    error, never a silent default. ``bn_unbiased=None`` means unbiased at batch sizes up to
    :data:`UNBIASED_BN_MAX_BATCH`.
    """
    model = config.model
    with config_key("config.model.norm"):
        hyperparameters = norms.method(model.norm).hyperparameters
    kwargs = {}
    for name in hyperparameters:
        field = CONFIG_FIELDS.get(name, name)
        if field not in model:
            raise UserError(
                f"config.model.norm={model.norm!r} takes the hyperparameter {name!r}, but "
                f"config.model has no field {field!r}: add one to the config file."
            )
        kwargs[name] = model[field]
    if "unbiased" in kwargs and kwargs["unbiased"] is None:
        kwargs["unbiased"] = config.batch_size <= UNBIASED_BN_MAX_BATCH
    return kwargs


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> MLP:
    model = config.model
    with config_key("config.model.norm"):
        return MLP(
            (784, *model.hidden_sizes, 10),
            norm=model.norm,
            normalize_logits=model.normalize_logits,
            kernel_init=get_initializer(model.kernel_init),
            dtype=compute_dtype(config),
            rngs=rngs,
            **norm_kwargs(config),
        )


INPUT_SCALINGS = ("unit", "standardize")
"""``config.data.input_scaling``: pixels in [0, 1], or standardized per pixel (see
:func:`pixel_standardizer`)."""

CHOICES = {
    "model.norm": Choice(lambda: tuple(norms.REGISTRY), "the MLP's normalization"),
    "model.kernel_init": Choice(tuple(INITIALIZERS), "the weight initializer"),
    "data.input_scaling": Choice(INPUT_SCALINGS, "MNIST's input scaling"),
}
"""The names of this study's string fields (:func:`lnexp.config_ranges.check_ranges`)."""

REPORT_METRIC = "test_error"
"""What ``scripts/compare.py`` tabulates unless told (:func:`lnexp.studies.report_metrics`)."""
REPORT_METRICS = ("train_nll", "test_error")
"""The metrics it draws, one row of the figure each, unless told."""

STD_FLOOR = 0.1
"""The smallest per-pixel standard deviation :func:`pixel_standardizer` divides by (pixels in
[0, 1]). MNIST's border pixels are 0 in (nearly) every training image: dividing by their own
standard deviation would blow a rare nonzero value up to thousands; the floor keeps any input
within 10 / 0.1 = 10 standard units, as sklearn's ``StandardScaler`` keeps constant features at
unit scale."""

# The classifier of [0, 1] pixels (the paper's input; tests patch these to inject faults).
loss_fn, eval_fn = classification_fns(pixels_to_unit_interval)


def pixel_standardizer(train_images: np.ndarray) -> Callable[[jax.Array], jax.Array]:
    """Per-pixel standardization fitted on ``train_images`` (uint8, ``(n, 784)``).

    ``x -> (x / 255 - mean) / max(std, STD_FLOOR)`` with the mean and standard deviation of each
    pixel over the training split (never the validation or test images). Works on NumPy arrays
    and inside jit, like :func:`lnexp.data.mnist.pixels_to_unit_interval`.
    """
    unit = pixels_to_unit_interval(np.asarray(train_images)).astype(np.float64)
    mean = unit.mean(axis=0).astype(np.float32)
    std = np.maximum(unit.std(axis=0), STD_FLOOR).astype(np.float32)

    def standardize(images):
        return (pixels_to_unit_interval(images) - mean) / std

    return standardize


def input_fns(config: ml_collections.ConfigDict, train_images: np.ndarray):
    """``(to_inputs, loss_fn, eval_fn)`` for ``config.data.input_scaling``."""
    scaling = config.data.get("input_scaling", "unit")
    check_choice("data.input_scaling", scaling, CHOICES)
    if scaling == "unit":
        return pixels_to_unit_interval, loss_fn, eval_fn
    to_inputs = pixel_standardizer(train_images)
    return (to_inputs, *classification_fns(to_inputs))


def build_task(config: ml_collections.ConfigDict) -> Task:
    data = load_mnist(
        config.data.dir,
        limit_train=config.data.limit_train,
        source=config.data.get("source", "cache"),
        url=config.data.get("url"),
    )
    to_inputs, task_loss_fn, task_eval_fn = input_fns(config, data["train"]["image"])
    model = build_model(config, nnx.Rngs(config.seed))
    if norms.method(config.model.norm).data_init and config.model.weight_norm_data_init:
        n = min(config.model.data_init_examples, len(data["train"]["label"]))
        model.data_dependent_init(to_inputs(data["train"]["image"][:n]))
    return Task(
        model=model,
        train_data=data["train"],
        eval_data={"train": data["train"], "valid": data["valid"], "test": data["test"]},
        loss_fn=task_loss_fn,
        eval_fn=task_eval_fn,
    )


# --------------------------------------------------------------------------------------------
# The paper's curves (lnexp.studies.reference_curve, the reports and the claims read them).

REFERENCE_KEYS = ("batch_size", "model.norm")
"""The config fields that name one of the paper's curves: ``(batch_size, norm)``."""

# Method names in the paper's curves -> config.model.norm; panel names -> lnexp's metric names.
PAPER_METHODS = {"Base": "none", "BN": "batch", "LN": "layer"}
PAPER_PANELS = {"train_NLL": "train_nll", "test_err": "test_error"}


@functools.cache
def _read_fig6() -> dict[tuple[int, str], dict[str, np.ndarray]]:
    text = resources.files("lnexp").joinpath("reference/paper_fig6_pimnist.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    curves: dict[tuple[int, str], dict[str, list[float]]] = {}
    for row in rows:
        key = (int(row["batch_size"]), PAPER_METHODS[row["method"]])
        metric = PAPER_PANELS[row["panel"]]
        curve = curves.setdefault(key, {})
        curve.setdefault(f"{metric}_epoch", []).append(float(row["epoch"]))
        curve.setdefault(metric, []).append(float(row["value"]))
        curve.setdefault(f"{metric}_lo", []).append(float(row["band_lo"]))
        curve.setdefault(f"{metric}_hi", []).append(float(row["band_hi"]))
    return {k: {m: np.asarray(v) for m, v in c.items()} for k, c in curves.items()}


def reference_curves() -> dict[tuple[int, str], dict[str, np.ndarray]]:
    """The paper's Fig. 6 curves, ``(batch_size, norm) -> {'<metric>_epoch', metric,
    '<metric>_lo', '<metric>_hi'}`` for ``train_nll`` and ``test_error`` (a fresh copy).

    The numbers ship in ``lnexp/reference/paper_fig6_pimnist.csv``, recovered from the vector
    paths of Fig. 6 in arXiv:1607.06450v1 (about ±0.01 % test error; ``*_lo``/``*_hi`` are the
    edges of the figure's shaded regions, whose meaning the paper does not state).
    """
    return {k: {m: a.copy() for m, a in c.items()} for k, c in _read_fig6().items()}
