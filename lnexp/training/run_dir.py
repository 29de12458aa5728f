"""A run directory: what one run leaves on disk, and the rules for resuming it.

``WORKDIR/`` holds

* ``config.json``: the run's config (process 0 writes it; :meth:`RunDir.check_compatible`
  refuses to resume checkpoints with another config);
* ``metrics.jsonl``: one evaluation record per line (:meth:`RunDir.records`);
* ``tensorboard/``: the same numbers for TensorBoard (:mod:`lnexp.training.metric_writers`);
* ``checkpoints/<step>/``: orbax checkpoints (:class:`Checkpoints`), each with two items,
  ``model/`` (the parameters and the model's other variables, e.g. batch-norm running averages:
  all that evaluating or encoding needs) and ``training/`` (the optimizer state, the step and
  the epoch: what only resuming needs), so that :meth:`Checkpoints.restore_model` restores a
  model without building its optimizer;
* what the task adds (e.g. ``vocab.txt``).

Checkpoints written before the two items existed (one ``default/`` item holding everything)
are refused with a message: such a run cannot be resumed or encoded, but its ``config.json``
and ``metrics.jsonl`` read as before (``results/`` holds only those).

Over several processes every process opens the same run directory, which must be on a
filesystem they share: :meth:`RunDir.write_config` and :func:`resume_step` check that they all
see the same ``config.json`` and the same last checkpoint before any of them trains.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax.traverse_util import flatten_dict

from lnexp.errors import UserError
from lnexp.training import distributed
from lnexp.training.metric_writers import read_records

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
)
# ... except data.dir between a path and None, which switches between a user's own files and
# config.data.source (TFDS's validation split holds other images).

# A checkpoint's items: what a model needs, and what only resuming its training needs.
MODEL_ITEM, TRAINING_ITEM = "model", "training"
ITEMS = (MODEL_ITEM, TRAINING_ITEM)
_OLD_ITEM = "default"  # The single item of checkpoints written before ITEMS.


class ConfigView(enum.Enum):
    """What a process finds in the ``config.json`` that process 0 wrote."""

    SAME = "its own config"
    MISSING = "no config.json"
    DIFFERENT = "another config"


class RunDir:
    """The run directory ``path`` (need not exist yet).

    Example:
        >>> run = RunDir("runs/ln")  # doctest: +SKIP
        >>> run.checkpoint_steps(), run.records()[-1]["test_error"]  # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path).resolve()  # orbax needs absolute paths.
        self.config_path = self.path / "config.json"
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_dir = self.path / "checkpoints"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ----------------------------------------------------------------------------------------
    # The config.

    def read_config(self) -> dict[str, Any] | None:
        """The saved config (``None`` without a ``config.json``)."""
        return json.loads(self.config_path.read_text()) if self.config_path.exists() else None

    def check_compatible(self, config: ml_collections.ConfigDict) -> None:
        """Refuses to resume checkpoints written with another config (a change in
        :data:`RESUMABLE_CHANGES` is fine). Without a checkpoint there is nothing to mix, so a run
        that failed before its first checkpoint can be retried with corrected settings."""
        previous = self.read_config()
        if previous is None or not self.checkpoint_steps():
            return
        old = flatten_dict(previous, sep=".")
        new = flatten_dict(_as_json(config), sep=".")
        changed = sorted(
            k
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k)
            and (k not in RESUMABLE_CHANGES or None in (old.get(k), new.get(k)))
        )
        if changed:
            raise UserError(
                f"{self.path} holds a run with a different config (changed: "
                f"{', '.join(changed)}); resuming it would mix two experiments. Pass the same "
                "overrides as before to resume, or choose a new --workdir."
            )

    def write_config(self, config: ml_collections.ConfigDict) -> None:
        """Writes ``config.json`` (process 0 writes, atomically); over several processes, refuses
        a run whose processes do not all see it (a workdir not on a shared filesystem, or
        different configs given to different hosts)."""
        current = _as_json(config)
        distributed.barrier("lnexp: config.json checked")  # No process reads it while written.
        if jax.process_index() == 0:
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = self.config_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
            tmp.replace(self.config_path)  # Atomic: a kill never leaves half a config behind.
        if jax.process_count() == 1:
            return
        distributed.barrier("lnexp: config.json written")
        seen = self.read_config()
        view = (
            ConfigView.SAME
            if seen == current
            else ConfigView.MISSING
            if seen is None
            else ConfigView.DIFFERENT
        )
        order = list(ConfigView)
        views = [order[i] for (i,) in distributed.all_processes([order.index(view)])]
        problems = []
        if blind := [i for i, v in enumerate(views) if v is ConfigView.MISSING]:
            problems.append(
                f"{_processes(blind)} not see the {self.config_path} that process 0 wrote: the "
                "workdir must be on a filesystem that every host shares (all processes write "
                "the checkpoints and resume from them)."
            )
        if other := [i for i, v in enumerate(views) if v is ConfigView.DIFFERENT]:
            problems.append(
                f"{_processes(other)} not have the config of process 0: every process must run "
                "the same command (only the process flags differ)."
            )
        if problems:
            raise UserError(" ".join(problems))

    def write_files(self, files: Mapping[str, str]) -> None:
        """Writes a task's files (name -> text), e.g. ``vocab.txt``."""
        for name, text in files.items():
            (self.path / name).write_text(text, encoding="utf-8")

    # ----------------------------------------------------------------------------------------
    # The records.

    def records(self) -> list[dict[str, Any]]:
        """The evaluation records of ``metrics.jsonl`` (empty when there is none)."""
        return read_records(self.metrics_path)

    def truncate_records(self, step: int, *, write: bool = True) -> list[dict[str, Any]]:
        """Drops records past ``step`` (written after the checkpoint a resumed run starts from).

        Every process may call it (only the one with ``write`` rewrites the file): the file is
        replaced atomically, so a process that reads it meanwhile reads either version, and keeps
        the same records.

        Returns:
            The records kept.
        """
        kept = [r for r in self.records() if r["step"] <= step]
        if write and self.metrics_path.exists():
            tmp = self.metrics_path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            tmp.replace(self.metrics_path)  # Atomic, also against a kill mid-write.
        return kept

    # ----------------------------------------------------------------------------------------
    # The checkpoints.

    def checkpoint_steps(self) -> list[int]:
        """The steps of the checkpoints, ascending (empty without any)."""
        return sorted(int(p.name) for p in self.checkpoint_dir.glob("*") if p.name.isdigit())

    def latest_step(self) -> int:
        """The step of the last checkpoint; a :class:`UserError` without any."""
        steps = self.checkpoint_steps()
        if not steps:
            raise UserError(
                f"{self.path} has no checkpoint yet: train it first (python -m lnexp.main)."
            )
        return steps[-1]

    def checkpoints(self, keep: int | None = None) -> Checkpoints:
        """The checkpoints, opened for saving (the last ``keep`` are kept) and restoring."""
        return Checkpoints(self.checkpoint_dir, keep)


class Checkpoints:
    """A run's ``checkpoints/`` (an orbax ``CheckpointManager`` over :data:`ITEMS`).

    A training state is the loop's dict ``{params, rest, opt_state, step, epoch}``; it is saved
    as the items ``model = {params, rest}`` and ``training = {opt_state, step, epoch}``. Use as a
    context manager (closing waits for a save in flight).
    """

    def __init__(self, directory: Path, keep: int | None = None):
        self.directory = directory
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=keep is not None)
        handlers = {name: ocp.StandardCheckpointHandler() for name in ITEMS}
        self._manager = ocp.CheckpointManager(directory, item_handlers=handlers, options=options)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Mapping[str, Any]) -> None:
        """Saves a training state (asynchronously; every process of a run takes part)."""
        items = _split(state)
        self._manager.save(
            step, args=ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()})
        )

    def restore(self, step: int, target: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The training state at ``step``, shaped and placed like ``target`` (arrays or
        ``jax.ShapeDtypeStruct``; default: as saved, onto this process's first device)."""
        self._check_readable(step)
        items = _split(target) if target is not None else self._saved_shapes(step, ITEMS)
        return _join(self._restore(step, items))

    def restore_model(self, step: int, target: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Only the model's variables at ``step``: ``{params, rest}`` (no optimizer state is
        read, so none needs to be built); ``target`` as for :meth:`restore`."""
        self._check_readable(step)
        if target is None:
            items = self._saved_shapes(step, (MODEL_ITEM,))
        else:
            items = {MODEL_ITEM: target}
        return dict(self._restore(step, items)[MODEL_ITEM])

    def _check_readable(self, step: int) -> None:
        path = self.directory / str(step)
        if not path.is_dir():
            raise UserError(f"No checkpoint for step {step} in {self.directory}.")
        if (path / _OLD_ITEM).is_dir() and not (path / MODEL_ITEM).exists():
            raise UserError(
                f"{path} was written by an earlier lnexp, which saved the model and the optimizer "
                "state as one item; this version keeps them apart and cannot read it. Train the "
                "run again in a new --workdir (its config.json and metrics.jsonl still report)."
            )

    def _restore(self, step: int, items: Mapping[str, Any]) -> Mapping[str, Any]:
        abstract = {k: jax.tree.map(ocp.utils.to_shape_dtype_struct, v) for k, v in items.items()}
        args = {k: ocp.args.StandardRestore(v) for k, v in abstract.items()}
        return self._manager.restore(step, args=ocp.args.Composite(**args))

    def _saved_shapes(self, step: int, names: Sequence[str]) -> dict[str, Any]:
        """The saved shapes of ``names``, onto this process's first device (a checkpoint of any
        number of devices restores onto other devices only given a target)."""
        metadata = self._manager.item_metadata(step)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        return {
            name: jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                metadata[name].tree,
            )
            for name in names
        }


def _split(state: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        MODEL_ITEM: {"params": state["params"], "rest": state["rest"]},
        TRAINING_ITEM: {k: state[k] for k in ("opt_state", "step", "epoch")},
    }


def _join(items: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    return {**items[MODEL_ITEM], **items[TRAINING_ITEM]}


@dataclasses.dataclass(frozen=True)
class ResumeView:
    """The last checkpoint of each run directory as one process sees it (``None``: none)."""

    steps: tuple[int | None, ...]

    def encode(self) -> list[int]:
        """Two numbers a run directory, for :func:`distributed.all_processes`."""
        return [v for s in self.steps for v in ((0, 0) if s is None else (1, s))]

    @classmethod
    def decode(cls, values: Sequence[int]) -> ResumeView:
        pairs = zip(values[::2], values[1::2], strict=True)
        return cls(tuple(step if has else None for has, step in pairs))

    def describe(self) -> str:
        return ", ".join("none" if s is None else str(s) for s in self.steps)


def resume_step(
    run_dirs: Sequence[RunDir], checkpoints: Sequence[Checkpoints], seeds: Sequence[int]
) -> int | None:
    """The step that every run directory resumes from (``None``: they start afresh).

    Every process takes part in the comparison before any of them stops, and refuses processes
    that see different checkpoints (not a shared filesystem, or another run writing there), or
    seeds trained together whose run directories stand at different steps.
    """
    mine = ResumeView(tuple(c.latest_step() for c in checkpoints))
    views = [ResumeView.decode(v) for v in distributed.all_processes(mine.encode())]
    if any(v != mine for v in views):
        where = run_dirs[0].checkpoint_dir if len(run_dirs) == 1 else "the seeds' run directories"
        seen = "; ".join(f"process {i}: {v.describe()}" for i, v in enumerate(views))
        raise UserError(
            f"The processes see different last checkpoints in {where} ({seen}): the workdir must "
            "be on a filesystem that every host shares, with no other run writing to it."
        )
    if len(set(mine.steps)) > 1:
        listing = ", ".join(
            f"seed {seed}: {step or 0}" for seed, step in zip(seeds, mine.steps, strict=True)
        )
        raise UserError(
            f"The seeds' run directories resume from different steps ({listing}), so they "
            "cannot be trained together. Train them one after the other "
            "(lnexp.training.train_and_evaluate; scripts/compare.py does so by itself)."
        )
    return mine.steps[0]


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def _processes(ids: list[int]) -> str:
    """``'Process 1 does'``, ``'Processes 1, 3 do'``."""
    if len(ids) == 1:
        return f"Process {ids[0]} does"
    return f"Processes {', '.join(map(str, ids))} do"
