"""Permutation-invariant MNIST, the paper's Fig. 6: a 784-1000-1000-10 ReLU MLP, Adam.

Run (layer norm, batch 128, 64 epochs; about 5 s an epoch on 2 CPU cores, 6 min in all; MNIST
is downloaded into the data cache on the first run, or read from --config.data.dir=DIR)::

    python -m lnexp.main --config=configs/pimnist.py --workdir=runs/ln128

Batch norm at batch size 4 (unbiased variance, as the paper)::

    python -m lnexp.main --config=configs/pimnist.py --workdir=runs/bn4 \\
        --config.model.norm=batch --config.batch_size=4

The paper leaves the learning rate and the initialization unstated. Initialization: He-normal
weights (ReLU units), zero biases, gains 1. Learning rate: Adam 3e-4, chosen on the validation
split (never test) by a sweep of {3e-4, 1e-3, 3e-3} x {none, batch, layer, weight} at batch 128,
8 epochs, seed 0, as the rate with the lowest final validation error averaged over the four
methods (1.71 %, against 1.78 % for 1e-3 and 2.02 % for 3e-3; per method the best rates were
none 3e-4, batch 3e-4, layer 3e-3, weight 1e-3, with differences of about one standard error of a
5,000-example error rate, 0.2 %). The sweep, reproducible with::

    python scripts/compare.py --config configs/pimnist.py --workdir runs/sweep \\
        --grid model.norm=none,batch,layer,weight --grid optimizer.learning_rate=3e-4,1e-3,3e-3 \\
        --config.num_epochs=8 --config.data.dir=PATH_TO_MNIST
    python scripts/compare.py --workdir runs/sweep --report --metric valid_error \\
        --columns optimizer.learning_rate

is in results/lr_sweep/ (its summary.md). Results of the full comparison are in the README.

``configs/pimnist.py:tuned`` gives each method and batch size its own Adam rate instead, chosen on
the validation split (never test) by a sweep per batch size, seed 0: batch 128 over
{1e-4, 3e-4, 1e-3, 3e-3, 1e-2} for 8 epochs (3,440 steps), batch 4 over
{3e-5, 1e-4, 3e-4, 1e-3, 3e-3} for 3 epochs (41,250 steps: more updates than 8 epochs at batch
128, and what the 2-core machine allows for 20 runs); per method the rate with the lowest
validation error averaged over the last half of the epochs (``python -m lnexp.reporting.tuning``;
one epoch alone is too noisy), and where that rate sat at an edge of the grid, the grid extended
past it (layer norm at batch 128: 3e-5, 1e-5; layer and weight norm at batch 4: 1e-5) until it
did not. The sweeps' runs and choices are in results/lr_sweep_128/ and results/lr_sweep_4/
(choice.md); commands::

    python scripts/compare.py --config configs/pimnist.py --workdir runs/sweep128 \\
        --grid model.norm=none,batch,layer,weight \\
        --grid optimizer.learning_rate=1e-4,3e-4,1e-3,3e-3,1e-2 --config.num_epochs=8 \\
        --metric valid_error --metrics train_nll,valid_error
    python scripts/compare.py --config configs/pimnist.py --workdir runs/sweep128 \\
        --grid model.norm=layer --grid optimizer.learning_rate=3e-5,1e-5 --config.num_epochs=8 \\
        --metric valid_error --metrics train_nll,valid_error
    python scripts/compare.py --config configs/pimnist.py --workdir runs/sweep4 \\
        --grid model.norm=none,batch,layer,weight \\
        --grid optimizer.learning_rate=3e-5,1e-4,3e-4,1e-3,3e-3 --config.num_epochs=3 \\
        --config.batch_size=4 --metric valid_error --metrics train_nll,valid_error
    python scripts/compare.py --config configs/pimnist.py --workdir runs/sweep4 \\
        --grid model.norm=layer,weight --grid optimizer.learning_rate=1e-5 --config.num_epochs=3 \\
        --config.batch_size=4 --metric valid_error --metrics train_nll,valid_error
    python -m lnexp.reporting.tuning --workdir runs/sweep128
    python -m lnexp.reporting.tuning --workdir runs/sweep4

Figure 6 at the tuned rates (4 methods x 2 batch sizes x 3 seeds x 64 epochs)::

    python scripts/compare.py --config configs/pimnist.py:tuned --workdir runs/fig6_tuned \\
        --grid model.norm=none,batch,layer,weight --grid batch_size=128,4 --seeds 3 --claims

``configs/pimnist.py:tiny`` is a smoke test (seconds): a 784-64-64-10 MLP, 2 evaluation periods
of 20 steps of batch 32 (``scripts/device_check.sh`` trains it on an accelerator).
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from lnexp.config import import_file

common = import_file(Path(__file__).with_name("common.py"))

VARIANTS = ("tuned", "tiny")
"""The named variants (``configs/pimnist.py:<variant>``); without one, the paper's setting."""

# Adam's rate per method and batch size, chosen on the validation split (see the docstring).
TUNED_LEARNING_RATES = (
    ("model.norm=none,batch_size=128", 3e-4),
    ("model.norm=batch,batch_size=128", 3e-4),
    ("model.norm=layer,batch_size=128", 1e-4),
    ("model.norm=weight,batch_size=128", 3e-3),
    ("model.norm=none,batch_size=4", 1e-4),
    ("model.norm=batch,batch_size=4", 1e-3),
    ("model.norm=layer,batch_size=4", 3e-5),
    ("model.norm=weight,batch_size=4", 1e-4),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The paper's setting; ``arg='tuned'``: each method and batch size at its tuned rate;
    ``arg='tiny'``: a small model for a few steps (smoke tests)."""
    if arg not in (None, "", *VARIANTS):
        raise ValueError(
            f"Unknown variant {arg!r} of configs/pimnist.py: expected one of {VARIANTS}."
        )
    config = ml_collections.ConfigDict()
    config.experiment = "pimnist"
    # The paper's curves run over 64 epochs, at batch sizes 128 and 4.
    common.loop_fields(
        config, num_epochs=64, batch_size=128, steps_per_call=500, eval_batch_size=5000
    )

    config.model = ml_collections.ConfigDict()
    config.model.norm = "layer"  # none | layer | batch | weight | rms
    config.model.hidden_sizes = (1000, 1000)
    # Normalize the logit layer too; None = the paper's placement (BN and WN yes, LN and RMS no).
    config.model.normalize_logits = config_dict.placeholder(bool)
    config.model.kernel_init = "he_normal"  # see lnexp/models/initializers.py
    config.model.epsilon = 1e-5  # LN/BN/RMS epsilon, inside the square root.
    # BN's 1/(n-1) variance; None = unbiased at batch sizes <= 16 (the paper: batch size 4).
    config.model.bn_unbiased = config_dict.placeholder(bool)
    config.model.bn_momentum = 0.99  # Running averages: r = m * r + (1 - m) * batch statistic.
    config.model.weight_norm_data_init = True  # Salimans & Kingma's data-dependent init.
    config.model.data_init_examples = 1000

    config.data = common.mnist_data()
    # unit: pixels / 255, in [0, 1] (the paper's era) | standardize: per pixel, by the training
    # split's mean and standard deviation (lnexp.studies.pimnist.task.pixel_standardizer).
    config.data.input_scaling = "unit"
    config.optimizer = common.optimizer(learning_rate=3e-4)  # Chosen on validation; see above.
    if arg == "tuned":
        common.use_tuned_rates(config.optimizer, TUNED_LEARNING_RATES)
    config.checkpoint = common.checkpoint(keep=3)
    if arg == "tiny":
        config.num_epochs = 2
        config.steps_per_epoch = 20  # An evaluation period of 20 steps, not a pass.
        config.batch_size = 32
        config.steps_per_call = 10
        config.eval_batch_size = 100
        config.model.hidden_sizes = (64, 64)
        config.optimizer.learning_rate = 1e-3
    return config
