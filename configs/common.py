"""The blocks every config in configs/ shares: the loop's top-level fields, the optimizer (with
the table of tuned rates :mod:`lnexp.reporting.tuning` reads), the checkpoints and the MNIST data.

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
    """Sets the training loop's top-level fields of ``config`` (seed 0)."""
    config.seed = 0
    config.num_epochs = num_epochs
    config.batch_size = batch_size
    config.steps_per_call = steps_per_call  # Training steps fused into one jitted call.
    config.eval_batch_size = eval_batch_size  # Examples per step of the evaluation passes.
    config.log_every_s = 30.0  # Progress line period when stderr is not a terminal.


def optimizer(learning_rate: float, grad_clip_norm: float = 0.0) -> ml_collections.ConfigDict:
    """Adam with its usual betas and epsilon (``name='sgd'`` for SGD with ``momentum``)."""
    opt = ml_collections.ConfigDict()
    opt.name = "adam"  # adam | sgd
    opt.learning_rate = learning_rate
    opt.b1 = 0.9
    opt.b2 = 0.999
    opt.eps = 1e-8
    opt.momentum = 0.0  # sgd only
    opt.grad_clip_norm = grad_clip_norm  # Clip the global gradient norm; 0 = no clipping.
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
