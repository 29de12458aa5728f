"""Every file a run reads back, damaged for real, then the command run again (issue 28, part 2):
``config.json`` (one error paragraph, nothing changed), ``metrics.jsonl`` (a torn last record put
back from its checkpoint's copy, or a warning line and the report's note; a damaged middle line an
error), the lock file, the partial-epoch files of a stopped run. The study files (``chars.json``,
``vocab.txt``, saved evaluations, the corpus cache) are in the studies' tests.

In this process, through :func:`lnexp.cli.call` of ``python -m lnexp.main`` (its flags, its
``main``); each test damages a copy of one finished run."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from test_train import CONFIG_FILE, make_config

from lnexp import cli, training
from lnexp import main as command
from lnexp.errors import Interrupted
from lnexp.reporting import summary
from lnexp.training.preemption import PARTIAL_DIR, StopSignals
from lnexp.training.run_dir import RunDir

ARGS = (
    "--config.model.hidden_sizes=(32,32)",
    "--config.num_epochs=2",
    "--config.batch_size=32",
    "--config.eval_batch_size=200",
)


def run_command(workdir: Path, data_dir: Path) -> tuple[int, str]:
    """``python -m lnexp.main`` on ``workdir`` with the settings of :func:`finished`."""
    argv = ["lnexp.main", f"--config={CONFIG_FILE}", f"--workdir={workdir}", *ARGS]
    argv.append(f"--config.data.dir={data_dir}")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.call(command.main, argv, command.define_flags)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def finished(tiny_mnist_dir, tmp_path_factory) -> Path:
    """A finished 2-epoch run (checkpoints at both epochs), trained once for the module."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    status, err = run_command(workdir, tiny_mnist_dir)
    assert status == 0, err
    return workdir


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    return Path(shutil.copytree(finished, tmp_path / "run"))


def files(workdir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(workdir)): p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


@pytest.mark.parametrize("damage", ['{"experiment": "pim', "[1, 2]\n", "\xff\xfe", ""])
def test_a_damaged_config_json_is_one_error_and_changes_nothing(run, tiny_mnist_dir, damage):
    (run / "config.json").write_bytes(damage.encode("latin-1"))
    before = files(run)
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 2, err
    error = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in err, err
    assert "config.json is damaged" in error[0] and "delete config.json" in error[0], err
    assert files(run) == before  # Checkpoints, records, the config as it was.


def test_a_torn_last_record_is_put_back_from_its_checkpoint(run, tiny_mnist_dir, caplog):
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole[: len(whole) - 40])  # A crash in the middle of the last append.
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 0, err
    assert "Put back" in caplog.text and "its last line was cut short" in caplog.text
    assert metrics.read_text() == whole  # The very record, every field.


def test_a_lost_record_is_put_back_too(run, tiny_mnist_dir, caplog):
    """A record that never reached the disk (a power cut) while its checkpoint did."""
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole.splitlines(keepends=True)[0])
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 0 and "a write was lost" in caplog.text, err
    assert metrics.read_text() == whole


def test_a_torn_last_record_without_a_copy_is_evaluated_again(run, tiny_mnist_dir, caplog):
    """A checkpoint from before the copies (or whose copy is gone): the finished run's last
    record is rebuilt by evaluating its checkpoint again: the same evaluations, marked."""
    last = RunDir(run).checkpoint_steps()[-1]
    shutil.rmtree(run / "checkpoints" / str(last) / "record")
    metrics = run / "metrics.jsonl"
    whole = metrics.read_text()
    metrics.write_text(whole[: len(whole) - 40])
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 0, err
    assert "evaluated its checkpoint again" in caplog.text
    before, after = json.loads(whole.splitlines()[-1]), RunDir(run).records()[-1]
    evaluations = [k for k in before if k.split("_")[0] in ("train", "valid", "test")]
    evaluations = [k for k in evaluations if not k.startswith(("train_loss", "train_batch"))]
    assert evaluations and all(after[k] == before[k] for k in evaluations)
    assert after["step"] == last and "repaired" in after


def test_a_lost_record_without_a_copy_is_one_warning_and_in_the_report(run, tiny_mnist_dir, caplog):
    first = RunDir(run).checkpoint_steps()[0]
    shutil.rmtree(run / "checkpoints" / str(first) / "record")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(lines[1])  # The first record lost, no copy of it kept.
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 0, err
    assert "lacks the record(s) of epoch(s) 1" in caplog.text
    assert [r["epoch"] for r in RunDir(run).records()] == [2]
    grid = run.parent / "grid"
    shutil.copytree(run, grid / "cell" / "seed=0")
    summary.report(grid)
    assert "**Records missing**" in (grid / "summary.md").read_text()
    assert "cell seed 0 lacks epoch(s) 1" in (grid / "summary.md").read_text()


def test_a_damaged_middle_record_is_one_error(run, tiny_mnist_dir):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text('{"epoch": 1, "st\n' + lines[1])
    before = files(run)
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 2 and "Traceback" not in err, err
    assert "metrics.jsonl, line 1, is not an evaluation record" in err, err
    assert files(run) == before


def test_a_lock_file_of_garbage_is_no_obstacle(run, tiny_mnist_dir):
    (run / ".lock").write_bytes(b"\xff\xfe\x00 not text \x80")
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 0, err


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip"])
def test_a_damaged_partial_epoch_file_is_one_error(damage, tiny_mnist_dir, tmp_path, monkeypatch):
    """A run stopped mid-epoch keeps that epoch's metrics so far beside its checkpoint; damaged,
    the resume names the file and what to do, and moves nothing."""
    polls = []
    monkeypatch.setattr(StopSignals, "poll", lambda self: polls.append(1) or ("SIGTERM", 0))
    config = make_config(tiny_mnist_dir, num_epochs=2, batch_size=32, steps_per_call=4)
    with pytest.raises(Interrupted):
        training.train_and_evaluate(config, tmp_path / "run")
    monkeypatch.undo()
    partial = next((tmp_path / "run" / PARTIAL_DIR).glob("*.npz"))
    partial.write_bytes(damage)
    before = files(tmp_path / "run")
    argv = ["lnexp.main", f"--config={CONFIG_FILE}", f"--workdir={tmp_path / 'run'}"]
    argv += ["--config.model.hidden_sizes=(32,32)", "--config.num_epochs=2"]
    argv += ["--config.batch_size=32", "--config.steps_per_call=4", "--config.eval_batch_size=200"]
    argv.append(f"--config.data.dir={tiny_mnist_dir}")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.call(command.main, argv, command.define_flags)
    assert status == 2, err.getvalue()
    assert f"{partial}, which holds that epoch's training metrics so far, is damaged" in (
        err.getvalue()
    )
    assert files(tmp_path / "run") == before


def test_records_are_synced_as_they_are_written(run, monkeypatch, tiny_mnist_dir):
    """Every append of metrics.jsonl and every config.json is fsynced (as the checkpoints are):
    a power cut cannot leave a checkpoint on the disk without the record written before it."""
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd)
    )
    shutil.rmtree(run)
    status, err = run_command(run, tiny_mnist_dir)
    assert status == 0, err
    names = [Path(p).name for p in synced]
    assert names.count("metrics.jsonl") == 2 and "config.json.tmp" in names, names
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2
