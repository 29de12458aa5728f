"""The optimizer of a config: :func:`make_optimizer` builds optax's transformation from
``config.optimizer`` (the fields of ``configs/common.py``'s ``optimizer``), and
:func:`learning_rate_schedule` gives its learning rate at every step.

The schedule is optax's: a linear warmup from 0 at step 0 to the peak ``learning_rate`` at step
``warmup_steps`` (``optax.linear_schedule``), then the peak rate (``optax.constant_schedule``)
or a cosine decay to ``end_learning_rate_factor * learning_rate`` over ``decay_steps`` steps
(``optax.warmup_cosine_decay_schedule``, whose own ``decay_steps`` counts the warmup too), after
which the rate stays at that final value. Step ``t`` is the optimizer's count of updates, which
is the training state's ``step`` before the update (the first update is at step 0).

Weight decay (``name='adamw'``) is optax's decoupled ``adamw``: each update subtracts
``learning_rate(t) * weight_decay * param`` besides Adam's step (as PyTorch's ``AdamW``). With
``decay_matrices_only`` (the default) only parameters with 2 or more dimensions are decayed
(kernels and embeddings: in a Transformer also the position embeddings); biases and the gains
and biases of normalization layers (1-D) are not, through ``adamw``'s ``mask``. That is the usual
choice for Transformers (nanoGPT, BERT): shrinking a gain towards 0 fights the normalization
rather than regularizing.

A config with the defaults (``schedule='constant'``, ``warmup_steps=0``, ``weight_decay=0``)
gets ``optax.adam(learning_rate)`` itself, as before these fields existed: the same updates
bit for bit and the same optimizer state, so its old checkpoints restore.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from lnexp.config_ranges import check_choice
from lnexp.errors import UserError


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int | None = None
) -> optax.GradientTransformation:
    """The optax optimizer described by ``config.optimizer``.

    Args:
        config: A run's config; its ``optimizer`` block (``configs/common.py``) with a resolved
            ``learning_rate`` (:func:`lnexp.config.resolve_learning_rate`).
        total_steps: The run's number of training steps (the loop's ``num_epochs`` times its
            steps per epoch). Needed only by a cosine decay with ``decay_steps=None``; without
            it, ``num_epochs * steps_per_epoch`` when the config sets ``steps_per_epoch``.

    Returns:
        The gradient clip (when ``grad_clip_norm`` is set) chained with the optimizer.

    Raises:
        UserError: For an unknown name or schedule, weight decay with another optimizer than
            adamw, or a cosine decay whose length is unknown or not positive.
    """
    opt = config.optimizer
    check_choice("optimizer.name", opt.name)
    if opt.weight_decay and opt.name != "adamw":
        raise UserError(
            f"config.optimizer.weight_decay={opt.weight_decay!r} is set, but "
            f"config.optimizer.name={opt.name!r} has no weight decay: it is AdamW's decoupled "
            "decay. Set --config.optimizer.name=adamw, or --config.optimizer.weight_decay=0."
        )
    if total_steps is None and config.get("steps_per_epoch"):
        total_steps = config.num_epochs * config.steps_per_epoch
    rate = _rate(opt, total_steps)
    if opt.name == "adam":
        tx = optax.adam(rate, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    elif opt.name == "adamw":
        mask = matrices if opt.decay_matrices_only else None
        tx = optax.adamw(
            rate, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay, mask=mask
        )
    else:
        tx = optax.sgd(rate, momentum=opt.momentum or None)
    if opt.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx


def learning_rate_schedule(
    opt: ml_collections.ConfigDict, total_steps: int | None = None
) -> optax.Schedule:
    """The learning rate at each step (the optimizer's count of updates, from 0).

    Args:
        opt: A config's ``optimizer`` block with a resolved ``learning_rate``.
        total_steps: The run's number of training steps; needed by a cosine decay with
            ``decay_steps=None`` (until the end of training).

    Returns:
        An optax schedule: ``schedule(step)`` is the rate of the update at ``step``.

    Raises:
        UserError: For an unknown schedule, or a cosine decay whose length is unknown or not
            positive.

    Example:
        >>> opt = ml_collections.ConfigDict(dict(learning_rate=1e-3, schedule="cosine",
        ...     warmup_steps=10, decay_steps=None, end_learning_rate_factor=0.0))
        >>> schedule = learning_rate_schedule(opt, total_steps=110)
        >>> [round(float(schedule(step)), 6) for step in (0, 5, 10, 60, 110)]
        [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """
    check_choice("optimizer.schedule", opt.schedule)
    peak = opt.learning_rate
    if peak is None:
        raise UserError(
            "config.optimizer.learning_rate is None: set --config.optimizer.learning_rate=RATE "
            "(or give a config.optimizer.tuned_rates table that covers this configuration)."
        )
    warmup = opt.warmup_steps
    if opt.schedule == "cosine":
        decay = _cosine_steps(opt, total_steps)
        end = opt.end_learning_rate_factor * peak
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup, warmup + decay, end)
    constant = optax.constant_schedule(peak)
    if not warmup:
        return constant
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), constant], [warmup])


def matrices(params: Any) -> Any:
    """The weight-decay mask of ``decay_matrices_only``: ``True`` for every parameter with 2 or
    more dimensions, ``False`` for 1-D (and scalar) ones."""
    return jax.tree.map(lambda p: np.ndim(p) >= 2, params)


def _rate(opt: ml_collections.ConfigDict, total_steps: int | None) -> float | optax.Schedule:
    """The learning rate as optax takes it: the number itself for a constant rate without
    warmup (so the optimizer state holds no schedule count, as before schedules existed),
    otherwise :func:`learning_rate_schedule`."""
    schedule = learning_rate_schedule(opt, total_steps)  # Also checks the fields.
    if opt.schedule == "constant" and not opt.warmup_steps:
        return opt.learning_rate
    return schedule


def _cosine_steps(opt: ml_collections.ConfigDict, total_steps: int | None) -> int:
    """The steps of the cosine decay after the warmup."""
    if opt.decay_steps is not None:
        return opt.decay_steps
    if total_steps is None:
        raise UserError(
            "config.optimizer.decay_steps is None (decay until the end of training), but the "
            "number of training steps is not known where the optimizer is built. Set "
            "--config.optimizer.decay_steps=STEPS (the steps of the decay after the warmup)."
        )
    decay = total_steps - opt.warmup_steps
    if decay <= 0:
        raise UserError(
            f"config.optimizer.warmup_steps={opt.warmup_steps} leaves no step of the cosine "
            f"decay in the run's {total_steps} training steps. Lower the warmup, train longer "
            "(config.num_epochs), or set --config.optimizer.decay_steps=STEPS."
        )
    return decay
