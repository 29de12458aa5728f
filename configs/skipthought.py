"""Skip-thoughts (uni-skip) with plain or layer-normalized GRUs on a directory of books.

Variants (``--config=configs/skipthought.py:<variant>``):

* default (small): 3,000 steps of a 256-unit model, vocabulary 5,000, in about 20 minutes on
  2 CPU cores (measured: 19 minutes, 160-190 sentences/s), learning visibly: the validation
  perplexity of each decoder falls from 5,000 (chance) to about 60. Adam 1e-3, not tuned.
* ``paper``: the paper's sizes (vocabulary 20,000, embeddings 620, GRUs 2400) and the public
  code's optimization (batch 64, Adam 2e-4, gradient-norm clip 5); for accelerators.
* ``tiny``: a few hundred steps of a very small model, for smoke tests (under a minute).

Run (LN, small; PATH_TO_BOOKS is a directory tree of .txt books, such as the project's Project
Gutenberg novels fetched by ``python -m lnexp.data.download books PATH_TO_BOOKS``)::

    python -m lnexp.main --config=configs/skipthought.py --workdir=runs/st-ln \\
        --config.data.dir=PATH_TO_BOOKS

Plain vs LN for the same number of steps::

    python scripts/compare.py --config configs/skipthought.py --workdir runs/skipthought \\
        --grid model.norm=none,layer --config.data.dir=PATH_TO_BOOKS --metric valid_nll
"""

from pathlib import Path

import ml_collections
from ml_collections import config_dict

from lnexp.config import import_file

common = import_file(Path(__file__).with_name("common.py"))

VARIANTS = ("small", "paper", "tiny")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
    variant = variant or "small"
    if variant not in VARIANTS:
        raise ValueError(f"Unknown skipthought variant {variant!r}: expected one of {VARIANTS}.")
    config = ml_collections.ConfigDict()
    config.experiment = "skipthought"
    config.variant = variant
    # Each call of steps_per_call fused steps holds one length group.
    common.loop_fields(config, num_epochs=12, batch_size=64, steps_per_call=10, eval_batch_size=250)
    # An "epoch" here is an evaluation period of steps_per_epoch steps (the corpus is too large
    # to wait for whole passes); batches keep streaming through shuffled passes.
    config.steps_per_epoch = 250

    config.model = ml_collections.ConfigDict()
    config.model.norm = "layer"  # layer | none: every GRU (encoder and both decoders).
    config.model.embed_dim = 128
    config.model.hidden_size = 256
    config.model.condition_every_step = False  # True: feed the encoding to every decoder step.
    config.model.tie_embeddings = False  # True: output layer = projection + transposed embedding.
    config.model.unroll = 1

    config.data = ml_collections.ConfigDict()
    config.data.dir = config_dict.placeholder(str)  # A directory tree of .txt books.
    config.data.vocab_size = 5_000  # Most frequent words, besides <pad>, <unk>, <eos>.
    config.data.max_tokens = 30  # Words kept per sentence (then <eos>).
    config.data.valid_books = 4  # Whole books held out for validation.
    config.data.valid_examples = 2_000  # Validation triples evaluated per epoch (spread out).
    config.data.limit_train = config_dict.placeholder(int)  # Use only the first N triples.
    config.data.cache_dir = config_dict.placeholder(str)  # None: $LNEXP_CACHE or ~/.cache/lnexp.

    # The public code's global-norm clip.
    config.optimizer = common.optimizer(learning_rate=1e-3, grad_clip_norm=5.0)
    # Every evaluation period's checkpoint, for downstream curves.
    config.checkpoint = common.checkpoint(keep=12)

    if variant == "paper":
        config.num_epochs = 200
        config.steps_per_epoch = 5_000
        config.model.embed_dim = 620
        config.model.hidden_size = 2400
        config.data.vocab_size = 20_000
        config.optimizer.learning_rate = 2e-4
        config.checkpoint.keep = 10
    elif variant == "tiny":
        config.num_epochs = 2
        config.steps_per_epoch = 100
        config.batch_size = 16
        config.eval_batch_size = 64
        config.model.embed_dim = 16
        config.model.hidden_size = 32
        config.data.vocab_size = 500
        config.data.valid_books = 1
        config.data.valid_examples = 256
    return config
