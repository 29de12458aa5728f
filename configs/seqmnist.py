"""Sequential MNIST: a GRU (or LSTM, or vanilla RNN) reads each image as 28 rows of 28 pixels.

Run (LN-GRU, hidden 128; MNIST from the data cache, downloaded on first use, or from
--config.data.dir=DIR)::

    python -m lnexp.main --config=configs/seqmnist.py --workdir=runs/seq-lngru

Plain vs LN, GRU and LSTM, side by side::

    python scripts/compare.py --config configs/seqmnist.py --workdir runs/seqmnist \\
        --grid model.norm=none,layer --grid model.cell=gru,lstm

``configs/seqmnist.py:tiny`` is a smoke test (seconds): an LN-GRU of 16 units, 2 evaluation
periods of 10 steps of batch 32 (``scripts/device_check.sh`` trains it on an accelerator).
"""

from pathlib import Path

import ml_collections

from lnexp.config import import_file

common = import_file(Path(__file__).with_name("common.py"))

VARIANTS = ("tiny",)
"""The named variants (``configs/seqmnist.py:<variant>``); without one, the LN-GRU above."""


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", *VARIANTS):
        raise ValueError(
            f"Unknown variant {arg!r} of configs/seqmnist.py: expected one of {VARIANTS}."
        )
    config = ml_collections.ConfigDict()
    config.experiment = "seqmnist"
    common.loop_fields(
        config, num_epochs=10, batch_size=128, steps_per_call=100, eval_batch_size=5000
    )

    config.model = ml_collections.ConfigDict()
    config.model.cell = "gru"  # simple | gru | lstm
    config.model.norm = "layer"  # layer | none (lstm also: cell = LN on c_t only, as in DRAW)
    config.model.hidden_size = 128
    config.model.unroll = 1  # Time steps unrolled per scan iteration.
    # Input projections (and their LNs) for all steps in one op before the scan (made for
    # accelerators; on CPU within 15 % of the in-loop form either way, see lnexp/cells.py).
    config.model.precompute_inputs = True
    config.model.kernel_init = "uniform_0.1"  # The paper's code: input kernels in [-0.1, 0.1].
    config.model.recurrent_kernel_init = "orthogonal"  # and orthogonal recurrent kernels.

    config.data = common.mnist_data()
    # Recurrent nets: clip the global gradient norm.
    config.optimizer = common.optimizer(learning_rate=1e-3, grad_clip_norm=1.0)
    config.checkpoint = common.checkpoint(keep=3)
    if arg == "tiny":
        config.num_epochs = 2
        config.steps_per_epoch = 10  # An evaluation period of 10 steps, not a pass.
        config.batch_size = 32
        config.steps_per_call = 10
        config.eval_batch_size = 100
        config.model.hidden_size = 16
        config.optimizer.learning_rate = 3e-3
    return config
