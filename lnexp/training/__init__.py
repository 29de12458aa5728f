"""The training machinery: one loop for one run or several seeds trained together.

* :mod:`~lnexp.training.loop`: ``train_and_evaluate(config, workdir)`` and
  ``train_seeds(config, seeds, workdirs)``, the one epoch loop (resume, evaluation, records,
  checkpoints, divergence, multi-process agreement);
* :mod:`~lnexp.training.trainer`: the jitted compute (state, fused chunk of steps, evaluation),
  with a seed axis of size 1 (one run) or ``S`` (vmapped);
* :mod:`~lnexp.training.optimizer`: the optimizer of a config (Adam, AdamW, SGD; warmup and
  a constant or cosine learning-rate schedule);
* :mod:`~lnexp.training.run_dir`: a run directory (``config.json``, its lock,
  ``metrics.jsonl``);
* :mod:`~lnexp.training.checkpoints`: its checkpoints, the model apart from the optimizer state,
  damaged ones set aside, the step a run resumes from;
* :mod:`~lnexp.training.config_changes`: which config changes a run may resume across;
* :mod:`~lnexp.training.disk_faults`: a full or read-only disk reported as one error;
* :mod:`~lnexp.training.checks`: settings refused before any work;
* :mod:`~lnexp.training.records`: an epoch's record, its log line, the divergence errors;
* :mod:`~lnexp.training.batches`: the batch schedule;
* :mod:`~lnexp.training.distributed`: joining a run over several processes;
* :mod:`~lnexp.training.metric_writers`: ``metrics.jsonl``, TensorBoard, the progress line.

The names below are imported on first use, so that reading a run directory
(``from lnexp.training.run_dir import RunDir``) does not build the loop.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_and_evaluate": "loop",
    "train_seeds": "loop",
    "with_seed": "loop",
    "Trainer": "trainer",
    "make_mesh": "trainer",
    "make_optimizer": "optimizer",
    "learning_rate_schedule": "optimizer",
    "RunDir": "run_dir",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lnexp.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"lnexp.training.{_EXPORTS[name]}"), name)
