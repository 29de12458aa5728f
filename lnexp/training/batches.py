"""Which examples go into which training step: the batch schedule of the training loop.

Everything is a function of ``(seed, pass)``, so every host and every resumed run draws the same
batches. A *pass* is one shuffled sweep over the training set (the incomplete last batch is
dropped); an *epoch* of the loop (evaluation, checkpoint) is one pass, or ``steps_per_epoch``
steps of the endless stream of passes when that is set (for corpora too large to evaluate only
once per pass).

The steps are run in *chunks* of at most ``steps_per_call`` steps fused into one device call.
With per-example ``lengths`` (sequence tasks) each pass sorts the shuffled examples by length
(rounded up to ``width_multiple``) before cutting batches, so a batch holds examples of similar
length; its chunk carries the padded ``width`` that covers them (a multiple of
``width_multiple``, so few shapes are compiled) and the chunks are shuffled. Without lengths
the pass is a plain permutation.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Steps run in one device call.

    Attributes:
        indices: ``(steps, batch_size)`` int32 example indices.
        width: Sequence length that covers every example of the chunk, or ``None``.
    """

    indices: np.ndarray
    width: int | None = None


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The batch schedule of a run.

    Attributes:
        num_examples: Training examples.
        batch_size: Examples per step.
        steps_per_call: Most steps per chunk.
        seed: Seed of the shuffles.
        steps_per_epoch: Steps between evaluations; ``None`` for one pass.
        lengths: Per-example sequence lengths to group by, or ``None``.
        width_multiple: Chunk widths are rounded up to a multiple of this.
    """

    num_examples: int
    batch_size: int
    steps_per_call: int
    seed: int
    steps_per_epoch: int | None = None
    lengths: np.ndarray | None = None
    width_multiple: int = 8

    @property
    def steps_per_pass(self) -> int:
        return self.num_examples // self.batch_size

    @property
    def epoch_steps(self) -> int:
        return self.steps_per_epoch or self.steps_per_pass

    def pass_batches(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pass ``index`` (from 1): ``(batches (steps, batch), chunk id per step, width per step)``.

        Without lengths, pass ``p`` is the permutation drawn from ``(seed, p)`` cut into batches,
        and chunk ids are consecutive runs of ``steps_per_call`` steps.
        """
        rng = np.random.default_rng([self.seed, index])
        order = rng.permutation(self.num_examples)
        steps = self.steps_per_pass
        if self.lengths is None:
            batches = order[: steps * self.batch_size].reshape(steps, self.batch_size)
            chunk_ids = np.arange(steps) // self.steps_per_call
            return batches.astype(np.int32), chunk_ids, np.zeros(steps, np.int64)
        m = self.width_multiple
        rounded = -(-self.lengths[order] // m) * m
        order = order[np.argsort(rounded, kind="stable")]  # Shuffled within each length.
        batches = order[: steps * self.batch_size].reshape(steps, self.batch_size)
        widths = -(-self.lengths[batches].max(axis=1) // m) * m
        # Chunks: runs of at most steps_per_call consecutive batches of one width...
        chunk_of_step = np.zeros(steps, np.int64)
        chunk, run = -1, 0
        for step in range(steps):
            if step == 0 or widths[step] != widths[step - 1] or run == self.steps_per_call:
                chunk, run = chunk + 1, 0
            chunk_of_step[step] = chunk
            run += 1
        # ... in shuffled order.
        rank = rng.permutation(chunk + 1)[chunk_of_step]
        step_order = np.argsort(rank, kind="stable")
        return batches[step_order].astype(np.int32), rank[step_order], widths[step_order]

    def epoch_chunks(self, epoch: int, skip: int = 0) -> list[Chunk]:
        """The chunks of epoch ``epoch`` (from 1), in order, without its first ``skip`` steps
        (those a run stopped mid-epoch has done already).

        Skipping leaves every later step's batch (and width) as it was: the steps of the same
        chunks, the first of them cut short when ``skip`` falls inside it (a chunk's steps
        compute the same bits whatever the chunk's length).
        """
        if not 0 <= skip <= self.epoch_steps:
            raise ValueError(f"skip={skip} is outside an epoch of {self.epoch_steps} steps.")
        if self.steps_per_epoch is None:
            parts = [self.pass_batches(epoch)]
        else:
            begin = (epoch - 1) * self.steps_per_epoch
            end = begin + self.steps_per_epoch
            first, last = begin // self.steps_per_pass, (end - 1) // self.steps_per_pass
            parts = []
            for p in range(first, last + 1):
                batches, ids, widths = self.pass_batches(p + 1)
                offset = p * self.steps_per_pass
                lo, hi = max(begin - offset, 0), min(end - offset, self.steps_per_pass)
                parts.append((batches[lo:hi], ids[lo:hi], widths[lo:hi]))
        chunks = []
        for batches, ids, widths in parts:
            cut = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1], True])
            for a, b in zip(cut[:-1], cut[1:], strict=True):
                width = None if self.lengths is None else int(widths[a])
                chunks.append(Chunk(batches[a:b], width))
        kept = []
        for chunk in chunks:
            if skip >= len(chunk.indices):
                skip -= len(chunk.indices)
                continue
            kept.append(dataclasses.replace(chunk, indices=chunk.indices[skip:]))
            skip = 0
        return kept
