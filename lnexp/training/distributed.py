"""Joining a run over several processes (hosts): ``jax.distributed.initialize`` from the command
line or the environment, and a barrier between the processes.

A single process needs none of this: the training loop runs data parallel over all the devices
it sees. Over several hosts, every host runs the same command as one process (or one process per
GPU), and :func:`initialize` connects them before JAX is used. What it reads, and from where
(a flag of ``lnexp.main`` wins over its environment variable):

* ``--coordinator_address`` (``$JAX_COORDINATOR_ADDRESS``): ``host:port`` of the coordinator
  service that process 0 starts; every process passes the same address.
* ``--num_processes`` (``$JAX_NUM_PROCESSES``): how many processes take part.
* ``--process_id`` (``$JAX_PROCESS_ID``): this process's number, ``0 .. num_processes - 1``.
* ``--local_device_ids`` (``$JAX_LOCAL_DEVICE_IDS``, comma-separated): the local devices this
  process uses (e.g. one GPU each for several processes on one machine); default all of them.
* ``--distributed`` (``$LNEXP_DISTRIBUTED=1``): let JAX detect all of the above from the cluster
  it runs in (SLURM, Open MPI, Cloud TPU pods, ...); explicit settings still win.

Without any of them nothing happens (one process). With some but not all of the first three, or
with values out of range, :func:`initialize` raises a :class:`~lnexp.errors.UserError` naming what
to add. A process that cannot reach the coordinator is aborted by JAX after 5 minutes.

A fault seen by one process alone must not leave the others waiting at the next collective until
JAX's timeouts (minutes): what only process 0 does (the lock, ``config.json``, the records) is
followed by :func:`agree`, after which every process stops with the error, and a process that
dies or stops answering is noticed by the others within :data:`PEER_TIMEOUT_S` (JAX's
heartbeat).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from lnexp.errors import UserError

PEER_TIMEOUT_S = int(os.environ.get("LNEXP_PEER_TIMEOUT_S", "60"))
"""How long a process waits for a peer that stopped answering (JAX's heartbeat timeout and its
shutdown) before it ends with an error: 60 s, or ``$LNEXP_PEER_TIMEOUT_S`` (the tests' is
shorter). A peer that stopped (its checkpoint's write failed inside orbax's background save, say)
is noticed by the heartbeat; orbax's own deadline for a save's writes stays its default."""

# (flag, environment variable) of each setting.
COORDINATOR_ADDRESS = ("--coordinator_address", "JAX_COORDINATOR_ADDRESS")
NUM_PROCESSES = ("--num_processes", "JAX_NUM_PROCESSES")
PROCESS_ID = ("--process_id", "JAX_PROCESS_ID")
LOCAL_DEVICE_IDS = ("--local_device_ids", "JAX_LOCAL_DEVICE_IDS")
AUTO_DETECT = ("--distributed", "LNEXP_DISTRIBUTED")


def _setting(value, names: tuple[str, str], environ: Mapping[str, str]):
    """``(value, where it came from)``: the flag's value, else the environment's (a string), else
    ``(None, None)``."""
    flag, variable = names
    if value is not None:
        return value, flag
    if environ.get(variable):
        return environ[variable], f"${variable}"
    return None, None


def _to_int(value, source: str | None, names: tuple[str, str]) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(
            f"{source}={value!r} is not an integer: set it to a number, or unset it and pass "
            f"{names[0]}=N."
        ) from None


def _to_device_ids(value, source: str | None) -> list[int] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return [int(i) for i in items]
    except ValueError:
        raise UserError(
            f"{source}={','.join(map(str, items))} must be comma-separated device numbers, "
            f"e.g. {LOCAL_DEVICE_IDS[0]}=0,1."
        ) from None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_device_ids: Sequence[int | str] | None = None,
    auto_detect: bool | None = None,
    environ: Mapping[str, str] = os.environ,
) -> bool:
    """Connects this process to the others of a multi-process run, when one is asked for.

    Must be called before anything else uses JAX. Arguments left as ``None`` are read from
    ``environ`` (see the module docstring for the variables).

    Args:
        coordinator_address: ``host:port`` of process 0's coordinator service.
        num_processes: The number of processes of the run.
        process_id: This process's number, ``0 .. num_processes - 1``.
        local_device_ids: The local devices this process uses (default: all).
        auto_detect: Let JAX detect the missing settings from the cluster (SLURM, Open MPI,
            Cloud TPU pods, ...).
        environ: Where the settings left as ``None`` come from.

    Returns:
        Whether this process joined a multi-process run (``False``: it runs alone).

    Raises:
        UserError: For an incomplete or inconsistent set of settings.
    """
    address, address_from = _setting(coordinator_address, COORDINATOR_ADDRESS, environ)
    count, count_from = _setting(num_processes, NUM_PROCESSES, environ)
    index, index_from = _setting(process_id, PROCESS_ID, environ)
    devices, devices_from = _setting(local_device_ids, LOCAL_DEVICE_IDS, environ)
    count, index = _to_int(count, count_from, NUM_PROCESSES), _to_int(index, index_from, PROCESS_ID)
    devices = _to_device_ids(devices, devices_from)
    if auto_detect is None:
        auto_detect = environ.get(AUTO_DETECT[1], "").lower() in ("1", "true", "yes")

    sources = [address_from, count_from, index_from, devices_from]
    if not auto_detect and not any(sources):
        return False
    required = {COORDINATOR_ADDRESS: address, NUM_PROCESSES: count, PROCESS_ID: index}
    missing = [names for names, value in required.items() if value is None]
    if missing and not auto_detect:
        raise UserError(
            f"{' and '.join(s for s in sources if s)} given without "
            f"{' and '.join(f'{flag} (${variable})' for flag, variable in missing)}: a run over "
            "several processes needs all three of --coordinator_address=HOST:PORT (process 0's "
            "address, the same for every process), --num_processes=N and --process_id=I "
            "(0 .. N-1, a different one for each process). Add the missing ones, or pass "
            "--distributed to let JAX detect them on SLURM, Open MPI or a Cloud TPU pod, or "
            "leave all of them out (and unset the variables) to run as one process."
        )
    if address is not None and not re.fullmatch(
        r"[^\s:]+:\d{1,5}|\[[0-9a-fA-F:.]+\]:\d{1,5}", address
    ):
        raise UserError(
            f"{address_from}={address!r} is not HOST:PORT (e.g. --coordinator_address="
            "node0:1234): the address and port of process 0's coordinator, the same for every "
            "process."
        )
    if count is not None and count < 1:
        raise UserError(f"{count_from}={count} must be at least 1.")
    if index is not None and (index < 0 or (count is not None and index >= count)):
        raise UserError(
            f"{index_from}={index} is out of range: with {count} processes, each takes one "
            f"number from 0 to {count - 1}."
            if count is not None
            else f"{index_from}={index} must not be negative."
        )
    _use_cpu_collectives()
    try:
        jax.distributed.initialize(
            address,
            count,
            index,
            devices,
            heartbeat_timeout_seconds=PEER_TIMEOUT_S,
            shutdown_timeout_seconds=PEER_TIMEOUT_S,
        )
    except ValueError as e:  # Auto-detection found no cluster (or only part of the settings).
        raise UserError(
            f"--distributed: JAX could not detect the multi-process settings ({e}). It knows "
            "SLURM, Open MPI, Cloud TPU pods and a few more clusters: launch under one of them, "
            "or give --coordinator_address, --num_processes and --process_id."
        ) from None
    return True


def _use_cpu_collectives() -> None:
    """Collectives between CPU processes need an implementation. jax 0.10 uses gloo by default;
    older versions had none ('Multiprocess computations aren't implemented on the CPU backend').
    Only the CPU backend reads the option, so it is harmless on GPU and TPU hosts."""
    if jax.config.jax_cpu_collectives_implementation is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier ``name`` (nothing for one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def agree(error: BaseException | None, what: str) -> None:
    """After a step that only some processes take (process 0 writes ``config.json``): every
    process learns whether it failed on any, and all stop together, the one that failed with its
    own ``error``, the others with a :class:`UserError` naming it, so that none waits at the next
    collective for a process that has stopped. Every process must call it, in the same order.

    Args:
        error: What this process's step raised, or ``None``.
        what: The step, for the others' message (``'write runs/x/config.json'``).
    """
    if jax.process_count() > 1:
        failed = [i for i, (bad,) in enumerate(all_processes([int(error is not None)])) if bad]
    else:
        failed = [0] if error is not None else []
    if error is not None:
        raise error
    if failed:
        raise UserError(
            f"Process {failed[0]} could not {what} (its own output says why), so every process "
            "of the run stops with it. Fix that and run the same command again on every host: it "
            "resumes from the last checkpoint."
        )


def on_process_0(what: str, action: Callable[[], None]) -> None:
    """Runs ``action`` (a write into the run directory) on process 0 alone, then :func:`agree`:
    its ``OSError`` stops every process. Every process must call it, in the same order."""
    error = None
    if jax.process_index() == 0:
        try:
            action()
        except OSError as e:
            error = e
    agree(error, what)


def all_processes(values: Sequence[int]) -> list[tuple[int, ...]]:
    """``values`` as every process has them, one tuple per process in process order (``[values]``
    for one process). Every process must pass as many values."""
    if jax.process_count() == 1:
        return [tuple(int(v) for v in values)]
    rows = multihost_utils.process_allgather(np.asarray(values, np.int32))
    return [tuple(int(v) for v in row) for row in np.asarray(rows).reshape(len(rows), -1)]
