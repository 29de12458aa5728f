"""The blocks every config in configs/ shares: the loop's top-level fields (with the
computation dtype and float16's loss scaling), the optimizer (with its learning-rate schedule,
weight decay and the table of tuned rates :mod:`lnexp.reporting.tuning` reads), the checkpoints
and the MNIST data.

Not a config itself. A config file is loaded by path (``configs/`` is not a package), so it
imports this file by path too::

    from lnexp.config import import_file

    common = import_file(Path(__file__).with_name("common.py"))
"""

from collections.abc import Sequence

import ml_collections
from ml_collections import config_dict


def loop_fields(
    config: ml_collections.ConfigDict,
    *,
    num_epochs: int,
    batch_size: int,
    steps_per_call: int,
    eval_batch_size: int,
) -> None:
    """Sets the training loop's top-level fields of ``config`` (seed 0, float32).

    ``dtype`` is the computation dtype of activations and matrix products (``'float32'``,
    ``'bfloat16'`` or ``'float16'``); parameters, optimizer state, normalization statistics and
    the loss stay float32 whatever it is. ``loss_scale`` is read only with ``'float16'``
    (:mod:`lnexp.training.loss_scale`).
    """
    config.seed = 0
    config.num_epochs = num_epochs
    config.batch_size = batch_size
    config.steps_per_call = steps_per_call  # Training steps fused into one jitted call.
    config.eval_batch_size = eval_batch_size  # Examples per step of the evaluation passes.
    config.log_every_s = 30.0  # Progress line period when stderr is not a terminal.
    # float32 | bfloat16 | float16: activations and matrix products (parameters, optimizer state,
    # normalization statistics and the loss stay float32).
    config.dtype = "float32"
    config.loss_scale = loss_scale()


def loss_scale() -> ml_collections.ConfigDict:
    """float16's dynamic loss scaling (:class:`lnexp.training.loss_scale.DynamicLossScale`): the
    loss is multiplied by ``scale`` before the gradient, the gradients divided by it after; a step
    whose gradients overflow is skipped and the scale divided by ``factor``, and after
    ``growth_interval`` finite steps in a row it is multiplied by ``factor``. Unused with
    float32 and bfloat16 (bfloat16 has float32's range)."""
    block = ml_collections.ConfigDict()
    block.initial = 2.0**15  # The scale of the first step.
    block.growth_interval = 2000  # Finite steps in a row before the scale grows.
    block.factor = 2.0  # The scale's step up (after growth_interval) and down (on overflow).
    # An overflow at a scale at or below this stops the run (float16 cannot train it).
    block.minimum = 1.0
    return block


def optimizer(learning_rate: float, grad_clip_norm: float = 0.0) -> ml_collections.ConfigDict:
    """Adam with its usual betas and epsilon at a constant ``learning_rate``.

    :func:`lnexp.training.optimizer.make_optimizer` builds it. The defaults of the schedule and
    weight-decay fields keep plain Adam at a constant rate (bitwise the optimizer of the runs
    from before those fields existed).

    Fields:
        name: ``'adam'``, ``'adamw'`` (Adam with decoupled weight decay, optax's ``adamw``) or
            ``'sgd'`` (with ``momentum``).
        learning_rate: The peak learning rate (``None`` with ``tuned_rates``: looked up when a
            run starts).
        b1, b2, eps: Adam's moment decays and epsilon (adam and adamw).
        momentum: SGD's momentum (0: none).
        grad_clip_norm: Clip the global gradient norm to this before the update (0: no clip).
        schedule: ``'constant'`` (the peak rate after the warmup) or ``'cosine'`` (a cosine
            decay from the peak to ``end_learning_rate_factor * learning_rate`` over
            ``decay_steps`` steps after the warmup, then that final rate).
        warmup_steps: Steps of linear warmup from 0 (at step 0) to the peak rate (0: none).
        decay_steps: Steps of the cosine decay after the warmup; ``None``: until the end of
            training (the run's total steps minus ``warmup_steps``). Cosine only.
        end_learning_rate_factor: The cosine's final rate as a fraction of the peak rate.
        weight_decay: AdamW's decoupled weight decay (multiplied by the current learning rate,
            as in PyTorch's ``AdamW``); only with ``name='adamw'``; 0: none.
        decay_matrices_only: Decay only parameters with 2 or more dimensions (kernels,
            embeddings), not 1-D ones (biases, normalization gains and biases), as is usual for
            Transformers; ``False``: decay every parameter.
    """
    opt = ml_collections.ConfigDict()
    opt.name = "adam"  # adam | adamw | sgd
    opt.learning_rate = learning_rate  # The peak rate, reached after the warmup.
    opt.b1 = 0.9
    opt.b2 = 0.999
    opt.eps = 1e-8
    opt.momentum = 0.0  # sgd only
    opt.grad_clip_norm = grad_clip_norm  # Clip the global gradient norm; 0 = no clipping.
    opt.schedule = "constant"  # constant | cosine: after the warmup.
    opt.warmup_steps = 0  # Linear warmup from 0 to learning_rate; 0 = none.
    # Steps of the cosine decay after the warmup; None = until the last step of training.
    opt.decay_steps = config_dict.placeholder(int)
    opt.end_learning_rate_factor = 0.0  # The cosine's final rate / learning_rate.
    opt.weight_decay = 0.0  # adamw only; multiplied by the current learning rate. 0 = none.
    opt.decay_matrices_only = True  # Decay >= 2-D parameters only (not biases, norm gains).
    return opt


def use_tuned_rates(
    opt: ml_collections.ConfigDict, table: Sequence[tuple[str, float]]
) -> ml_collections.ConfigDict:
    """The learning rate looked up per configuration in ``table`` when a run starts.

    ``table`` holds ``(condition, rate)`` pairs such as ``('model.norm=layer,batch_size=4',
    1e-4)``; :func:`lnexp.config.resolve_learning_rate` reads it while ``learning_rate`` is
    ``None`` (a rate given on the command line wins).
    """
    opt.learning_rate = config_dict.placeholder(float)
    opt.tuned_rates = tuple(table)
    return opt


def checkpoint(keep: int = 3) -> ml_collections.ConfigDict:
    """Checkpoints after every epoch, the last ``keep`` kept."""
    block = ml_collections.ConfigDict()
    block.keep = keep  # Most recent checkpoints kept.
    # Also keep every checkpoint whose step is a multiple of this (a long run's milestones).
    block.keep_every_steps = config_dict.placeholder(int)
    block.every_epochs = 1
    return block


def mnist_data() -> ml_collections.ConfigDict:
    """MNIST from the data cache (downloaded and checked on first use), TFDS, or a directory."""
    data = ml_collections.ConfigDict()
    # cache: the four MNIST IDX files in $LNEXP_DATA/mnist (else ~/.cache/lnexp/data/mnist),
    # downloaded from data.url and checked on first use | tfds: TFDS's "mnist".
    data.source = "cache"
    data.url = "https://storage.googleapis.com/cvdf-datasets/mnist/"  # + a fallback.
    # Your own directory with the four IDX files (.gz or not) instead; nothing is downloaded.
    data.dir = config_dict.placeholder(str)
    data.limit_train = config_dict.placeholder(int)  # Train on a prefix (smoke runs).
    return data
