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
* what the task adds (e.g. ``vocab.txt``);
* ``.lock``: held (``flock``) by the process that trains the run, and naming it, so that a
  second launch on the same workdir is refused (:meth:`RunDir.lock`); the OS drops the lock of a
  killed process, so a lock never outlives its run;
* ``checkpoints/<step>.damaged/``: a checkpoint that did not read back, moved aside (never
  deleted) when a run resumed from the one before it (:func:`restore_readable`).

Faults of the disk are the user's to fix and are reported as such: a checkpoint, config or
record that cannot be written (a full or read-only filesystem) is a :class:`UserError` naming the
workdir, what failed and the space a checkpoint takes (:func:`disk_errors_reported`); earlier
checkpoints stay intact, and orbax's temporary directories of a save cut short are removed when
the checkpoints are next opened for saving.

Checkpoints written before the two items existed (one ``default/`` item holding everything)
are refused with a message: such a run cannot be resumed or encoded, but its ``config.json``
and ``metrics.jsonl`` read as before (``results/`` holds only those).

Over several processes every process opens the same run directory, which must be on a
filesystem they share: :meth:`RunDir.write_config` and :func:`resume_step` check that they all
see the same ``config.json`` and the same last checkpoint before any of them trains.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import fcntl
import json
import logging as pylogging
import os
import re
import shutil
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from flax import nnx
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
# config.data.source (TFDS's validation split holds other images), and num_epochs when the
# learning rate decays until the last step (a cosine schedule with decay_steps=None), whose
# rate at every step after the resumption would change with it.

# Fields added to the configs after runs were written, with the value that keeps the behaviour
# from before they existed: a config.json without the field resumes when the new config holds
# that value (tests/test_optimizer.py checks them against configs/common.py's defaults).
ADDED_FIELDS: dict[str, Any] = {
    # The learning-rate schedule and weight decay (lnexp.training.optimizer): plain Adam.
    "optimizer.schedule": "constant",
    "optimizer.warmup_steps": 0,
    "optimizer.decay_steps": None,
    "optimizer.end_learning_rate_factor": 0.0,
    "optimizer.weight_decay": 0.0,
    "optimizer.decay_matrices_only": True,
    # Mixed precision (configs/common.py: loop_fields, loss_scale): float32, no loss scaling.
    "dtype": "float32",
    "loss_scale.initial": 2.0**15,
    "loss_scale.growth_interval": 2000,
    "loss_scale.factor": 2.0,
    "loss_scale.minimum": 1.0,
    # MNIST's input scaling (lnexp.studies.pimnist.task.input_fns): pixels in [0, 1].
    "data.input_scaling": "unit",
}

DAMAGED = ".damaged"  # The suffix of a checkpoint moved aside: checkpoints/<step>.damaged.

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
        self.lock_path = self.path / ".lock"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ----------------------------------------------------------------------------------------
    # The config.

    def read_config(self) -> dict[str, Any] | None:
        """The saved config (``None`` without a ``config.json``)."""
        return json.loads(self.config_path.read_text()) if self.config_path.exists() else None

    def check_compatible(self, config: ml_collections.ConfigDict) -> None:
        """Refuses to resume checkpoints written with another config (a change in
        :data:`RESUMABLE_CHANGES` is fine, and a field of :data:`ADDED_FIELDS` missing from an
        older ``config.json`` reads as its value there). Without a checkpoint there is nothing to
        mix, so a run that failed before its first checkpoint can be retried with corrected
        settings."""
        previous = self.read_config()
        if previous is None or not self.checkpoint_steps():
            return
        new = flatten_dict(_as_json(config), sep=".")
        old = flatten_dict(previous, sep=".")
        old = {**{k: v for k, v in ADDED_FIELDS.items() if k in new}, **old}
        changed = sorted(
            k
            for k in old.keys() | new.keys()
            if old.get(k) != new.get(k) and not _resumable(k, old, new)
        )
        if changed:
            why = (
                " (num_epochs sets the length of its cosine learning-rate decay, "
                "optimizer.decay_steps=None)"
                if "num_epochs" in changed
                else ""
            )
            raise UserError(
                f"{self.path} holds a run with a different config (changed: "
                f"{', '.join(changed)}){why}; resuming it would mix two experiments. Pass the "
                "same overrides as before to resume, or choose a new --workdir."
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
        """The steps of the checkpoints, ascending (empty without any; damaged ones moved aside
        and orbax's temporary directories are not checkpoints)."""
        return sorted(
            int(p.name) for p in self.checkpoint_dir.glob("*") if p.name.isdigit() and p.is_dir()
        )

    def damaged_checkpoints(self) -> list[Path]:
        """The checkpoints moved aside as damaged (``checkpoints/<step>.damaged*``)."""
        return sorted(self.checkpoint_dir.glob(f"*{DAMAGED}*"))

    # ----------------------------------------------------------------------------------------
    # The lock.

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Holds ``.lock`` while the block runs: one run at a time in a run directory.

        An OS-level lock (``flock``), taken by process 0 of a run over several processes (the
        others agree on its outcome): the OS releases it when the holder exits, however it dies,
        so no stale lock ever blocks a later run.

        Raises:
            UserError: when another process holds it (named by its pid, host and command).
        """
        handle, holder = None, ""
        if jax.process_index() == 0:
            with disk_errors_reported([self], "the lock file .lock"):
                self.path.mkdir(parents=True, exist_ok=True)
                handle = open(self.lock_path, "a+")  # noqa: SIM115 (held past this block)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                handle = None
            else:
                handle.seek(0)
                handle.truncate()
                command = " ".join(sys.argv) or sys.executable
                handle.write(f"pid {os.getpid()} on host {socket.gethostname()}: {command}\n")
                handle.flush()
        mine = int(handle is not None or jax.process_index() != 0)  # Only process 0 locks.
        free = all(ok for (ok,) in distributed.all_processes([mine]))
        try:
            if not free:
                raise UserError(
                    f"{self.path} is in use by another run ({holder or 'held, says process 0'}"
                    "): two runs in one workdir would write over each other's checkpoints and "
                    "records. Wait for it to finish (or stop it), or choose another --workdir."
                )
            yield
        finally:
            if handle is not None:
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()

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

    def trained_model(self, model: nnx.Module, step: int | None = None) -> tuple[int, nnx.Module]:
        """``model`` (a freshly built one of the run's structure) with the variables of the
        checkpoint ``step``, or of the newest one that reads back (damaged newer ones set aside)
        when ``step`` is ``None``; on this process's first device, without an optimizer.

        Returns:
            ``(step, model)``, the model in evaluation mode.

        Raises:
            UserError: no checkpoint reads back, or the one named by ``step`` does not.
        """
        model.eval()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
            {"params": params, "rest": rest},
        )
        with self.checkpoints() as checkpoints:
            if step is None:
                step, variables = checkpoints.restore_newest_model(target)
            else:
                variables = checkpoints.restore_named_model(step, target)
        return step, nnx.merge(graphdef, variables["params"], variables["rest"])


class Checkpoints:
    """A run's ``checkpoints/`` (an orbax ``CheckpointManager`` over :data:`ITEMS`).

    A training state is the loop's dict ``{params, rest, opt_state, step, epoch}``; it is saved
    as the items ``model = {params, rest}`` and ``training = {opt_state, step, epoch}``. Use as a
    context manager (closing waits for a save in flight).
    """

    def __init__(self, directory: Path, keep: int | None = None):
        self.directory = directory
        self.keep = keep
        self.saved_nbytes: int | None = None  # The size of the last state saved.
        _quiet_orbax_disk_errors()
        quiet_restore_stragglers()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=keep is not None,
            # A save cut short (a kill, a full disk) leaves <step>.orbax-checkpoint-tmp*: removed
            # when a run opens the checkpoints again.
            cleanup_tmp_directories=keep is not None,
        )
        handlers = {name: ocp.StandardCheckpointHandler() for name in ITEMS}
        self._manager = ocp.CheckpointManager(directory, item_handlers=handlers, options=options)

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._manager.wait_until_finished()  # A save in flight may fail here.
        except Exception as e:
            raise self._save_failed(e) from None
        finally:
            self._manager.close()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Mapping[str, Any]) -> None:
        """Saves a training state (asynchronously; every process of a run takes part)."""
        items = _split(state)
        self.saved_nbytes = sum(int(getattr(a, "nbytes", 0)) for a in jax.tree.leaves(items))
        args = ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()})
        try:  # Also reports the failure of the previous save, still in flight.
            self._manager.save(step, args=args)
        except Exception as e:
            raise self._save_failed(e, step) from None

    def _save_failed(self, error: Exception, step: int | None = None) -> Exception:
        """A :class:`UserError` for a save that failed for lack of space or permission (the
        temporary directory removed), else ``error`` itself."""
        if not _is_disk_error(error):
            return error
        if jax.process_index() == 0:
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
        failed = re.search(r"/(\d+)\.orbax-checkpoint-tmp", str(error))  # An earlier save's.
        step = int(failed.group(1)) if failed else step
        what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
        return UserError(
            _disk_message(self.directory.parent, what, error, self.saved_nbytes, self.keep)
        )

    def move_aside(self, step: int, reason: str) -> Path:
        """Moves the damaged checkpoint ``step`` to ``<step>.damaged`` (never deletes it; process
        0 moves it, every process then sees it gone) with one warning line."""
        path = self.directory / str(step)
        target = self.directory / f"{step}{DAMAGED}"
        n = 1
        while target.exists():
            target, n = self.directory / f"{step}{DAMAGED}.{n}", n + 1
        if jax.process_index() == 0:
            os.replace(path, target)
            logging.warning(
                "The checkpoint of step %d in %s does not read back (%s); moved it aside to %s "
                "and resuming from the checkpoint before it.",
                step,
                self.directory,
                reason,
                target.name,
            )
        distributed.barrier(f"lnexp: checkpoint {step} moved aside")
        self._manager.reload()
        return target

    def restore_newest_model(
        self, target: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """The model's variables of the newest checkpoint that reads back (damaged newer ones
        moved aside, see :meth:`move_aside`): ``(step, {params, rest})``.

        Raises:
            UserError: when no checkpoint reads back (or there is none).
        """
        while (step := self._manager.latest_step()) is not None:
            try:
                return step, self.restore_model(step, target)
            except UserError:
                raise
            except Exception as e:
                quiet_restore_stragglers()
                self.move_aside(step, _first_line(e))
        if not list(self.directory.glob(f"*{DAMAGED}*")):
            raise UserError(
                f"{self.directory.parent} has no checkpoint yet: train it first "
                "(python -m lnexp.main)."
            )
        raise UserError(_no_readable_message(self.directory))

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

    def restore_named_model(self, step: int, target: Mapping[str, Any]) -> dict[str, Any]:
        """:meth:`restore_model` of a checkpoint the user named by its step: one that does not
        read back is a :class:`UserError` (and is never set aside)."""
        try:
            return self.restore_model(step, target)
        except UserError:
            raise
        except Exception as e:  # orbax and tensorstore raise many types.
            quiet_restore_stragglers()
            raise UserError(
                f"The checkpoint of step {step} in {self.directory} does not read back "
                f"({_first_line(e)}). Choose another --checkpoint, or leave it out to use the "
                "newest one that reads back."
            ) from None

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
        # float16 runs also carry their loss scale (lnexp.training.loss_scale).
        TRAINING_ITEM: {
            k: state[k] for k in ("opt_state", "step", "epoch", "loss_scale") if k in state
        },
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


def restore_readable(
    run_dirs: Sequence[RunDir],
    checkpoints: Sequence[Checkpoints],
    seeds: Sequence[int],
    target: Mapping[str, Any],
) -> tuple[int | None, list[dict[str, Any]]]:
    """The step every run directory resumes from and each one's training state there
    (``(None, [])``: they start afresh), restoring the newest checkpoint that reads back.

    A checkpoint that fails to restore on any process (damaged files, a missing item) is moved
    aside with a warning (:meth:`Checkpoints.move_aside`) and the one before it tried; the
    processes agree on each outcome, so they all resume from the same step (:func:`resume_step`).

    Raises:
        UserError: when checkpoints were there but none reads back, or for :func:`resume_step`'s
            reasons.
    """
    while True:
        step = resume_step(run_dirs, checkpoints, seeds)
        if step is None:
            if damaged := [r for r in run_dirs if r.damaged_checkpoints()]:
                raise UserError(_no_readable_message(damaged[0].checkpoint_dir))
            return None, []
        states, failures = [], []
        for checkpoint in checkpoints:
            try:
                states.append(checkpoint.restore(step, target))
                failures.append("")
            except UserError:
                raise
            except Exception as e:  # orbax and tensorstore raise many types.
                quiet_restore_stragglers()
                states.append({})
                failures.append(_first_line(e))
        views = distributed.all_processes([int(not f) for f in failures])
        bad = [i for i in range(len(checkpoints)) if not all(view[i] for view in views)]
        if not bad:
            return step, states
        for i in bad:
            checkpoints[i].move_aside(step, failures[i] or "another process could not read it")


@contextlib.contextmanager
def disk_errors_reported(run_dirs: Sequence[RunDir], what: str = "") -> Iterator[None]:
    """Turns a write that failed for lack of space or permission (``ENOSPC``, ``EROFS``,
    ``EACCES``, ..., raw or wrapped by orbax/tensorstore) into one :class:`UserError` naming the
    workdir, what could not be written and the size of a checkpoint."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        # Only writes into a run directory (not, say, unreadable data elsewhere).
        inside = [r for r in run_dirs if _mentions(e, r.path)]
        if not _is_disk_error(e) or not inside:
            raise
        run = inside[0]
        steps = run.checkpoint_steps()
        size = _disk_size(run.checkpoint_dir / str(steps[-1])) if steps else None
        name = what or (f"{e.filename}" if getattr(e, "filename", None) else "a file")
        raise UserError(_disk_message(run.path, name, e, size, None)) from None


@contextlib.contextmanager
def held(run_dirs: Sequence[RunDir]) -> Iterator[None]:
    """A run's hold on its run directories: each one's lock (:meth:`RunDir.lock`) for the
    block, and its writes that fail for lack of space or permission reported
    (:func:`disk_errors_reported`)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(disk_errors_reported(run_dirs))
        for run_dir in run_dirs:
            stack.enter_context(run_dir.lock())
        yield


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_CAUSES = (
    "No space left on device",
    "Disk quota exceeded",
    "Read-only file system",
    "Permission denied",
    "File too large",
)
_DISK_WORDS = (
    "RESOURCE_EXHAUSTED",
    "No space left",
    "Read-only file system",
    "Permission denied",
    "PERMISSION_DENIED",
    "Disk quota",
    "File too large",
)


def _mentions(error: BaseException | None, path: Path) -> bool:
    """Whether ``error`` (or what it wraps) names a file under ``path``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        names = [getattr(error, "filename", None), getattr(error, "filename2", None), str(error)]
        if any(name is not None and str(path) in str(name) for name in names):
            return True
        error = error.__cause__ or error.__context__
    return False


def _is_disk_error(error: BaseException | None) -> bool:
    """Whether ``error`` (or what it wraps) is a write refused by the filesystem."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
            return True
        if any(word in str(error) for word in _DISK_WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def _disk_message(
    workdir: Path, what: str, error: BaseException, nbytes: int | None, keep: int | None
) -> str:
    text = str(error)
    known = [w for w in _CAUSES if w in text]
    cause = getattr(error, "strerror", None) or (known[0] if known else _first_line(error))
    if nbytes:
        kept = f", {keep} of them kept plus the one being written" if keep else ""
        need = nbytes * ((keep or 0) + 1)
        size = (
            f" A checkpoint of this run takes about {nbytes / 1e6:.2f} MB{kept}: leave at least "
            f"{need / 1e6:.2f} MB free for the checkpoints (and some for the records)."
        )
    else:
        size = ""
    return (
        f"Cannot write to the workdir {workdir}: {what} could not be written ({cause}).{size} "
        "The earlier checkpoints are intact: free some space (or make the workdir writable, or "
        "choose a --workdir elsewhere) and rerun the same command to resume from the last one."
    )


def _disk_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class _DiskErrorsOfOrbax(pylogging.Filter):
    """Drops orbax's own reports (with tracebacks, from its background threads) of a write
    refused by the filesystem: the run reports it as one error paragraph."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        if "orbax" not in record.pathname or not record.exc_info:
            return True
        return not _is_disk_error(record.exc_info[1])


def _quiet_orbax_disk_errors() -> None:
    logger = pylogging.getLogger("absl")
    if not any(isinstance(f, _DiskErrorsOfOrbax) for f in logger.filters):
        logger.addFilter(_DiskErrorsOfOrbax())


class _StragglersOfAFault(pylogging.Filter):
    """Drops the tracebacks that orbax's background threads and asyncio log after a save or
    restore has failed (the failure itself is reported once, as a warning or an error)."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        from_async = "orbax" in record.pathname or record.name == "asyncio"
        return not (from_async and (record.exc_info or "never retrieved" in record.getMessage()))


def quiet_restore_stragglers() -> None:
    """After a failed restore or save, tensorstore's other reads or writes of it still complete,
    into the event loop that orbax has closed by then: Python reports each as an unraisable
    'Event loop is closed' traceback, and orbax's threads and asyncio log theirs. Those (only
    those: records with a traceback from orbax or asyncio) are dropped from then on."""
    handlers = [*pylogging.getLogger().handlers, logging.get_absl_handler()]
    for handler in handlers:
        if not any(isinstance(f, _StragglersOfAFault) for f in handler.filters):
            handler.addFilter(_StragglersOfAFault())
    previous = sys.unraisablehook
    if getattr(previous, "lnexp_quiet", False):
        return

    def hook(unraisable) -> None:
        value = unraisable.exc_value
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        previous(unraisable)

    hook.lnexp_quiet = True
    sys.unraisablehook = hook


def _first_line(error: BaseException) -> str:
    """The first line of an error's message, cut to 300 characters (for one warning line)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _no_readable_message(directory: Path) -> str:
    return (
        f"No checkpoint in {directory} reads back: every one is damaged (moved aside as "
        f"<step>{DAMAGED}, never deleted). Choose one: restore the checkpoints from a copy "
        f"(renamed back to <step>), or start the run afresh by removing {directory} (its "
        "metrics.jsonl is then rewritten), or train in a new --workdir."
    )


def _resumable(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the change of ``key`` between two flattened configs may resume (the rules of
    :data:`RESUMABLE_CHANGES`)."""
    if key not in RESUMABLE_CHANGES or None in (old.get(key), new.get(key)):
        return False
    if key == "num_epochs":
        return not any(_decays_until_the_end(c) for c in (old, new))
    return True


def _decays_until_the_end(flat: Mapping[str, Any]) -> bool:
    """A learning rate that decays until the last step, so depends on ``num_epochs``."""
    return flat.get("optimizer.schedule") == "cosine" and flat.get("optimizer.decay_steps") is None


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def _processes(ids: list[int]) -> str:
    """``'Process 1 does'``, ``'Processes 1, 3 do'``."""
    if len(ids) == 1:
        return f"Process {ids[0]} does"
    return f"Processes {', '.join(map(str, ids))} do"
