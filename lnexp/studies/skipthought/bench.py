"""The skip-thought section: training sentences/s of the encoder and its two decoders.

Times the training loop's own jitted chunk (:class:`lnexp.training.Trainer`, ``skipthought_steps``
steps per call, Adam with global-norm clipping as ``configs/skipthought.py``) of the default small
model (vocabulary 5,000 + 3 special tokens, 128-d embeddings, 256 GRU units, batch 64), plain and
layer-normalized, on a synthetic corpus of full-width sentences (30 tokens and ``<eos>``: the
widest length group, so the slowest case; real training batches similar lengths together and
averages shorter widths).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax
from flax import nnx

from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import Prepared, Row, prepare_chunk, time_rows
from lnexp.models.skipthought import SkipThought
from lnexp.studies import Task
from lnexp.studies.skipthought import task as experiment
from lnexp.training.batches import Chunk

VOCAB = 5_003
EMBED = 128
HIDDEN = 256
BATCH = 64
WIDTH = 31  # 30 tokens, then <eos>.
NUM_SENTENCES = 20_000


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """Steps per timed call and timed calls of the section."""

    skipthought_steps: int = setting(10, "skipthought: steps per timed call.")
    skipthought_repeats: int = setting(5, "skipthought: timed calls per row.")


def synthetic_corpus(seed: int) -> np.ndarray:
    """``(NUM_SENTENCES, WIDTH)`` token ids: random words (ids >= 3), ``<eos>`` (2) last."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (NUM_SENTENCES, WIDTH), dtype=np.int32)
    ids[:, -1] = 2
    return ids


def prepare(norm: str, config: Settings) -> Prepared:
    """The compiled, warmed-up training chunk of the small model with ``norm``."""
    from lnexp.training import Trainer, make_mesh

    model = SkipThought(VOCAB, EMBED, HIDDEN, norm=norm, rngs=nnx.Rngs(config.seed))
    centers = np.arange(1, NUM_SENTENCES - 1, dtype=np.int32)
    task = Task(
        model=model,
        train_data={"center": centers},
        eval_data={},
        loss_fn=experiment.loss_fn,
        eval_fn=experiment.eval_fn,
        constants={"ids": synthetic_corpus(config.seed)},
        make_batch=experiment.make_batch,
        unit="sentences",
    )
    tx = optax.chain(optax.clip_by_global_norm(5.0), optax.adam(1e-3))
    trainer = Trainer(task, tx, make_mesh(), config.seed)
    steps = config.skipthought_steps
    rng = np.random.default_rng(config.seed)
    chunk = Chunk(rng.integers(0, len(centers), (steps, BATCH)).astype(np.int32), WIDTH)
    return prepare_chunk(
        f"lnexp skip-thought norm={norm}",
        trainer,
        chunk,
        items=steps * BATCH,
        steps=steps,
        unit="sentences",
        extra={"norm": norm},
    )


def run(config: Settings) -> dict[str, Any]:
    rows: list[Row] = time_rows(
        [prepare(norm, config) for norm in ("none", "layer")], config.skipthought_repeats
    )
    plain = rows[0]["median_ms"]
    for row in rows:
        row["x_plain"] = row["median_ms"] / plain
    return {
        "rows": rows,
        "goals": [],
        "setup": (
            f"vocabulary {VOCAB}, embeddings {EMBED}, GRU {HIDDEN} units, batch {BATCH}, "
            f"{WIDTH} tokens per sentence (the widest group); {config.skipthought_steps} steps "
            f"per call, median of {config.skipthought_repeats} calls."
        ),
    }


COLUMNS = [
    ("compile_s", "compile s", ".2f"),
    ("median_ms", "ms/step", ".1f"),
    ("sentences_per_s", "sentences/s", ",.0f"),
    ("x_plain", "x plain", ".2fx"),
]
