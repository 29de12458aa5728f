"""Stopping on SIGTERM (preemption) and SIGINT (Ctrl-C), and resuming mid-epoch
(lnexp.training.preemption and the loop).

The command-line tests send a real signal to a real ``python -m lnexp.main`` mid-run: it must
stop at the next chunk boundary with status 143 (SIGTERM) or 130 (SIGINT), one ``stopped:``
paragraph and no traceback, leaving a checkpoint of that step; rerunning the same command must
end with the metrics and the state of an uninterrupted run, bit for bit (CPU). The in-process
tests stop the loop at a chosen chunk (the stop request is patched in) to cover what a signal's
timing cannot choose: a resumed run that cuts its chunks elsewhere, seeds trained together,
skip-thoughts' length-grouped chunks.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import wait_all
from test_multihost import free_port
from test_skipthought import tiny_config
from test_train import (
    REPO,
    assert_trees_equal,
    cli_command,
    cli_env,
    make_config,
    read_records,
    restore_latest,
    subprocess_compilation_cache,  # noqa: F401 (an autouse fixture: shared compilation cache)
    without_timing,
)

from lnexp import training
from lnexp.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted, UserError
from lnexp.training import preemption
from lnexp.training.preemption import StopSignals
from lnexp.training.run_dir import RunDir

TIMEOUT_S = 240
BATCH_SIZE = 8
STEPS_PER_EPOCH = 550 // BATCH_SIZE  # The tiny MNIST files of conftest: 550 training images.
NUM_EPOCHS = 3
# Tiny PI-MNIST (test_train's (32, 32) MLP): many short chunks an epoch, a progress line after
# each.
SETTINGS = dict(
    batch_size=BATCH_SIZE,
    steps_per_call=2,
    num_epochs=NUM_EPOCHS,
    log_every_s=0.0,
)
CLI_OVERRIDES = tuple(
    f"--config.{k.replace('__', '.')}={str(v).replace(' ', '')}" for k, v in SETTINGS.items()
)
TIMING_KEYS = ("wall_s", "examples_per_sec", "compile_s", "sentences_per_sec")


def strip_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in without_timing(records)]


@pytest.fixture(scope="module")
def reference(tiny_mnist_dir, tmp_path_factory) -> Path:
    """The uninterrupted run, in process (the same devices as the subprocesses)."""
    workdir = tmp_path_factory.mktemp("reference")
    training.train_and_evaluate(make_config(tiny_mnist_dir, **SETTINGS), workdir)
    return workdir


def wait_for_progress(log: Path, process: subprocess.Popen, count: int = 1) -> None:
    """Waits until the run has logged ``count`` progress lines (it has trained that many
    chunks)."""
    deadline = time.monotonic() + TIMEOUT_S
    while log.read_text().count("] step ") < count:
        assert process.poll() is None, f"the run ended before the signal:\n{log.read_text()}"
        assert time.monotonic() < deadline, "no progress line in time"
        time.sleep(0.005)


def finish(processes: list[subprocess.Popen]) -> None:
    wait_all(processes, TIMEOUT_S)


def stop_with(command: list[str], signum: int, log: Path) -> tuple[int, str]:
    """Runs ``command`` until its first progress line, sends ``signum``; its status and log."""
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=cli_env(), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_for_progress(log, process)
        process.send_signal(signum)
    finally:
        finish([process])
    return process.returncode, log.read_text()


def assert_stopped(status: int, text: str, expected_status: int, name: str) -> None:
    assert status == expected_status, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    message = text[text.index("stopped: ") :]
    for words in (f"on {name}", "training stopped at step", "Resume with the same command"):
        assert words in message, message


def stop_step(text: str) -> int:
    return int(text.split("training stopped at step ")[1].split()[0])


def rerun(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )


# --------------------------------------------------------------------------------------------
# 1. A real signal to the command line.


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "status"), [(signal.SIGTERM, EXIT_TERMINATED), (signal.SIGINT, EXIT_INTERRUPTED)]
)
def test_cli_signal_stops_checkpoints_and_resumes_bitwise(
    signum, status, reference, tiny_mnist_dir, tmp_path
):
    workdir = tmp_path / "run"
    command = cli_command(workdir, tiny_mnist_dir, *CLI_OVERRIDES)
    code, text = stop_with(command, signum, tmp_path / "stopped.log")
    assert_stopped(code, text, status, signal.Signals(signum).name)
    step = stop_step(text)
    run = RunDir(workdir)
    assert run.latest_step() == step and str(run.checkpoint_dir / str(step)) in text
    assert all(r["step"] <= step for r in read_records(workdir))
    assert len(read_records(workdir)) == step // STEPS_PER_EPOCH  # No record lost or extra.
    if step % STEPS_PER_EPOCH:  # Inside an epoch (nearly always: 34 chunks an epoch).
        assert preemption.partial_path(run.path, step).exists()

    result = rerun(command)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"Resumed from the checkpoint at step {step}" in result.stderr
    records = read_records(workdir)
    assert [r["epoch"] for r in records] == list(range(1, NUM_EPOCHS + 1))
    assert strip_timing(records) == strip_timing(read_records(reference))
    assert_trees_equal(restore_latest(workdir), restore_latest(reference))
    # Tidied once no longer needed: only the kept checkpoints' partial epochs remain.
    partials = {p.stem for p in (workdir / preemption.PARTIAL_DIR).glob("*")}
    assert partials <= {str(s) for s in run.checkpoint_steps()}


@pytest.mark.slow
def test_cli_skipthought_sigterm_resumes_bitwise(tiny_books_dir, tmp_path):
    settings = ("--config.steps_per_epoch=30", "--config.steps_per_call=2")
    settings += ("--config.log_every_s=0",)
    base = [
        "--config=configs/skipthought.py:tiny",
        f"--config.data.dir={tiny_books_dir}",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
        *settings,
    ]

    def command(workdir: Path) -> list[str]:
        return [sys.executable, "-m", "lnexp.main", *base, f"--workdir={workdir}"]

    straight = rerun(command(tmp_path / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    code, text = stop_with(command(tmp_path / "run"), signal.SIGTERM, tmp_path / "stopped.log")
    assert_stopped(code, text, EXIT_TERMINATED, "SIGTERM")
    result = rerun(command(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    ours, theirs = read_records(tmp_path / "run"), read_records(tmp_path / "straight")
    assert [r["epoch"] for r in ours] == [1, 2]
    assert strip_timing(ours) == strip_timing(theirs)
    assert_trees_equal(restore_latest(tmp_path / "run"), restore_latest(tmp_path / "straight"))


def launch_two(workdir: Path, data_dir: Path, logs: Path) -> list[subprocess.Popen]:
    port = free_port()
    logs.mkdir(parents=True, exist_ok=True)
    processes = []
    for i in range(2):
        command = cli_command(workdir, data_dir, *CLI_OVERRIDES) + [
            f"--coordinator_address=localhost:{port}",
            "--num_processes=2",
            f"--process_id={i}",
        ]
        with (logs / f"{i}.log").open("w") as log:
            processes.append(
                subprocess.Popen(
                    command, cwd=REPO, env=cli_env(1), stdout=log, stderr=subprocess.STDOUT
                )
            )
    return processes


@pytest.mark.slow
def test_two_processes_stop_at_the_same_step(tiny_mnist_dir, tmp_path):
    """SIGTERM to process 1 only: both stop after the same chunk, checkpoint it and exit 143;
    rerunning both ends as the uninterrupted two-process run does."""
    straight = launch_two(tmp_path / "straight", tiny_mnist_dir, tmp_path / "straight_logs")
    finish(straight)
    assert [p.returncode for p in straight] == [0, 0]

    logs = tmp_path / "logs"
    processes = launch_two(tmp_path / "run", tiny_mnist_dir, logs)
    try:
        wait_for_progress(logs / "0.log", processes[0])
        processes[1].send_signal(signal.SIGTERM)
    finally:
        finish(processes)
    texts = [(logs / f"{i}.log").read_text() for i in range(2)]
    for process, text in zip(processes, texts, strict=True):
        assert_stopped(process.returncode, text, EXIT_TERMINATED, "SIGTERM")
        assert "received by process 1" in text
    assert stop_step(texts[0]) == stop_step(texts[1]) == RunDir(tmp_path / "run").latest_step()

    resumed = launch_two(tmp_path / "run", tiny_mnist_dir, tmp_path / "resumed_logs")
    finish(resumed)
    assert [p.returncode for p in resumed] == [0, 0]
    ours, theirs = read_records(tmp_path / "run"), read_records(tmp_path / "straight")
    assert strip_timing(ours) == strip_timing(theirs)
    assert_trees_equal(restore_latest(tmp_path / "run"), restore_latest(tmp_path / "straight"))


# --------------------------------------------------------------------------------------------
# 2. In process: a stop after a chosen chunk.


@pytest.fixture
def stop_after(monkeypatch):
    """``stop_after(n)``: the loop sees a SIGTERM after its ``n``-th chunk (of this run)."""

    def arm(chunks: int) -> None:
        calls = []

        def poll(self):
            calls.append(1)
            return ("SIGTERM", 0) if len(calls) == chunks else None

        monkeypatch.setattr(StopSignals, "poll", poll)

    yield arm
    monkeypatch.undo()


def test_resume_cutting_chunks_elsewhere_is_bitwise(
    stop_after, reference, tiny_mnist_dir, tmp_path, monkeypatch
):
    """Stopped after 6 steps of epoch 2, resumed with 3 steps a call: the chunk in which it
    resumes is cut at another step, and the result is the same bits."""
    stop_after(34 + 1 + 3)  # Epoch 1's 34 chunks, the poll after its evaluation, 3 chunks.
    with pytest.raises(Interrupted, match=r"at step 74 \(epoch 2 of 3, 6 of its 68 steps\)"):
        training.train_and_evaluate(make_config(tiny_mnist_dir, **SETTINGS), tmp_path)
    assert len(read_records(tmp_path)) == 1
    monkeypatch.undo()
    training.train_and_evaluate(
        make_config(tiny_mnist_dir, **{**SETTINGS, "steps_per_call": 4}), tmp_path
    )
    assert strip_timing(read_records(tmp_path)) == strip_timing(read_records(reference))
    assert_trees_equal(restore_latest(tmp_path), restore_latest(reference))


def test_stop_at_an_epoch_end_then_again_mid_epoch(stop_after, reference, tiny_mnist_dir, tmp_path):
    """A stop during an epoch's evaluation leaves that epoch's checkpoint; a run can be stopped
    and resumed several times."""
    config = make_config(tiny_mnist_dir, **SETTINGS)
    stop_after(35)  # The poll after epoch 1's evaluation.
    with pytest.raises(Interrupted, match=r"at step 68 \(the end of epoch 1 of 3\)"):
        training.train_and_evaluate(config, tmp_path)
    stop_after(1)
    with pytest.raises(Interrupted, match=r"at step 70 \(epoch 2 of 3, 2 of its 68 steps\)"):
        training.train_and_evaluate(config, tmp_path)
    stop_after(5)
    with pytest.raises(Interrupted, match=r"at step 80 "):
        training.train_and_evaluate(config, tmp_path)
    assert RunDir(tmp_path).checkpoint_steps()[-1] == 80
    stop_after(10**9)
    training.train_and_evaluate(config, tmp_path)
    assert strip_timing(read_records(tmp_path)) == strip_timing(read_records(reference))
    assert_trees_equal(restore_latest(tmp_path), restore_latest(reference))


def test_seeds_trained_together_stop_and_resume(stop_after, tiny_mnist_dir, tmp_path):
    config = make_config(tiny_mnist_dir, **{**SETTINGS, "num_epochs": 2})
    straight = [tmp_path / f"straight{s}" for s in (0, 1)]
    training.train_seeds(config, [0, 1], straight)
    run = [tmp_path / f"run{s}" for s in (0, 1)]
    stop_after(40)
    with pytest.raises(Interrupted, match="at step 78 "):
        training.train_seeds(config, [0, 1], run)
    stop_after(10**9)
    training.train_seeds(config, [0, 1], run)
    for ours, theirs in zip(run, straight, strict=True):
        assert strip_timing(read_records(ours)) == strip_timing(read_records(theirs))
        assert_trees_equal(restore_latest(ours), restore_latest(theirs))


def test_skipthought_resumes_mid_epoch_bitwise(stop_after, tiny_books_dir, tmp_path):
    """Length-grouped chunks of several widths, epochs of steps_per_epoch steps across passes."""
    config = tiny_config(
        tiny_books_dir, tmp_path / "cache", num_epochs=2, steps_per_epoch=30, steps_per_call=4
    )
    training.train_and_evaluate(config, tmp_path / "straight")
    stop_after(3)  # Epoch 1 has 8 or more chunks (30 steps, 4 a call at most).
    with pytest.raises(Interrupted, match=r"epoch 1 of 2, \d+ of its 30 steps"):
        training.train_and_evaluate(config, tmp_path / "run")
    stop_after(10**9)
    training.train_and_evaluate(config, tmp_path / "run")
    ours, theirs = read_records(tmp_path / "run"), read_records(tmp_path / "straight")
    assert strip_timing(ours) == strip_timing(theirs)
    assert_trees_equal(restore_latest(tmp_path / "run"), restore_latest(tmp_path / "straight"))


def test_missing_partial_epoch_metrics_is_a_user_error(stop_after, tiny_mnist_dir, tmp_path):
    config = make_config(tiny_mnist_dir, **SETTINGS)
    stop_after(3)
    with pytest.raises(Interrupted):
        training.train_and_evaluate(config, tmp_path)
    preemption.partial_path(tmp_path, 6).unlink()
    stop_after(10**9)
    with pytest.raises(UserError) as e:
        training.train_and_evaluate(config, tmp_path)
    assert "lies inside an epoch" in str(e.value) and "checkpoints/6" in str(e.value)


def test_signal_handlers_are_restored():
    before = [signal.getsignal(s) for s in preemption.SIGNALS]
    with StopSignals() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGTERM and stop.poll() == ("SIGTERM", 0)
        signal.raise_signal(signal.SIGINT)  # Another signal after the first: still no exit.
    assert [signal.getsignal(s) for s in preemption.SIGNALS] == before
    with StopSignals() as stop, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        assert stop.poll() == ("SIGINT", 0)
        signal.raise_signal(signal.SIGINT)  # The second Ctrl-C stops at once.
