"""A run's checkpoints: the model apart from the optimizer state, damaged ones set aside, and
the step every process and seed resumes from.

``WORKDIR/checkpoints/<step>/`` are orbax checkpoints (:class:`Checkpoints`), each with two
items, ``model/`` (the parameters and the model's other variables, e.g. batch-norm running
averages: all that evaluating or encoding needs) and ``training/`` (the optimizer state, the step
and the epoch: what only resuming needs), so that :meth:`Checkpoints.restore_model` restores a
model without building its optimizer. A checkpoint at the end of an epoch also keeps a copy of
that epoch's record of ``metrics.jsonl`` (``record/``, JSON; :meth:`Checkpoints.saved_record`),
so that a record the file lost (a torn last line) is put back from it on resume.

A checkpoint that does not read back (damaged files, a missing item) is moved aside to
``checkpoints/<step>.damaged/`` (never deleted) when a run resumes from the one before it
(:func:`restore_readable`). Over several processes every process opens the same checkpoints,
which must be on a filesystem they share: :func:`resume_step` checks that they all see the same
last checkpoint before any of them trains.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from orbax.checkpoint.checkpoint_managers import preservation_policy as preservation

from lnexp.errors import UserError
from lnexp.training import distributed
from lnexp.training.disk_faults import (
    disk_message,
    first_line,
    is_disk_error,
    quiet_orbax_disk_errors,
    quiet_restore_stragglers,
)

if TYPE_CHECKING:
    from lnexp.training.run_dir import RunDir

DAMAGED = ".damaged"  # The suffix of a checkpoint moved aside: checkpoints/<step>.damaged.

# A checkpoint's items: what a model needs, and what only resuming its training needs.
MODEL_ITEM, TRAINING_ITEM = "model", "training"
ITEMS = (MODEL_ITEM, TRAINING_ITEM)
RECORD_ITEM = "record"  # Optional: the epoch's record (checkpoints from before it lack it).


class Checkpoints:
    """A run's ``checkpoints/`` (an orbax ``CheckpointManager`` over :data:`ITEMS`).

    A training state is the loop's dict ``{params, rest, opt_state, step, epoch}``; it is saved
    as the items ``model = {params, rest}`` and ``training = {opt_state, step, epoch}``. Use as a
    context manager (closing waits for a save in flight).
    """

    def __init__(
        self, directory: Path, keep: int | None = None, keep_every_steps: int | None = None
    ):
        """Opens ``directory``; with ``keep``, for saving: the last ``keep`` checkpoints are
        kept, and with ``keep_every_steps`` also every one whose step is a multiple of it (a
        long run's milestones, for evaluating them later)."""
        self.directory = directory
        self.keep = keep
        self.saved_nbytes: int | None = None  # The size of the last state saved.
        quiet_orbax_disk_errors()
        quiet_restore_stragglers()
        kept = None
        if keep is not None:
            kept = [preservation.LatestN(n=keep)]
            if keep_every_steps:
                kept.append(preservation.EveryNSteps(interval_steps=keep_every_steps))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=kept and preservation.AnyPreservationPolicy(kept),
            create=keep is not None,
            # A save cut short (a kill, a full disk) leaves <step>.orbax-checkpoint-tmp*: removed
            # when a run opens the checkpoints again.
            cleanup_tmp_directories=keep is not None,
        )
        handlers = {name: ocp.StandardCheckpointHandler() for name in ITEMS}
        handlers[RECORD_ITEM] = ocp.JsonCheckpointHandler()
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

    def save(
        self, step: int, state: Mapping[str, Any], record: Mapping[str, Any] | None = None
    ) -> None:
        """Saves a training state (asynchronously; every process of a run takes part), with a
        copy of the epoch's ``record`` when it ends one."""
        items = _split(state)
        self.saved_nbytes = sum(int(getattr(a, "nbytes", 0)) for a in jax.tree.leaves(items))
        args = {k: ocp.args.StandardSave(v) for k, v in items.items()}
        if record is not None:
            args[RECORD_ITEM] = ocp.args.JsonSave(dict(record))
        args = ocp.args.Composite(**args)
        try:  # Also reports the failure of the previous save, still in flight.
            self._manager.save(step, args=args)
        except Exception as e:
            raise self._save_failed(e, step) from None

    def _save_failed(self, error: Exception, step: int | None = None) -> Exception:
        """A :class:`UserError` for a save that failed for lack of space or permission (the
        temporary directory removed), else ``error`` itself."""
        if not is_disk_error(error):
            return error
        if jax.process_index() == 0:
            for tmp in self.directory.glob("*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
        failed = re.search(r"/(\d+)\.orbax-checkpoint-tmp", str(error))  # An earlier save's.
        step = int(failed.group(1)) if failed else step
        what = f"the checkpoint of step {step}" if step is not None else "a checkpoint"
        return UserError(
            disk_message(self.directory.parent, what, error, self.saved_nbytes, self.keep)
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
                self.move_aside(step, first_line(e))
        if not list(self.directory.glob(f"*{DAMAGED}*")):
            raise UserError(
                f"{self.directory.parent} has no checkpoint yet: train it first "
                "(python -m lnexp.main)."
            )
        raise UserError(_no_readable_message(self.directory))

    def saved_record(self, step: int) -> dict[str, Any] | None:
        """The copy of its epoch's record that the checkpoint ``step`` keeps, or ``None`` (a
        checkpoint inside an epoch, one from before copies were kept, or an unreadable one)."""
        if not (self.directory / str(step) / RECORD_ITEM).is_dir():
            return None
        try:
            args = ocp.args.Composite(**{RECORD_ITEM: ocp.args.JsonRestore()})
            record = self._manager.restore(step, args=args)[RECORD_ITEM]
        except Exception:  # noqa: BLE001 (a damaged copy is no copy)
            return None
        return dict(record) if isinstance(record, Mapping) else None

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
            self._check_shapes(step, target)
            items = {MODEL_ITEM: target}
        return dict(self._restore(step, items)[MODEL_ITEM])

    def _check_shapes(self, step: int, target: Mapping[str, Any]) -> None:
        """Refuses a model of other shapes than the checkpoint's (built from a damaged side file,
        say a ``vocab.txt`` cut short), so that a checkpoint that is fine is never set aside as
        damaged for it. Metadata that does not read back is left to the restore to report."""
        try:
            saved = self._manager.item_metadata(step)[MODEL_ITEM].tree
        except Exception:  # noqa: BLE001 (a damaged checkpoint: the restore says so)
            return
        shapes = sorted(tuple(a.shape) for a in jax.tree.leaves(saved))
        built = sorted(tuple(a.shape) for a in jax.tree.leaves(target))
        if shapes != built:
            different = sorted(set(shapes) ^ set(built))[:3]
            raise UserError(
                f"The checkpoint of step {step} in {self.directory} holds a model of other shapes "
                f"than the one built from its run directory (shapes not in both: {different}): "
                "config.json or a file the task wrote beside it (vocab.txt, chars.json) does not "
                "match the run that wrote the checkpoints. Put back that file (run the training "
                "command of the run again: it rewrites them) or pass the right --workdir. The "
                "checkpoints are untouched."
            )

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
                f"({first_line(e)}). Choose another --checkpoint, or leave it out to use the "
                "newest one that reads back."
            ) from None

    def _check_readable(self, step: int) -> None:
        path = self.directory / str(step)
        if not path.is_dir():
            raise UserError(f"No checkpoint for step {step} in {self.directory}.")

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
                failures.append(first_line(e))
        views = distributed.all_processes([int(not f) for f in failures])
        bad = [i for i in range(len(checkpoints)) if not all(view[i] for view in views)]
        if not bad:
            return step, states
        for i in bad:
            checkpoints[i].move_aside(step, failures[i] or "another process could not read it")


def _no_readable_message(directory: Path) -> str:
    return (
        f"No checkpoint in {directory} reads back: every one is damaged (moved aside as "
        f"<step>{DAMAGED}, never deleted). Choose one: restore the checkpoints from a copy "
        f"(renamed back to <step>), or start the run afresh by removing {directory} (its "
        "metrics.jsonl is then rewritten), or train in a new --workdir."
    )
