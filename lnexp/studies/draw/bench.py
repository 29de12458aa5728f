"""The DRAW section: training images/s of DRAW, baseline and LN (``norm='cell'``), at the CPU
protocol's 16 glimpses and the paper's 64, and what an epoch and a whole run then cost.

Times the training loop's own jitted chunk (:class:`lnexp.training.Trainer`, ``draw_steps``
steps per call, Adam) of ``configs/draw.py``'s model (256 LSTM units, ``z`` of 100, read 2 x 2,
write 5 x 5, batch 128) on random grey images (the cost does not depend on the pixels); the
per-epoch time is the training time of 50,000 images (evaluation not counted), the run's the
config's epochs times that: 20 for the CPU protocol, 200 for ``:paper``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import optax
from flax import nnx

from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import Prepared, Row, prepare_chunk, time_rows
from lnexp.data.binarized_mnist import SPLIT_SIZES
from lnexp.models.draw import DRAW
from lnexp.studies import Task
from lnexp.studies.draw import task as experiment
from lnexp.training.batches import Chunk

BATCH = 128
HIDDEN = 256
LATENT = 100
NUM_IMAGES = 1_024
PROTOCOLS = {16: ("CPU protocol", 20), 64: ("paper", 200)}
"""Glimpses -> (the config it is, its epochs)."""


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """Steps per timed call, timed calls, and the glimpse counts of the section."""

    draw_steps: int = setting(5, "draw: steps per timed call.")
    draw_repeats: int = setting(3, "draw: timed calls per row.")
    draw_glimpses: tuple[int, ...] = setting((16, 64), "draw: the glimpse counts timed.")


def prepare(norm: str, glimpses: int, config: Settings) -> Prepared:
    """The compiled, warmed-up training chunk of DRAW with ``norm`` and ``glimpses``."""
    from lnexp.training import Trainer, make_mesh

    model = DRAW(glimpses=glimpses, hidden_size=HIDDEN, latent_size=LATENT, norm=norm,
                 rngs=nnx.Rngs(config.seed))  # fmt: skip
    rng = np.random.default_rng(config.seed)
    images = rng.integers(0, 256, (NUM_IMAGES, 784)).astype(np.uint8)
    task = Task(
        model=model,
        train_data={"image": images, "index": np.arange(NUM_IMAGES, dtype=np.int32)},
        eval_data={},
        loss_fn=experiment.loss_fn,
        eval_fn=experiment.eval_fn,
        unit="images",
    )
    trainer = Trainer(task, optax.adam(1e-3), make_mesh(), config.seed)
    steps = config.draw_steps
    chunk = Chunk(rng.integers(0, NUM_IMAGES, (steps, BATCH)).astype(np.int32), None)
    return prepare_chunk(
        f"lnexp DRAW norm={norm}, {glimpses} glimpses",
        trainer,
        chunk,
        items=steps * BATCH,
        steps=steps,
        unit="images",
        extra={"norm": norm, "glimpses": glimpses},
    )


def run(config: Settings) -> dict[str, Any]:
    prepared = [
        prepare(norm, glimpses, config)
        for glimpses in config.draw_glimpses
        for norm in ("none", "cell")
    ]
    rows: list[Row] = time_rows(prepared, config.draw_repeats)
    train = SPLIT_SIZES["train"]
    for row in rows:
        epoch_s = train / row["images_per_s"]
        row["epoch_min"] = epoch_s / 60
        name, epochs = PROTOCOLS.get(row["glimpses"], (None, None))
        if epochs is not None:
            row["run_h"] = epochs * epoch_s / 3600
            row["protocol"] = f"{name}: {epochs} epochs"
        baseline = next(r for r in rows if r["glimpses"] == row["glimpses"] and r["norm"] == "none")
        row["x_baseline"] = row["median_ms"] / baseline["median_ms"]
    return {
        "rows": rows,
        "goals": [],
        "setup": (
            f"LSTMs of {HIDDEN} units, z of {LATENT}, read 2x2, write 5x5, batch {BATCH}; "
            f"{config.draw_steps} steps per call, median of {config.draw_repeats} calls; an "
            f"epoch is {train:,} images of training (evaluation not counted)."
        ),
    }


COLUMNS = [
    ("compile_s", "compile s", ".1f"),
    ("median_ms", "ms/step", ".0f"),
    ("images_per_s", "images/s", ",.0f"),
    ("x_baseline", "x baseline", ".2fx"),
    ("epoch_min", "min/epoch", ".1f"),
    ("run_h", "hours/run", ".1f"),
]
