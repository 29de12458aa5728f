"""Settings the training loop cannot run with, refused before any work with the field to fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import jax
import ml_collections
from jax.sharding import Mesh

from lnexp.errors import UserError
from lnexp.studies import Task


def check_batch_size(config: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """Refuses a global batch that does not divide over the mesh's devices."""
    if config.batch_size <= 0 or config.batch_size % mesh.size:
        suggestion = max(mesh.size, config.batch_size // mesh.size * mesh.size)
        where = (
            "of this machine"
            if jax.process_count() == 1
            else f"of this run ({jax.process_count()} processes, {jax.local_device_count()} "
            "devices each; config.batch_size is the global batch)"
        )
        raise UserError(
            f"config.batch_size={config.batch_size} does not divide over the {mesh.size} devices "
            f"{where}: each device takes an equal share of every batch. Use a multiple "
            f"of {mesh.size} (e.g. --config.batch_size={suggestion}), "
            "or run on fewer devices (e.g. CUDA_VISIBLE_DEVICES)."
        )


def check_enough_data(task: Task, config: ml_collections.ConfigDict) -> None:
    """Refuses a training set smaller than one batch."""
    if task.num_train < config.batch_size:
        raise UserError(
            f"The training set has {task.num_train} examples, fewer than one batch "
            f"(config.batch_size={config.batch_size}). Lower the batch size or use more data "
            "(config.data.limit_train)."
        )


def check_seeds(seeds: Sequence[int], workdirs: Sequence[Path]) -> None:
    """Refuses repeated seeds, or not one distinct run directory per seed."""
    if not seeds or len(set(seeds)) != len(seeds) or len(set(workdirs)) != len(seeds):
        raise UserError(
            f"train_seeds needs distinct seeds ({list(seeds)}) and one distinct run directory "
            f"per seed ({len(workdirs)} given)."
        )


def check_seeds_can_share(task: Task, config: ml_collections.ConfigDict, num_seeds: int) -> None:
    """Refuses to train several seeds of a task with sequence lengths in one program: each
    seed's schedule has its own chunk widths and lengths, which one program cannot share."""
    if num_seeds > 1 and task.lengths is not None:
        raise UserError(
            f"The {config.experiment} task groups its batches by sequence length, so each seed's "
            "schedule has its own chunk widths and one program cannot train the seeds together. "
            "Train them one after the other (scripts/compare.py without --vectorize_seeds)."
        )
