"""Permutation-invariant MNIST (paper Section 6.1, Fig. 6): a 784-1000-1000-10 ReLU MLP."""

from __future__ import annotations

import ml_collections
from flax import nnx

from lnexp.data.mnist import load_mnist, pixels_to_unit_interval
from lnexp.errors import UserError
from lnexp.experiments import Task
from lnexp.experiments.classification import classification_fns
from lnexp.models.initializers import get_initializer
from lnexp.models.mlp import MLP
from lnexp.norms import NORMS

# Batch norm uses the unbiased (1/(n-1)) variance at batch sizes up to this when
# config.model.bn_unbiased is None; the paper does so at batch size 4.
UNBIASED_BN_MAX_BATCH = 16


def norm_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The keyword arguments of the normalizers ``config.model`` asks for."""
    model = config.model
    if model.norm in ("layer", "batch", "rms"):
        kwargs = {"epsilon": model.epsilon}
    else:
        kwargs = {}
    if model.norm == "batch":
        unbiased = model.bn_unbiased
        if unbiased is None:
            unbiased = config.batch_size <= UNBIASED_BN_MAX_BATCH
        kwargs.update(unbiased=unbiased, momentum=model.bn_momentum)
    return kwargs


def build_model(config: ml_collections.ConfigDict, rngs: nnx.Rngs) -> MLP:
    model = config.model
    if model.norm not in NORMS:
        raise UserError(
            f"Unknown normalization {model.norm!r} in config.model.norm: expected one of "
            f"{list(NORMS)}."
        )
    return MLP(
        (784, *model.hidden_sizes, 10),
        norm=model.norm,
        normalize_logits=model.normalize_logits,
        kernel_init=get_initializer(model.kernel_init),
        rngs=rngs,
        **norm_kwargs(config),
    )


loss_fn, eval_fn = classification_fns(pixels_to_unit_interval)


def build_task(config: ml_collections.ConfigDict) -> Task:
    data = load_mnist(config.data.dir, limit_train=config.data.limit_train)
    model = build_model(config, nnx.Rngs(config.seed))
    if config.model.norm == "weight" and config.model.weight_norm_data_init:
        n = min(config.model.data_init_examples, len(data["train"]["label"]))
        model.data_dependent_init(pixels_to_unit_interval(data["train"]["image"][:n]))
    return Task(
        model=model,
        train_data=data["train"],
        eval_data={"train": data["train"], "valid": data["valid"], "test": data["test"]},
        loss_fn=loss_fn,
        eval_fn=eval_fn,
    )
