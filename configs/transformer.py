"""A character-level Transformer language model on the book corpus.

Variants (``--config=configs/transformer.py:<variant>``):

* default: a nanoGPT-on-CPU-sized model (4 blocks, 4 heads, width 128, context 64; 0.8 M
  parameters), pre-LN, AdamW 1e-3 with 100 warmup steps and a cosine decay, 2,000 steps of 32
  windows (8 evaluation periods of 250 steps) on 2 CPU cores.
* ``large``: 8 blocks, 8 heads, width 512, context 256 (25 M parameters), for accelerators.
* ``tiny``: a very small model for smoke tests (seconds).

Run (PATH_TO_BOOKS is a directory tree of .txt books, such as the project's Project Gutenberg
novels fetched by ``python -m lnexp.data.download books PATH_TO_BOOKS``)::

    python -m lnexp.main --config=configs/transformer.py --workdir=runs/tf-pre-ln \\
        --config.data.dir=PATH_TO_BOOKS
    python -m lnexp.studies.transformer.sample --workdir=runs/tf-pre-ln --prompt "It was a dark" \\
        --length 200

Post-LN vs pre-LN, with and without warmup (the README's study has the full commands)::

    python scripts/compare.py --config configs/transformer.py --workdir runs/tf-warmup \\
        --grid model.placement=post,pre --grid optimizer.warmup_steps=0,200 \\
        --config.data.dir=PATH_TO_BOOKS --metric valid_bpc --metrics train_loss,valid_bpc
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from lnexp.config import import_file

common = import_file(Path(__file__).with_name("common.py"))

VARIANTS = ("default", "large", "tiny")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "default"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown transformer variant {variant!r}: expected one of {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.experiment = "transformer"
    config.variant = variant
    common.loop_fields(config, num_epochs=8, batch_size=32, steps_per_call=25, eval_batch_size=100)
    # An "epoch" is an evaluation period of steps_per_epoch steps (a pass over every window of
    # the 81 M training characters would be 80,000 steps); batches stream through shuffled passes.
    config.steps_per_epoch = 250

    config.model = ml_collections.ConfigDict()
    config.model.norm = "layer"  # layer | rms | none: every normalizer of the blocks.
    config.model.placement = "pre"  # pre: x + f(N(x)), final N | post: N(x + f(x)).
    config.model.qk_norm = "none"  # none | layer | rms: normalize queries and keys per head.
    config.model.context = 64  # Characters the model sees (window = context + 1).
    config.model.width = 128
    config.model.depth = 4  # Blocks.
    config.model.num_heads = 4
    config.model.mlp_ratio = 4  # MLP hidden width = mlp_ratio * width.
    config.model.positions = "learned"  # learned | sinusoidal.
    config.model.tie_embeddings = False  # True: logits from the transposed token embedding.
    config.model.use_bias = True  # False: no bias in any linear map or layer norm.
    config.model.dropout = 0.0
    config.model.init_std = 0.02  # Embeddings (and matrices, if normal) ~ N(0, init_std^2).
    config.model.kernel_init = "normal"  # normal | xavier (Glorot uniform, Xiong et al.).

    config.data = ml_collections.ConfigDict()
    config.data.dir = config_dict.placeholder(str)  # A directory tree of .txt books.
    config.data.valid_books = 4  # Whole books held out (the same as the skip-thought corpus's).
    config.data.stride = 16  # A training window starts every `stride` characters.
    config.data.valid_windows = 1_000  # Disjoint validation windows, spread over the books.
    config.data.limit_train = config_dict.placeholder(int)  # Use only the first N windows.

    config.optimizer = common.optimizer(learning_rate=1e-3, grad_clip_norm=1.0)
    config.optimizer.name = "adamw"
    config.optimizer.b2 = 0.99  # nanoGPT's character-level setting.
    config.optimizer.weight_decay = 0.1  # On matrices and embeddings, not biases or gains.
    config.optimizer.warmup_steps = 100
    config.optimizer.schedule = "cosine"  # To 0 at the last step, after the warmup.
    config.checkpoint = common.checkpoint(keep=2)

    if variant == "large":
        config.num_epochs = 20
        config.steps_per_epoch = 1_000
        config.batch_size = 64
        config.eval_batch_size = 250
        config.model.context = 256
        config.model.width = 512
        config.model.depth = 8
        config.model.num_heads = 8
        config.model.dropout = 0.1
        config.data.stride = 64
        config.optimizer.learning_rate = 6e-4
        config.optimizer.warmup_steps = 1_000
    elif variant == "tiny":
        config.num_epochs = 2
        config.steps_per_epoch = 20
        config.batch_size = 8
        config.steps_per_call = 10
        config.eval_batch_size = 16
        config.model.context = 16
        config.model.width = 32
        config.model.depth = 2
        config.model.num_heads = 2
        config.data.stride = 4
        config.data.valid_windows = 32
        config.optimizer.learning_rate = 3e-3
        config.optimizer.warmup_steps = 5
    return config
