"""Sequential MNIST: a GRU (or LSTM, or vanilla RNN) reads each image as 28 rows of 28 pixels.

Run (LN-GRU, hidden 128)::

    python -m lnexp.main --config=configs/seqmnist.py --workdir=runs/seq-lngru \\
        --config.data.dir=PATH_TO_MNIST

Plain vs LN, GRU and LSTM, side by side::

    python scripts/compare.py --config configs/seqmnist.py --workdir runs/seqmnist \\
        --grid model.norm=none,layer --grid model.cell=gru,lstm --set data.dir=PATH_TO_MNIST
"""

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    del arg
    config = ml_collections.ConfigDict()
    config.experiment = "seqmnist"
    config.seed = 0
    config.num_epochs = 10
    config.batch_size = 128
    config.steps_per_call = 100  # Training steps fused into one jitted call.
    config.eval_batch_size = 5000
    config.log_every_s = 30.0

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

    config.data = ml_collections.ConfigDict()
    config.data.dir = config_dict.placeholder(str)  # The four MNIST IDX files; None = TFDS.
    config.data.limit_train = config_dict.placeholder(int)

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.b1 = 0.9
    config.optimizer.b2 = 0.999
    config.optimizer.eps = 1e-8
    config.optimizer.momentum = 0.0
    config.optimizer.grad_clip_norm = 1.0  # Recurrent nets: clip the global gradient norm.

    config.checkpoint = ml_collections.ConfigDict()
    config.checkpoint.keep = 3
    config.checkpoint.every_epochs = 1
    return config
