"""The studies: one folder per experiment, and the small interface the training loop consumes.

Each study is a package ``lnexp/studies/<name>/`` (``<name>`` as ``config.experiment`` names it,
listed in :data:`EXPERIMENTS`) holding everything that belongs to that experiment: its task
(``task.py``), its reports or claims, its pictures, its benchmark sections, its sampler. The
shared machinery (:mod:`lnexp.norms`, :mod:`lnexp.cells`, :mod:`lnexp.models`,
:mod:`lnexp.data`, :mod:`lnexp.training`, :mod:`lnexp.reporting`, :mod:`lnexp.bench`) holds
nothing specific to one study.

A study's ``task`` module exposes ``build_task(config) -> Task``: a freshly initialized model,
the data as NumPy arrays, and the training and evaluation functions. :mod:`lnexp.training` knows
nothing else about it.

A task with curves in the paper also exposes ``REFERENCE_KEYS`` (the config fields that name a
curve, e.g. ``('batch_size', 'model.norm')``) and ``reference_curves() -> {values of those
fields: {metric: values, '<metric>_epoch': epochs, ...}}``; the reports
(:mod:`lnexp.reporting`) draw and tabulate them through :func:`reference_curve` without knowing
the study. One with a table in the paper exposes ``reference_table()`` (read by the report that
prints it, e.g. :mod:`lnexp.studies.skipthought.report`).

Every task module names what a grid of its runs is reported by (``scripts/compare.py``, unless
its flags say otherwise): ``REPORT_METRIC``, the metric of the table, and ``REPORT_METRICS``,
the rows of the figure (:func:`report_metrics`).

Every task's ``build_model`` builds its model in the computation dtype of ``config.dtype``
(:func:`compute_dtype`; float32 parameters whatever it is) and its loss takes the cross-entropy
of float32 logits.

A new study is one new folder here (with its ``task.py``), one config file in ``configs/`` and
its name in :data:`EXPERIMENTS`; a benchmark section of it is also listed in
:mod:`lnexp.bench.sections`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from lnexp.config_ranges import check_ranges
from lnexp.errors import UserError

Batch = Mapping[str, jax.Array]

EXPERIMENTS = ("pimnist", "seqmnist", "skipthought", "transformer", "draw")
"""Names ``config.experiment`` accepts; each is a study folder of this package."""


def compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
    """The dtype of activations and matrix products, ``config.dtype`` (float32 in run
    directories written before the field existed)."""
    return jnp.dtype(config.get("dtype", "float32"))


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
        constants: Arrays placed on the devices once (replicated) that batches are built from,
            e.g. a corpus's sentences when the examples are indices into it.
        make_batch: ``(constants, examples, width) -> batch``: turns the gathered examples into
            the batch ``loss_fn``/``eval_fn`` take; ``None`` uses the examples as they are.
            ``width`` is the padded sequence length of the chunk (``None`` in evaluation).
        lengths: Per-training-example sequence lengths: batches then group examples of similar
            length (see :mod:`lnexp.training.batches`) and ``make_batch`` gets their width.
        summarize_eval: ``{name: split mean} -> {name: value}``: what is logged per split
            (e.g. perplexity from summed token NLLs and token counts); ``None`` logs the means.
        files: Name -> text written into the workdir (e.g. a vocabulary), for later use of the
            trained model without the data.
        unit: What one example is, for the progress line (``'sentences'``).
        tokens_per_example: Tokens a training example holds when that is fixed (a language
            model's window): the records then also give ``tokens_per_sec``.
    """

    model: nnx.Module
    train_data: Mapping[str, np.ndarray]
    eval_data: Mapping[str, Mapping[str, np.ndarray]]
    loss_fn: Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
    eval_fn: Callable[[nnx.Module, Batch], dict[str, jax.Array]]
    constants: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    make_batch: Callable[[Batch, Batch, int | None], Batch] | None = None
    lengths: np.ndarray | None = None
    summarize_eval: Callable[[dict[str, float]], dict[str, float]] | None = None
    files: Mapping[str, str] = dataclasses.field(default_factory=dict)
    unit: str = "examples"
    tokens_per_example: int | None = None

    @property
    def num_train(self) -> int:
        return len(next(iter(self.train_data.values())))


def _task_module(config: ml_collections.ConfigDict) -> Any:
    name = config.experiment
    if name not in EXPERIMENTS:
        raise UserError(
            f"Unknown experiment {name!r} in config.experiment: expected one of "
            f"{list(EXPERIMENTS)}. Start from a config in configs/ rather than writing one."
        )
    return importlib.import_module(f"lnexp.studies.{name}.task")


def build_task(config: ml_collections.ConfigDict) -> Task:
    """Builds the task of the experiment named by ``config.experiment``."""
    return _task_module(config).build_task(config)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Refuses a config the experiment cannot run, before any data is read or any run directory
    created: every field against its declaration (:func:`lnexp.config_ranges.check_ranges`),
    then the study's model built abstractly (``nnx.eval_shape``: nothing allocated), so that
    what its layers refuse (a width the heads do not divide, a norm a cell does not take) is
    refused now too. A task module whose model depends on the data (a vocabulary) gives
    stand-in sizes for it in ``PREVIEW_SIZES``.

    Raises:
        UserError: naming the field and the fix.
    """
    check_ranges(config)
    module = _task_module(config)
    sizes = getattr(module, "PREVIEW_SIZES", {})
    try:
        nnx.eval_shape(lambda: module.build_model(config, rngs=nnx.Rngs(0), **sizes))
    except UserError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise UserError(
            f"config.model: the model cannot be built from these fields ({e}). Fix the field "
            "with --config.model.KEY=VALUE (the config file documents each)."
        ) from None


def report_metrics(experiments: Collection[Any]) -> tuple[str, tuple[str, ...]]:
    """``(REPORT_METRIC, REPORT_METRICS)`` of the study the runs belong to (``experiments``: the
    ``config.experiment`` of each run): what a report tabulates and draws unless told.

    Raises:
        UserError: when the runs are of several studies, or of none this package knows.
    """
    names = sorted({str(e) for e in experiments})
    if len(names) != 1 or names[0] not in EXPERIMENTS:
        raise UserError(
            f"The runs are of the experiment(s) {names}, so there is no default metric to report: "
            "name them with --metric=NAME --metrics=NAME,NAME (or report one study's runs)."
        )
    module = importlib.import_module(f"lnexp.studies.{names[0]}.task")
    return module.REPORT_METRIC, tuple(module.REPORT_METRICS)


def _reference_module(config: Mapping[str, Any]) -> Any:
    """The experiment module of a run's flattened config if it has reference curves."""
    name = config.get("experiment")
    if name not in EXPERIMENTS:
        return None
    module = importlib.import_module(f"lnexp.studies.{name}.task")
    return module if hasattr(module, "reference_curves") else None


def reference_key(config: Mapping[str, Any]) -> tuple | None:
    """``(experiment, values of its REFERENCE_KEYS)`` of a run's flattened config
    (``{'model.norm': ..., ...}``), or ``None`` for an experiment without reference curves."""
    module = _reference_module(config)
    if module is None:
        return None
    return (config["experiment"], tuple(config.get(k) for k in module.REFERENCE_KEYS))


def reference_curve(config: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """The paper's curve for a run's flattened config, ``{metric: values, '<metric>_epoch':
    epochs, ...}``, or ``None`` when the paper has none for it."""
    key = reference_key(config)
    if key is None:
        return None
    return _reference_module(config).reference_curves().get(key[1])
