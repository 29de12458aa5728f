"""DRAW on binarized MNIST, the paper's Fig. 4: baseline vs layer norm on the LSTMs' cell state.

Run the CPU comparison (see the README's DRAW section for what it costs and how it differs
from the paper; MNIST from the data cache or --config.data.dir=DIR, binarized as
lnexp/data/binarized_mnist.py says, or Larochelle & Murray's fixed binarization with
--config.data.binarized_dir=DIR)::

    python scripts/compare.py --config configs/draw.py --workdir runs/draw \\
        --grid model.norm=none,cell --metric test_bound --metrics test_bound

On 2 idle CPU cores an epoch of training takes about a minute (``scripts/bench.py --sections
draw``), a run of 20 epochs about 20 minutes plus evaluation. What it gave (``results/draw``,
seed 0): test bound at epoch 20, baseline 107.09 nats, LN 97.29; LN reached the baseline's final
bound at epoch 13.

Then the pictures of a run (samples from the prior, the canvas over the glimpses)::

    python -m lnexp.studies.draw.pictures --workdir runs/draw/model.norm=cell/seed=0

``configs/draw.py:paper`` is the paper's setting (64 glimpses, 256 LSTM units, 200 epochs of
50,000 images at batch 128, Adam's defaults): for an accelerator (3.6 minutes an epoch, 12 hours
a run on the 2 CPU cores). ``:tiny`` is a smoke test.
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from lnexp.config import import_file

common = import_file(Path(__file__).with_name("common.py"))

VARIANTS = ("paper", "tiny")
"""The named variants (``configs/draw.py:<variant>``); without one, the CPU protocol."""


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The CPU protocol; ``arg='paper'``: the paper's setting; ``arg='tiny'``: a smoke test."""
    if arg not in (None, "", *VARIANTS):
        raise ValueError(f"Unknown variant {arg!r} of configs/draw.py: expected one of {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.experiment = "draw"
    common.loop_fields(
        config, num_epochs=20, batch_size=128, steps_per_call=50, eval_batch_size=1000
    )
    # Steps per evaluation period; None: an epoch is one pass over the training images.
    config.steps_per_epoch = config_dict.placeholder(int)

    config.model = ml_collections.ConfigDict()
    # none | cell (LN on c_t inside the output tanh: the paper's DRAW) | layer (full LN-LSTM)
    config.model.norm = "cell"
    config.model.glimpses = 16  # T; the paper: 64.
    config.model.hidden_size = 256  # Units of each LSTM (the paper: 256).
    config.model.latent_size = 100  # Z (Gregor et al.'s MNIST setting).
    config.model.attention = True  # Gaussian read/write filterbanks; False: whole image.
    config.model.read_size = 2  # N of the read grid (Gregor et al.: 2 x 2 on MNIST).
    config.model.write_size = 5  # N of the write grid (5 x 5).
    config.model.epsilon = 1e-5  # The layer norms' epsilon.

    config.data = common.mnist_data()
    # Larochelle & Murray's binarized_mnist_{train,valid,test}.amat; unset: binarize MNIST.
    config.data.binarized_dir = config_dict.placeholder(str)
    config.data.binarize_seed = 0  # The validation and test sets' one draw (IDX source).
    config.optimizer = common.optimizer(learning_rate=1e-3)  # "the default setting of Adam"
    config.checkpoint = common.checkpoint(keep=2)

    if arg == "paper":
        config.num_epochs = 200
        config.model.glimpses = 64
    elif arg == "tiny":
        config.num_epochs = 2
        config.steps_per_epoch = 4
        config.batch_size = 8
        config.steps_per_call = 2
        config.eval_batch_size = 50
        config.model.glimpses = 3
        config.model.hidden_size = 16
        config.model.latent_size = 4
        config.data.limit_train = 200
        config.optimizer.learning_rate = 1e-2
    return config
