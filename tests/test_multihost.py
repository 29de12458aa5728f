"""Tests of a run over several processes (lnexp.training.distributed, and the loop with it).

Two processes on this machine stand for two hosts: each is the real command line
(``python -m lnexp.main ... --coordinator_address=localhost:PORT --num_processes=2
--process_id=I``) on one CPU device, connected by JAX's coordinator and gloo collectives. The
reference is one process with two (forced) CPU devices: the same mesh size, so the same numbers.
Every subprocess has a deadline and is killed past it, so a hung collective fails the test
instead of hanging the suite.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from conftest import wait_all
from test_train import (
    REPO,
    assert_clean_cli_error,
    assert_trees_equal,
    cli_command,
    cli_env,
    make_config,
    read_records,
    run_cli,
    subprocess_compilation_cache,  # noqa: F401 (an autouse fixture: shared compilation cache)
    without_timing,
)

from lnexp.errors import UserError
from lnexp.training import checks, distributed
from lnexp.training.run_dir import RunDir

NORM = "batch"  # Its statistics are over the global batch, which spans both processes.
OVERRIDES = (f"--config.model.norm={NORM}", "--config.num_epochs=2")
TIMEOUT_S = 240
PEER_TIMEOUT_S = 20  # $LNEXP_PEER_TIMEOUT_S of these runs (60 s by default).


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(
    workdir: Path,
    data_dir: Path,
    *overrides: str,
    logs: Path,
    extra: tuple[tuple[str, ...], ...] = ((), ()),
    fault: tuple[str, int] | None = None,
    timeout_s: float = TIMEOUT_S,
    peer_timeout_s: int = PEER_TIMEOUT_S,
) -> list[SimpleNamespace]:
    """Runs one process per entry of ``extra`` (its own further flags) as one run; returns each
    one's ``returncode``, ``stderr`` and ``seconds``. Kills them all past ``timeout_s``.
    ``fault``: ``(name, process)``, a disk fault injected into that process
    (tests/faulty_process.py). ``peer_timeout_s``: their ``$LNEXP_PEER_TIMEOUT_S``."""
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    start = time.monotonic()
    try:
        for i, flags in enumerate(extra):
            command = cli_command(workdir, data_dir, *overrides)
            if fault is not None:
                command[1:3] = [str(REPO / "tests" / "faulty_process.py"), fault[0], str(fault[1])]
            command += [
                f"--coordinator_address=localhost:{port}",
                f"--num_processes={len(extra)}",
                f"--process_id={i}",
                *flags,
            ]
            with (logs / f"{i}.log").open("w") as log:  # Files: a full pipe cannot block one.
                processes.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        env={**cli_env(1), "LNEXP_PEER_TIMEOUT_S": str(peer_timeout_s)},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
    finally:
        wait_all(processes, timeout_s)
    seconds = time.monotonic() - start
    return [
        SimpleNamespace(
            returncode=p.returncode, stderr=(logs / f"{i}.log").read_text(), seconds=seconds
        )
        for i, p in enumerate(processes)
    ]


def restore_latest(workdir: Path) -> dict:
    """The last checkpoint of a run on any number of devices and processes, restored onto this
    process's first device (a checkpoint restores onto other devices only given a target)."""
    run = RunDir(workdir)
    with run.checkpoints() as checkpoints:
        state = checkpoints.restore(run.latest_step())
    return jax.tree.map(np.asarray, state)


def assert_all_succeeded(results: list[SimpleNamespace]) -> None:
    for i, result in enumerate(results):
        assert result.returncode == 0, f"process {i}:\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def two_process_run(tiny_mnist_dir, tmp_path_factory) -> tuple[Path, list[SimpleNamespace]]:
    """Two epochs over two processes with one device each; its workdir and the processes'
    results."""
    workdir = tmp_path_factory.mktemp("two_processes")
    logs = tmp_path_factory.mktemp("two_process_logs")
    results = run_processes(workdir, tiny_mnist_dir, *OVERRIDES, logs=logs)
    assert_all_succeeded(results)
    return workdir, results


# --------------------------------------------------------------------------------------------
# 1. Two processes compute what one process over as many devices computes.


@pytest.mark.slow
def test_two_processes_match_one_process_with_two_devices(
    two_process_run, tiny_mnist_dir, tmp_path
):
    workdir, results = two_process_run
    reference = tmp_path / "one_process"
    result = run_cli(reference, tiny_mnist_dir, *OVERRIDES, devices=2)
    assert result.returncode == 0, result.stderr[-3000:]

    ours, theirs = read_records(workdir), read_records(reference)
    assert [r["epoch"] for r in ours] == [1, 2]  # Written once: by process 0 only.
    for a, b in zip(theirs, ours, strict=True):
        assert a.keys() == b.keys() and (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        for key in a:
            if key.endswith(("_nll", "_loss")):
                np.testing.assert_allclose(b[key], a[key], rtol=1e-5, err_msg=key)
            elif key.endswith("_error"):
                assert abs(a[key] - b[key]) <= 1 / 50 + 1e-6, (key, a[key], b[key])

    # Only process 0 wrote the metrics (TensorBoard too) and logged the epochs.
    assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert "epoch 2/2 (step " in results[0].stderr
    assert "epoch 2/2 (step " not in results[1].stderr
    assert sorted(p.name for p in workdir.iterdir()) == [
        ".lock",  # Held by process 0 while the run trained.
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "tensorboard",
    ]

    # The checkpoint both processes wrote restores in one process, equal to the reference's.
    state, expected = restore_latest(workdir), restore_latest(reference)
    assert int(state["step"]) == ours[-1]["step"] and int(state["epoch"]) == 2
    assert jax.tree.structure(state) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_process_run_resumes(two_process_run, tiny_mnist_dir, tmp_path):
    """One epoch, then the same command with two: identical to the uninterrupted run."""
    workdir = tmp_path / "run"
    first = (f"--config.model.norm={NORM}", "--config.num_epochs=1")
    assert_all_succeeded(run_processes(workdir, tiny_mnist_dir, *first, logs=tmp_path / "1"))
    assert len(read_records(workdir)) == 1
    results = run_processes(workdir, tiny_mnist_dir, *OVERRIDES, logs=tmp_path / "2")
    assert_all_succeeded(results)
    assert "Resumed from the checkpoint" in results[0].stderr

    uninterrupted = two_process_run[0]
    assert without_timing(read_records(workdir)) == without_timing(read_records(uninterrupted))
    assert_trees_equal(restore_latest(workdir), restore_latest(uninterrupted))


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, words",
    [
        # Two hosts that each see their own workdir would each write half of every checkpoint.
        (
            ("--workdir={tmp}/elsewhere",),
            ["Process 1 does not see", "config.json", "filesystem that every host shares"],
        ),
        (("--config.seed=1",), ["Process 1 does not have the config of process 0"]),
    ],
)
def test_processes_that_disagree_are_refused(tiny_mnist_dir, tmp_path, flags, words):
    flags = tuple(f.format(tmp=tmp_path) for f in flags)
    results = run_processes(
        tmp_path / "run", tiny_mnist_dir, *OVERRIDES, logs=tmp_path / "logs", extra=((), flags)
    )
    for result in results:
        assert_clean_cli_error(result, *words)
    assert not (tmp_path / "elsewhere" / "config.json").exists()


# --------------------------------------------------------------------------------------------
# 1b. A disk fault seen by one process alone ends every process, soon, with the error.

# A failed checkpoint write is seen by the other process only through JAX's heartbeat, so these
# runs' peer timeout is shorter than the other tests' (which a loaded machine must not trip).
FAULT_PEER_TIMEOUT_S = 10
FAULT_BOUND_S = 100  # FAULT_PEER_TIMEOUT_S, plus the processes' start (on a loaded machine).


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fault", "process", "words"),
    [
        ("lock", 0, "the lock file .lock"),
        ("config", 0, "config.json"),
        ("record", 0, "metrics.jsonl"),
        ("checkpoint", 1, "checkpoint"),
    ],
)
def test_a_disk_fault_on_one_process_ends_every_process(
    fault, process, words, tiny_mnist_dir, tmp_path
):
    """The process that met the fault says what it was; the other one says which process
    stopped the run (for a checkpoint, whose write fails inside orbax's background save, JAX's
    own message that another task died); both exit with an error within FAULT_BOUND_S, never
    waiting at a collective until JAX's default timeouts (5 to 20 minutes)."""
    results = run_processes(
        tmp_path / "run",
        tiny_mnist_dir,
        *OVERRIDES,
        logs=tmp_path / "logs",
        fault=(fault, process),
        timeout_s=FAULT_BOUND_S + 60,
        peer_timeout_s=FAULT_PEER_TIMEOUT_S,
    )
    assert results[0].seconds < FAULT_BOUND_S, (results[0].seconds, results[0].stderr[-2000:])
    for i, result in enumerate(results):
        assert result.returncode != 0, f"process {i}:\n{result.stderr[-3000:]}"
    failed, other = results[process].stderr, results[1 - process].stderr
    assert "Traceback" not in failed and "error: " in failed and words in failed, failed[-3000:]
    told = f"error: Process {process} could not" in other and "Traceback" not in other
    assert told or (fault == "checkpoint" and "another task died" in other), other[-3000:]


@pytest.mark.slow
def test_a_checkpoint_one_process_fails_to_read_part_way(two_process_run, tiny_mnist_dir, tmp_path):
    """Process 1 alone fails to read each checkpoint, after orbax began: the processes agree
    that it does not read back (moved aside, never deleted) and end together, soon."""
    import shutil

    workdir = shutil.copytree(two_process_run[0], tmp_path / "run")
    steps = RunDir(workdir).checkpoint_steps()
    results = run_processes(
        workdir,
        tiny_mnist_dir,
        *OVERRIDES,
        logs=tmp_path / "logs",
        fault=("restore", 1),
        timeout_s=FAULT_BOUND_S + 60,
    )
    assert results[0].seconds < FAULT_BOUND_S
    for result in results:
        assert_clean_cli_error(result, "No checkpoint in", "reads back")
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == sorted(
        f"{s}.damaged" for s in steps
    )


# --------------------------------------------------------------------------------------------
# 2. Settings: from flags or the environment; an incomplete set is one clear error.


def test_no_settings_is_one_process():
    assert distributed.initialize(environ={}) is False


@pytest.mark.parametrize(
    "kwargs, environ, words",
    [
        (dict(process_id=1), {}, ["--process_id given without", "--coordinator_address"]),
        (
            dict(num_processes=2, process_id=0),
            {},
            ["without --coordinator_address ($JAX_COORDINATOR_ADDRESS)", "--distributed"],
        ),
        (
            {},
            {"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"},
            ["$JAX_COORDINATOR_ADDRESS given without", "--num_processes", "--process_id"],
        ),
        (dict(local_device_ids=[0]), {}, ["--local_device_ids given without"]),
        (
            dict(coordinator_address="h:1", num_processes=2, process_id=2),
            {},
            ["--process_id=2 is out of range", "from 0 to 1"],
        ),
        (dict(coordinator_address="h:1", process_id=0), {"JAX_NUM_PROCESSES": "0"}, ["at least"]),
        (
            dict(coordinator_address="h:1", process_id=0),
            {"JAX_NUM_PROCESSES": "two"},
            ["$JAX_NUM_PROCESSES='two' is not an integer", "--num_processes=N"],
        ),
        (
            dict(coordinator_address="h:1", num_processes=2, process_id=0),
            {"JAX_LOCAL_DEVICE_IDS": "0,x"},
            ["$JAX_LOCAL_DEVICE_IDS=0,x", "comma-separated"],
        ),
    ],
)
def test_incomplete_or_invalid_settings_are_user_errors(kwargs, environ, words):
    with pytest.raises(UserError) as info:
        distributed.initialize(**kwargs, environ=environ)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_cli_process_id_without_coordinator(tiny_mnist_dir, tmp_path):
    result = run_cli(tmp_path, tiny_mnist_dir, "--process_id=1")
    assert_clean_cli_error(result, "--process_id given without", "--coordinator_address")


def test_cli_distributed_outside_a_cluster(tiny_mnist_dir, tmp_path):
    """Not under SLURM, Open MPI, ...: the flag cannot find its settings, and says what to do."""
    cluster = ("SLURM_", "OMPI_", "PMI_", "TPU_", "KUBERNETES_", "JAX_COORDINATOR_")
    env = {k: v for k, v in cli_env().items() if not k.startswith(cluster)}
    command = cli_command(tmp_path, tiny_mnist_dir, "--distributed")
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert_clean_cli_error(result, "--distributed: JAX could not detect", "--coordinator_address")


def test_batch_size_message_counts_every_process(tiny_mnist_dir, monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    config = make_config(tiny_mnist_dir, batch_size=12)
    with pytest.raises(UserError) as info:
        checks.check_batch_size(config, SimpleNamespace(size=8))
    message = str(info.value)
    assert "over the 8 devices of this run (2 processes, 4 devices each" in message, message
    assert "--config.batch_size=8" in message, message
