"""Which changes of a config a run directory may resume across.

A run resumes its checkpoints only with the config it was trained with
(:meth:`lnexp.training.run_dir.RunDir.check_compatible`), except for the keys of
:data:`RESUMABLE_CHANGES`, which change where the data is or how the run is carried out, not
what is trained. Both configs are compared flattened (``{"optimizer.schedule": ...}``), as
``config.json`` holds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Config keys that may change between a run and its resumption (more epochs, moved data, ...).
RESUMABLE_CHANGES = (
    "num_epochs",
    "data.dir",
    "data.url",  # Where missing MNIST files are downloaded from; their digests are pinned.
    "data.cache_dir",
    # How the rate was found (the resolved optimizer.learning_rate must still match).
    "optimizer.tuned_rates",
    "steps_per_call",
    "eval_batch_size",
    "log_every_s",
    *(RETENTION := ("checkpoint.keep", "checkpoint.keep_every_steps")),
)
# ... except data.dir between a path and None, which switches between a user's own files and
# config.data.source (TFDS's validation split holds other images), and num_epochs when the
# learning rate decays until the last step (a cosine schedule with decay_steps=None), whose
# rate at every step after the resumption would change with it. Which checkpoints are kept
# (RETENTION) may change, and a run written before one of its fields existed resumes, except that
# a checkpoint.keep_every_steps once set stays (dropped or changed, the milestones kept so far
# would be deleted at the next save).


def missing_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys of the flattened config ``new`` that the saved one ``old`` lacks (fields added
    to the configs after ``old`` was written), sorted."""
    return sorted(k for k in new.keys() - old.keys() if k not in RETENTION)


def refused_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys whose values differ between the flattened configs ``old`` and ``new`` (a key
    that one of them lacks included) and may not resume (:data:`RESUMABLE_CHANGES`), sorted."""
    return sorted(
        k
        for k in old.keys() | new.keys()
        if old.get(k) != new.get(k) and not _resumable(k, old, new)
    )


def _resumable(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the change of ``key`` between two flattened configs may resume (the rules of
    :data:`RESUMABLE_CHANGES`)."""
    if key == "checkpoint.keep_every_steps":  # Dropped or changed: milestones deleted.
        return old.get(key) is None or old.get(key) == new.get(key)
    if key in RETENTION:
        return True
    if key not in RESUMABLE_CHANGES:
        return False
    if key == "data.dir" and None in (old.get(key), new.get(key)):
        return False
    if key == "num_epochs":
        return not any(_decays_until_the_end(c) for c in (old, new))
    return True


def _decays_until_the_end(flat: Mapping[str, Any]) -> bool:
    """A learning rate that decays until the last step, so depends on ``num_epochs``."""
    return flat.get("optimizer.schedule") == "cosine" and flat.get("optimizer.decay_steps") is None
