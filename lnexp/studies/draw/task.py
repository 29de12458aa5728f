"""DRAW on binarized MNIST (paper Section 6.4, Fig. 4): the test variational bound in nats of a
baseline and a layer-normalized DRAW, and the paper's curves they are compared with.

Training images are drawn binary anew at every visit from ``(seed, step)`` (the loop's key of the
step; so an epoch's draws are fixed by the seed and the epoch and a resumed run draws what the
uninterrupted one drew) unless the data are Larochelle & Murray's fixed binarization, which such
a draw leaves unchanged (:mod:`lnexp.data.binarized_mnist`). Evaluation draws each image's noise
``eps`` from a key of its index alone (:data:`EVAL_NOISE_SEED`), so every epoch and every model
is evaluated with the same noise and the bounds differ only by the models.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lnexp.cells import LSTMCell
from lnexp.config_ranges import Choice
from lnexp.data.binarized_mnist import bernoulli_pixels, load_binarized_mnist
from lnexp.errors import UserError, config_key
from lnexp.models.draw import DRAW, negative_bound
from lnexp.norms import UnknownNormError
from lnexp.studies import Batch, Task, compute_dtype

EVAL_NOISE_SEED = 1_000_003
"""The key of every evaluation's noise (folded with each image's index)."""

CHOICES = {"model.norm": Choice(LSTMCell.accepted_norms(), "the LSTM cells' normalization")}
"""The names of this study's string fields (:func:`lnexp.config_ranges.check_ranges`)."""

REPORT_METRIC = "test_bound"
"""What ``scripts/compare.py`` tabulates unless told (:func:`lnexp.studies.report_metrics`)."""
REPORT_METRICS = ("train_loss", "test_bound")
"""The metrics it draws, one row of the figure each, unless told."""


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> DRAW:
    m = config.model
    with config_key("config.model.norm"):  # The cells name the norms they accept.
        try:
            return DRAW(
                glimpses=m.glimpses,
                hidden_size=m.hidden_size,
                latent_size=m.latent_size,
                attention=m.attention,
                read_size=m.read_size,
                write_size=m.write_size,
                norm=m.norm,
                epsilon=m.epsilon,
                dtype=compute_dtype(config),
                rngs=rngs,
            )
        except UnknownNormError:
            raise
        except ValueError as e:
            raise UserError(f"config.model: {e} Fix the field on the command line.") from e


def loss_fn(model: DRAW, batch: Batch, rng: jax.Array):
    """The mean negative bound (nats per image) of a fresh binary draw of the batch."""
    pixels_key, noise_key = jax.random.split(rng)
    x = bernoulli_pixels(pixels_key, batch["image"])
    noise = jax.random.normal(noise_key, (model.glimpses, len(x), model.latent_size))
    bound, recon, kl = negative_bound(model, x, noise)
    return jnp.mean(bound), {"recon": jnp.mean(recon), "kl": jnp.mean(kl)}


def eval_noise(model: DRAW, index: jax.Array) -> jax.Array:
    """``(T, batch, Z)`` noise, each image's from ``fold_in(key(EVAL_NOISE_SEED), index)``."""
    key = jax.random.key(EVAL_NOISE_SEED)
    draw = lambda i: jax.random.normal(
        jax.random.fold_in(key, i), (model.glimpses, model.latent_size)
    )
    return jnp.swapaxes(jax.vmap(draw)(index), 0, 1)


def eval_fn(model: DRAW, batch: Batch) -> dict[str, jax.Array]:
    """Per image: the negative bound (``bound``) and its two parts, in nats."""
    x = batch["image"].astype(jnp.float32) / 255  # Binary already: 0 or 1.
    bound, recon, kl = negative_bound(model, x, eval_noise(model, batch["index"]))
    return {"bound": bound, "recon": recon, "kl": kl}


def load_data(config: ml_collections.ConfigDict) -> dict[str, dict[str, np.ndarray]]:
    """The splits ``config.data`` names (:func:`lnexp.data.binarized_mnist.load_binarized_mnist`),
    saying in the log which binarization they are."""
    data = config.data
    splits, fixed = load_binarized_mnist(
        binarized_dir=data.binarized_dir,
        mnist_dir=data.dir,
        source=data.get("source", "cache"),
        url=data.get("url"),
        binarize_seed=data.binarize_seed,
        limit_train=data.limit_train,
    )
    logging.info(
        "DRAW data: %s",
        "Larochelle & Murray's fixed binarization"
        if fixed
        else "MNIST binarized here (validation/test once, training images at every visit)",
    )
    return splits


def build_task(config: ml_collections.ConfigDict) -> Task:
    splits = load_data(config)
    return Task(
        model=build_model(config, nnx.Rngs(config.seed)),
        train_data=splits["train"],
        eval_data={"valid": splits["valid"], "test": splits["test"]},
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        unit="images",
    )


# --------------------------------------------------------------------------------------------
# The paper's curves (lnexp.studies.reference_curve; the reports read them).

REFERENCE_KEYS = ("model.norm",)
"""The config field that names one of the paper's curves."""

# Method names in the paper's Fig. 4 -> config.model.norm ("WN" has no DRAW here: the cells
# take no weight norm).
PAPER_METHODS = {"Baseline": "none", "LN": "cell", "WN": "weight"}


@functools.cache
def _read_fig4() -> dict[tuple[str], dict[str, np.ndarray]]:
    text = resources.files("lnexp").joinpath("reference/paper_fig4_draw.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    curves: dict[tuple[str], dict[str, list[float]]] = {}
    for row in rows:
        curve = curves.setdefault((PAPER_METHODS[row["method"]],), {})
        curve.setdefault("test_bound_epoch", []).append(float(row["epoch"]))
        curve.setdefault("test_bound", []).append(float(row["test_bound_nats"]))
    return {k: {m: np.asarray(v) for m, v in c.items()} for k, c in curves.items()}


def reference_curves() -> dict[tuple[str], dict[str, np.ndarray]]:
    """The paper's Fig. 4, ``(norm,) -> {'test_bound_epoch', 'test_bound'}`` (a fresh copy).

    The numbers ship in ``lnexp/reference/paper_fig4_draw.csv``, recovered from the vector paths
    of Fig. 4 in arXiv:1607.06450v1 (test variational bound in nats against epochs, the first
    ~108 of the 200 the paper trained).
    """
    return {k: {m: a.copy() for m, a in c.items()} for k, c in _read_fig4().items()}
