"""A run directory: what one run leaves on disk, and the rules for resuming it.

``WORKDIR/`` holds

* ``config.json``: the run's config (process 0 writes it; :meth:`RunDir.check_compatible`
  refuses to resume checkpoints with another config, :mod:`lnexp.training.config_changes`);
* ``metrics.jsonl``: one evaluation record per line (:meth:`RunDir.records`);
* ``tensorboard/``: the same numbers for TensorBoard (:mod:`lnexp.training.metric_writers`);
* ``checkpoints/<step>/``: orbax checkpoints, the model apart from the optimizer state
  (:mod:`lnexp.training.checkpoints`);
* what the task adds (e.g. ``vocab.txt``);
* ``.lock``: held (``flock``) by the process that trains the run, and naming it, so that a
  second launch on the same workdir is refused (:meth:`RunDir.lock`); the OS drops the lock of a
  killed process, so a lock never outlives its run;
* ``checkpoints/<step>.damaged/``: a checkpoint that did not read back, moved aside (never
  deleted) when a run resumed from the one before it
  (:func:`lnexp.training.checkpoints.restore_readable`).

A write into it that fails for lack of space or permission is one error paragraph
(:mod:`lnexp.training.disk_faults`; :func:`held` reports them for a whole run).

Over several processes every process opens the same run directory, which must be on a
filesystem they share: :meth:`RunDir.write_config` and
:func:`lnexp.training.checkpoints.resume_step` check that they all see the same ``config.json``
and the same last checkpoint before any of them trains.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import re
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging
from flax import nnx
from flax.traverse_util import flatten_dict

from lnexp.errors import UserError
from lnexp.training import distributed
from lnexp.training.checkpoints import DAMAGED, Checkpoints
from lnexp.training.config_changes import missing_fields, refused_changes
from lnexp.training.disk_faults import disk_errors_reported
from lnexp.training.durable import write_atomically
from lnexp.training.metric_writers import missing_epochs, read_records, read_records_and_tail


class RunInUseError(UserError):
    """Another process holds the run directory's lock (:meth:`RunDir.lock`); ``holder`` names
    it (its pid, host and command, as it wrote them)."""

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


class ConfigView(enum.Enum):
    """What a process finds in the ``config.json`` that process 0 wrote."""

    SAME = "its own config"
    MISSING = "no config.json"
    DIFFERENT = "another config"


class RunDir:
    """The run directory ``path`` (need not exist yet).

    Example:
        >>> import tempfile
        >>> run = RunDir(tempfile.mkdtemp())  # A run directory before its run: nothing yet.
        >>> run.checkpoint_steps(), run.records(), run.read_config()
        ([], [], None)
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
        """The saved config (``None`` without a ``config.json``).

        Raises:
            UserError: when ``config.json`` is damaged (cut short, not JSON, not a config).
        """
        if not self.config_path.exists():
            return None
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            config, why = None, f"not JSON: {getattr(e, 'msg', None) or e.reason}"
        else:
            why = "not a JSON object"
        if isinstance(config, dict):
            return config
        raise UserError(
            f"{self.config_path} is damaged ({why}), so the run in {self.path} cannot be checked "
            "against the config given; nothing was changed, its checkpoints and records are "
            "untouched. If you know the command that trained it, delete config.json and run "
            "that same command again (the run resumes from its last checkpoint and writes "
            "config.json anew); otherwise choose a new --workdir."
        )

    def config_changes(self, config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
        """``(missing, changed)``: the fields of ``config`` that the run's ``config.json``
        lacks (written before they existed), and the others whose values differ and may not
        change on resuming (:mod:`lnexp.training.config_changes`); both empty without a
        ``config.json``."""
        previous = self.read_config()
        return ([], []) if previous is None else _compare(previous, config)[2:]

    def check_compatible(self, config: ml_collections.ConfigDict) -> None:
        """Refuses to resume checkpoints written with another config (a change in
        :data:`~lnexp.training.config_changes.RESUMABLE_CHANGES` is fine), or with a
        ``config.json`` that lacks fields of ``config`` (written before they existed: their
        values there are unknown). Without a checkpoint there is nothing to mix, so a run that
        failed before its first checkpoint can be retried with corrected settings. Nothing in the
        run directory is changed either way."""
        if (
            not self.checkpoint_steps()
        ):  # Nothing to mix: a config.json, even damaged, is rewritten.
            return
        previous = self.read_config()
        if previous is None:
            return
        old, new, missing, changed = _compare(previous, config)
        if missing:
            values = ", ".join(f"{k}={json.dumps(new[k])}" for k in missing)  # As JSON writes.
            also = f" It also differs from this config in: {', '.join(changed)}." if changed else ""
            raise UserError(
                f"{self.config_path} lacks fields that the config has now (missing: "
                f"{', '.join(missing)}): the run was written before they existed, so what it "
                f"was trained with is not known and resuming could mix two experiments.{also} "
                "To resume it, add the missing fields to its config.json with the values the run "
                f"was trained with (this config has {values}; CHANGELOG.md lists the values of "
                "runs written before a field existed), or choose a new --workdir. Its "
                "checkpoints are left as they are."
            )
        if changed:
            why = ""
            if "num_epochs" in changed:
                why = (
                    " (num_epochs sets the length of its cosine learning-rate decay, "
                    "optimizer.decay_steps=None)"
                )
            elif "checkpoint.keep_every_steps" in changed:
                why = (
                    f" (checkpoint.keep_every_steps was {old['checkpoint.keep_every_steps']}: "
                    "without it, or with another value, the milestones kept so far would be "
                    "deleted at the next save)"
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
        text = json.dumps(current, indent=2, sort_keys=True) + "\n"

        def write() -> None:  # Atomic and synced: a crash never leaves half a config behind.
            self.path.mkdir(parents=True, exist_ok=True)
            write_atomically(self.config_path, text)

        distributed.on_process_0(f"write {self.config_path}", write)  # Then it is written.
        if jax.process_count() == 1:
            return
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

    def truncate_records(
        self, step: int, *, write: bool = True, saved: Checkpoints | None = None
    ) -> list[dict[str, Any]]:
        """Drops records past ``step`` (written after the checkpoint a resumed run starts from),
        and puts back, from the copies the checkpoints in ``saved`` keep, the records of their
        epochs that the file lacks (a last line torn by a crash mid-write, a write lost in a power
        cut). A torn record that no kept checkpoint holds is dropped with one warning line; a
        resumed run trains its epoch again when it lies past ``step``.

        Every process may call it (only the one with ``write`` rewrites the file): the file is
        replaced atomically, so a process that reads it meanwhile reads either version, and keeps
        the same records.

        Returns:
            The records kept.
        """
        records, torn = read_records_and_tail(self.metrics_path)
        kept = {r["step"]: r for r in records if r["step"] <= step}
        put_back = []
        for saved_step in self.checkpoint_steps() if saved is not None else []:
            if saved_step <= step and saved_step not in kept:
                copy = saved.saved_record(saved_step)
                if copy is not None:
                    kept[saved_step] = copy
                    put_back.append(saved_step)
        if write and put_back:
            logging.warning(
                "Put back into %s the record(s) of step(s) %s from the copies their checkpoints "
                "keep (the file lacked them: %s).",
                self.metrics_path,
                ", ".join(map(str, put_back)),
                "its last line was cut short" if torn is not None else "a write was lost",
            )
        torn_step = _step_in(torn)
        # At ``step`` itself the loop evaluates the checkpoint again for the record.
        if write and torn is not None and torn_step not in kept and torn_step != step:
            lost = torn_step is not None and torn_step < step
            logging.warning(
                "The last line of %s was cut short (a crash mid-write) and dropped: %s.",
                self.metrics_path,
                f"the record of step {torn_step} is lost, no kept checkpoint holds a copy of it"
                if lost
                else "its epoch lies past the checkpoint resumed from and is trained again",
            )
        kept_records = [kept[s] for s in sorted(kept)]
        holes = missing_epochs(kept_records)
        if write and holes:
            logging.warning(
                "%s lacks the record(s) of epoch(s) %s and no kept checkpoint holds a copy: the "
                "run's history has a hole there (the grid's report names it).",
                self.metrics_path,
                ", ".join(map(str, holes)),
            )
        error = None
        if write and (self.metrics_path.exists() or kept_records):
            try:  # Atomic and synced, also against a kill mid-write.
                text = "".join(json.dumps(r) + "\n" for r in kept_records)
                write_atomically(self.metrics_path, text)
            except OSError as e:
                error = e
        distributed.agree(error, f"rewrite {self.metrics_path}")  # Every process calls it.
        return kept_records

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
            RunInUseError: when another process holds it (named by its pid, host and command).
        """
        handle, holder, error = None, "", None
        if jax.process_index() == 0:
            try:
                with disk_errors_reported([self], "the lock file .lock"):
                    self.path.mkdir(parents=True, exist_ok=True)
                    # Its text only names the holder: a damaged one is read as it is.
                    handle = open(self.lock_path, "a+", encoding="utf-8", errors="replace")  # noqa: SIM115
            except UserError as e:  # No space or no permission: said so, with the sizes.
                error = e
            except OSError as e:
                error = UserError(
                    f"Cannot create the run directory's lock file {self.lock_path} "
                    f"({e.strerror or e}): choose a --workdir in a directory you can write."
                )
        distributed.agree(error, f"create the lock file {self.lock_path}")
        if handle is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                handle = None
            else:
                command = " ".join(sys.argv) or sys.executable
                with contextlib.suppress(OSError):  # The text only names the holder.
                    handle.seek(0)
                    handle.truncate()
                    handle.write(f"pid {os.getpid()} on host {socket.gethostname()}: {command}\n")
                    handle.flush()
        mine = int(handle is not None or jax.process_index() != 0)  # Only process 0 locks.
        free = all(ok for (ok,) in distributed.all_processes([mine]))
        try:
            if not free:
                holder = holder or "another process (as process 0 found)"
                raise RunInUseError(
                    f"{self.path} is in use by another run ({holder}): two runs in one workdir "
                    "would write over each other's checkpoints and records. Wait for it to "
                    "finish (or stop it), or choose another --workdir.",
                    holder,
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

    def checkpoints(
        self, keep: int | None = None, keep_every_steps: int | None = None
    ) -> Checkpoints:
        """The checkpoints, opened for saving (the last ``keep`` are kept, and those at the
        multiples of ``keep_every_steps``) and restoring."""
        return Checkpoints(self.checkpoint_dir, keep, keep_every_steps)

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


def _step_in(torn: str | None) -> int | None:
    """The step a torn record names, when its first part reached the disk."""
    found = re.search(r'"step": (\d+)[,}]', torn or "")
    return int(found.group(1)) if found else None


def _compare(
    previous: dict[str, Any], config: ml_collections.ConfigDict
) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str]]:
    """``(old, new, missing, changed)``: the saved and the given config flattened, the fields the
    saved one lacks, and the others that differ and may not change on resuming."""
    old, new = flatten_dict(previous, sep="."), flatten_dict(_as_json(config), sep=".")
    missing = missing_fields(old, new)
    return old, new, missing, [k for k in refused_changes(old, new) if k not in missing]


def _as_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json_best_effort())


def _processes(ids: list[int]) -> str:
    """``'Process 1 does'``, ``'Processes 1, 3 do'``."""
    if len(ids) == 1:
        return f"Process {ids[0]} does"
    return f"Processes {', '.join(map(str, ids))} do"
