"""Tests for lnexp.training (the training loop) and the lnexp.main command line, end to end.

Most tests train a small MLP on tiny IDX files written here (each class a fixed random prototype
plus noise, so a few epochs of training lower the loss). Command-line behaviour (error messages,
SIGKILL, forced multi-device runs) is exercised in subprocesses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import load_config
from flax import nnx

from lnexp import norms, training
from lnexp.errors import UserError
from lnexp.studies.pimnist import task as pimnist
from lnexp.training import metric_writers
from lnexp.training.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = REPO / "configs" / "pimnist.py"

N_TRAIN_FILE = 600  # -> valid 50, train 550: 17 steps an epoch at batch size 32
N_TEST_FILE = 100
BATCH_SIZE = 32
STEPS_PER_EPOCH = (N_TRAIN_FILE - N_TRAIN_FILE * 5000 // 60000) // BATCH_SIZE
NORMS = tuple(norms.REGISTRY)  # Every method: a new entry gets its smoke run with no edit here.

TIMING_KEYS = ("wall_s", "examples_per_sec", "compile_s")
REQUIRED_KEYS = (
    "epoch",
    "step",
    "train_nll",
    "valid_nll",
    "valid_error",
    "test_nll",
    "test_error",
    "examples_per_sec",
    "wall_s",
)


# --------------------------------------------------------------------------------------------
# Helpers.


def make_config(data_dir: Path, **overrides) -> ml_collections.ConfigDict:
    """configs/pimnist.py with a small model and short run; ``a__b=v`` sets ``config.a.b``."""
    defaults = dict(
        data__dir=str(data_dir),
        model__hidden_sizes=(32, 32),
        num_epochs=3,
        batch_size=BATCH_SIZE,
        eval_batch_size=200,
    )
    return load_config("pimnist", **{**defaults, **overrides})


CLI_BASE = (
    f"--config={CONFIG_FILE}",
    "--config.model.hidden_sizes=(32,32)",
    "--config.num_epochs=3",
    f"--config.batch_size={BATCH_SIZE}",
    "--config.eval_batch_size=200",
)


# Set by the autouse fixture ``subprocess_compilation_cache``.
_SUBPROCESS_ENV: dict[str, str] = {}


def cli_env(devices: int | None = None) -> dict[str, str]:
    env = dict(os.environ, JAX_PLATFORMS="cpu", **_SUBPROCESS_ENV)
    if devices is not None:
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    return env


def cli_command(workdir: Path, data_dir: Path | None, *overrides: str) -> list[str]:
    args = [sys.executable, "-m", "lnexp.main", *CLI_BASE, f"--workdir={workdir}"]
    if data_dir is not None:
        args.append(f"--config.data.dir={data_dir}")
    return args + list(overrides)


def run_cli(
    workdir: Path, data_dir: Path | None, *overrides: str, devices: int | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(workdir, data_dir, *overrides),
        cwd=REPO,
        env=cli_env(devices),
        capture_output=True,
        text=True,
        timeout=300,
    )


def read_records(workdir: Path) -> list[dict]:
    """The records of a run, read independently of lnexp (none when there is no file)."""
    path = workdir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def checkpoint_steps(workdir: Path) -> list[int]:
    with ocp.CheckpointManager(workdir / "checkpoints") as manager:
        return list(manager.all_steps())


def restore_latest(workdir: Path) -> dict:
    """The last checkpoint's training state (model and optimizer items) as NumPy arrays."""
    run = RunDir(workdir)
    with run.checkpoints() as checkpoints:
        state = checkpoints.restore(run.latest_step())
    return jax.tree.map(np.asarray, state)


def assert_trees_equal(a, b) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def assert_clean_cli_error(result: subprocess.CompletedProcess, *words: str) -> None:
    """A non-zero exit with an ``error:`` paragraph naming ``words`` and no traceback."""
    assert result.returncode != 0, result.stderr
    assert "error:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr[result.stderr.index("error:") :]
    for word in words:
        assert word in message, (word, message)


@pytest.fixture(scope="module", autouse=True)
def subprocess_compilation_cache(tmp_path_factory):
    """A persistent JAX compilation cache shared by this module's subprocesses (only theirs):
    it saves most of each command's start-up time, and cached programs compute the same bits."""
    _SUBPROCESS_ENV.update(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("jax_cache")),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1",
    )
    yield
    _SUBPROCESS_ENV.clear()


@pytest.fixture(scope="module")
def tiny_dir(tiny_mnist_dir) -> Path:
    return tiny_mnist_dir


@pytest.fixture(scope="module")
def reference_runs(tiny_dir, tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted 3-epoch runs (layer and batch norm), each trained once for the module."""
    runs = {}
    for norm in ("layer", "batch"):
        workdir = tmp_path_factory.mktemp(f"reference_{norm}")
        training.train_and_evaluate(make_config(tiny_dir, model__norm=norm), workdir)
        runs[norm] = workdir
    return runs


# --------------------------------------------------------------------------------------------
# 1. Smoke runs of every normalization.


@pytest.mark.parametrize("norm", NORMS)
def test_smoke_every_norm(tiny_dir, tmp_path, norm):
    config = make_config(tiny_dir, model__norm=norm)
    last = training.train_and_evaluate(config, tmp_path)

    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["norm"] == norm
    assert saved["num_epochs"] == 3

    records = read_records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["step"] for r in records] == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]
    assert last == records[-1]
    for record in records:
        for key in REQUIRED_KEYS:
            assert key in record, (key, record)
        for key, value in record.items():
            assert np.isfinite(value), (key, record)
        for key in ("train_error", "valid_error", "test_error"):
            assert 0.0 <= record[key] <= 1.0, (key, record)
        assert record["examples_per_sec"] > 0 and record["wall_s"] > 0
    assert records[-1]["train_nll"] < records[0]["train_nll"]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert {pimnist.REPORT_METRIC, *pimnist.REPORT_METRICS} <= records[-1].keys()  # compare.py's

    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert checkpoint_steps(tmp_path) == [r["step"] for r in records]
    state = restore_latest(tmp_path)
    assert int(state["step"]) == records[-1]["step"] and int(state["epoch"]) == 3


def test_smoke_a_method_added_to_the_registry(tiny_dir, tmp_path, scale_only_norm):
    """tests/conftest.py's one registry entry trains through the config, the experiment, the
    MLP and the loop, with config.model.epsilon passed as its hyperparameter."""
    config = make_config(tiny_dir, model__norm=scale_only_norm, model__epsilon=1e-3, num_epochs=1)
    model = pimnist.build_model(config, nnx.Rngs(0))
    assert [layer.norm_name for layer in model.layers] == [scale_only_norm] * 2 + ["none"]
    assert model.layers[0].norm.epsilon == 1e-3 and model.layers[0].norm.bias is None
    last = training.train_and_evaluate(config, tmp_path)
    assert last["epoch"] == 1 and np.isfinite(last["train_nll"])
    assert json.loads((tmp_path / "config.json").read_text())["model"]["norm"] == scale_only_norm


def test_rerunning_a_finished_run_returns_its_last_record(reference_runs, tiny_dir):
    workdir = reference_runs["layer"]
    before = read_records(workdir)
    last = training.train_and_evaluate(make_config(tiny_dir, model__norm="layer"), workdir)
    assert last == before[-1]
    assert read_records(workdir) == before


# --------------------------------------------------------------------------------------------
# 2. Real MNIST.


@pytest.mark.slow
def test_real_mnist_learns(mnist_dir, tmp_path):
    config = make_config(
        mnist_dir,
        num_epochs=2,
        batch_size=64,
        eval_batch_size=5000,
        model__hidden_sizes=(128, 128),
        data__limit_train=2000,
        optimizer__learning_rate=1e-3,
    )
    last = training.train_and_evaluate(config, tmp_path)
    assert last["epoch"] == 2 and last["step"] == 2 * (2000 // 64)
    assert last["test_error"] < 0.15, last  # 2,000 images, 62 steps: chance is 0.9


# --------------------------------------------------------------------------------------------
# 3. Resuming is bitwise identical to an uninterrupted run.


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_resume_is_bitwise_identical(reference_runs, tiny_dir, tmp_path, norm):
    reference = reference_runs[norm]
    training.train_and_evaluate(make_config(tiny_dir, model__norm=norm, num_epochs=2), tmp_path)
    assert len(read_records(tmp_path)) == 2
    last = training.train_and_evaluate(make_config(tiny_dir, model__norm=norm), tmp_path)

    records = read_records(tmp_path)
    assert last == records[-1]
    assert without_timing(records) == without_timing(read_records(reference))
    assert_trees_equal(restore_latest(tmp_path), restore_latest(reference))


def test_resume_after_losing_the_last_checkpoint(reference_runs, tiny_dir, tmp_path):
    """A kill after an epoch's record was written but before its checkpoint was finalized: the
    re-run drops the record, retrains that epoch and ends up identical to a clean run."""
    config = make_config(tiny_dir, model__norm="batch", num_epochs=2)
    training.train_and_evaluate(config, tmp_path)
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        manager.delete(2 * STEPS_PER_EPOCH)
    training.train_and_evaluate(make_config(tiny_dir, model__norm="batch"), tmp_path)
    reference = read_records(reference_runs["batch"])
    assert without_timing(read_records(tmp_path)) == without_timing(reference)


def test_resume_with_milestones_kept(reference_runs, tiny_dir, tmp_path):
    """checkpoint.keep_every_steps, set when resuming a run trained without it, keeps the
    milestones from then on; the run ends identical to an uninterrupted one."""
    two = make_config(tiny_dir, model__norm="batch", num_epochs=2, checkpoint__keep=1)
    training.train_and_evaluate(two, tmp_path)
    assert RunDir(tmp_path).checkpoint_steps() == [2 * STEPS_PER_EPOCH]
    milestones = make_config(
        tiny_dir,
        model__norm="batch",
        checkpoint__keep=1,
        checkpoint__keep_every_steps=2 * STEPS_PER_EPOCH,
    )
    training.train_and_evaluate(milestones, tmp_path)
    assert RunDir(tmp_path).checkpoint_steps() == [2 * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH]
    reference = read_records(reference_runs["batch"])
    assert without_timing(read_records(tmp_path)) == without_timing(reference)


def test_milestones_that_no_checkpoint_lands_on_are_refused(tiny_dir, tmp_path):
    config = make_config(tiny_dir, checkpoint__keep_every_steps=STEPS_PER_EPOCH + 1)
    with pytest.raises(UserError, match=rf"not a multiple of the {STEPS_PER_EPOCH} steps"):
        training.train_and_evaluate(config, tmp_path)
    assert not RunDir(tmp_path).checkpoint_steps() and not (tmp_path / "config.json").exists()


def test_restart_without_any_checkpoint_rewrites_the_metrics(reference_runs, tiny_dir, tmp_path):
    """Killed before the first checkpoint was finalized: the re-run starts over and does not
    keep the stale record of epoch 1 (which would leave it twice in metrics.jsonl)."""
    config = make_config(tiny_dir, model__norm="batch", num_epochs=1)
    training.train_and_evaluate(config, tmp_path)
    with ocp.CheckpointManager(tmp_path / "checkpoints") as manager:
        manager.delete(STEPS_PER_EPOCH)
    training.train_and_evaluate(make_config(tiny_dir, model__norm="batch"), tmp_path)
    reference = read_records(reference_runs["batch"])
    assert without_timing(read_records(tmp_path)) == without_timing(reference)


@pytest.mark.slow
def test_sigkill_then_rerun_is_bitwise_identical(tiny_dir, tmp_path):
    num_epochs = 10
    overrides = ("--config.model.norm=batch", f"--config.num_epochs={num_epochs}")
    killed = tmp_path / "killed"
    command = cli_command(killed, tiny_dir, *overrides)
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        metrics = killed / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no metrics record within 120 s"
            time.sleep(0.01)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    assert len(read_records(killed)) < num_epochs

    # The uninterrupted run, in process (the same devices as the subprocess: its environment
    # differs only by JAX_PLATFORMS=cpu).
    reference = tmp_path / "reference"
    config = make_config(tiny_dir, model__norm="batch", num_epochs=num_epochs)
    training.train_and_evaluate(config, reference)

    result = subprocess.run(
        command, cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    records = read_records(killed)
    assert [r["epoch"] for r in records] == list(range(1, num_epochs + 1))
    assert without_timing(records) == without_timing(read_records(reference))
    assert_trees_equal(restore_latest(killed), restore_latest(reference))


# --------------------------------------------------------------------------------------------
# 4. One device versus eight (forced) CPU devices.

_MULTI_NORM_SCRIPT = """
import sys
from pathlib import Path
import jax
sys.path.insert(0, "tests")
from test_train import make_config
from lnexp.training import train_and_evaluate
assert jax.device_count() == int(sys.argv[3]), jax.devices()
for norm in ("batch", "layer"):
    config = make_config(Path(sys.argv[1]), model__norm=norm, num_epochs=2)
    train_and_evaluate(config, Path(sys.argv[2]) / norm)
"""


@pytest.mark.slow
def test_one_device_matches_eight_devices(tiny_dir, tmp_path):
    """Batch size 32: 4 examples a device, batch-norm statistics still over all 32."""
    processes = {}
    for devices in (1, 8):
        processes[devices] = subprocess.Popen(
            [sys.executable, "-c", _MULTI_NORM_SCRIPT, str(tiny_dir), str(tmp_path / str(devices))]
            + [str(devices)],
            cwd=REPO,
            env=cli_env(devices),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    for process in processes.values():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr

    for norm in ("batch", "layer"):
        one = read_records(tmp_path / "1" / norm)
        eight = read_records(tmp_path / "8" / norm)
        assert len(one) == len(eight) == 2
        for a, b in zip(one, eight, strict=True):
            assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
            for key in a:
                if key.endswith(("_nll", "_loss")):
                    np.testing.assert_allclose(b[key], a[key], rtol=1e-4, err_msg=f"{norm} {key}")
                elif key.endswith("_error"):
                    # At most one example of a split classified differently.
                    assert abs(a[key] - b[key]) <= 1 / 50 + 1e-6, (norm, key, a[key], b[key])


# --------------------------------------------------------------------------------------------
# 5. Errors: one clear paragraph and a non-zero exit, no traceback.


def test_cli_unknown_config_key(tiny_dir, tmp_path):
    result = run_cli(tmp_path / "run", tiny_dir, "--config.lerning_rate=1")
    assert_clean_cli_error(result, "lerning_rate", "no key")
    assert not (tmp_path / "run").exists()


def test_cli_unknown_norm(tiny_dir, tmp_path):
    result = run_cli(tmp_path, tiny_dir, "--config.model.norm=foo")
    assert_clean_cli_error(result, "'foo'", "config.model.norm", *NORMS)
    assert not (tmp_path / "config.json").exists()


def test_failed_start_does_not_block_the_corrected_run(tiny_dir, tmp_path):
    """A run refused for a bad config value leaves no config behind that refuses the fix."""
    with pytest.raises(UserError, match="config.model.norm='foo' is not a valid name"):
        training.train_and_evaluate(make_config(tiny_dir, model__norm="foo"), tmp_path)
    assert not (tmp_path / "config.json").exists()
    last = training.train_and_evaluate(make_config(tiny_dir, num_epochs=1), tmp_path)
    assert last["epoch"] == 1


def test_cli_batch_size_not_divisible_over_devices(tiny_dir, tmp_path):
    result = run_cli(tmp_path, tiny_dir, "--config.batch_size=6", devices=4)
    assert_clean_cli_error(result, "batch_size=6", "4 devices", "multiple of 4")


def test_cli_missing_data_dir(tmp_path):
    result = run_cli(tmp_path / "run", None, f"--config.data.dir={tmp_path / 'no_such_dir'}")
    assert_clean_cli_error(result, str(tmp_path / "no_such_dir"), "does not exist")


def test_cli_corrupt_data_file(tiny_mnist_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_mnist_dir, data)
    path = data / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = run_cli(tmp_path / "run", data)
    assert_clean_cli_error(result, str(path), "not a valid gzip file")


def test_cli_divergence(tiny_dir, tmp_path):
    result = run_cli(tmp_path, tiny_dir, "--config.optimizer.learning_rate=1e30")
    assert_clean_cli_error(result, "diverged", "epoch 1, step ")
    assert checkpoint_steps(tmp_path) == []
    assert not (tmp_path / "metrics.jsonl").exists() or read_records(tmp_path) == []
    # Nothing was checkpointed, so the advised fix (a lower learning rate) may reuse the workdir.
    result = run_cli(tmp_path, tiny_dir, "--config.optimizer.learning_rate=1e-3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_records(tmp_path)[-1]["epoch"] == 3


def test_divergence_keeps_earlier_checkpoints_and_rerun_resumes(
    reference_runs, tiny_dir, tmp_path, monkeypatch
):
    config = make_config(tiny_dir, model__norm="batch")
    training.train_and_evaluate(make_config(tiny_dir, model__norm="batch", num_epochs=1), tmp_path)

    original = pimnist.loss_fn

    def nan_loss(model, batch, rng):
        loss, metrics = original(model, batch, rng)
        return loss * np.nan, metrics

    with monkeypatch.context() as patch:
        patch.setattr(pimnist, "loss_fn", nan_loss)
        with pytest.raises(UserError) as info:
            training.train_and_evaluate(config, tmp_path)
    message = str(info.value)
    assert f"epoch 2, step {STEPS_PER_EPOCH + 1}" in message, message
    assert "diverged" in message
    assert checkpoint_steps(tmp_path) == [STEPS_PER_EPOCH]
    assert [r["epoch"] for r in read_records(tmp_path)] == [1]

    # With the cause gone, re-running resumes from epoch 1's checkpoint.
    training.train_and_evaluate(config, tmp_path)
    reference = read_records(reference_runs["batch"])
    assert without_timing(read_records(tmp_path)) == without_timing(reference)


# --------------------------------------------------------------------------------------------
# 6. A workdir refuses to resume with a different config.


@pytest.mark.parametrize(
    "key, value, name",
    [
        ("model__norm", "batch", "model.norm"),
        ("optimizer__learning_rate", 1e-2, "optimizer.learning_rate"),
        ("seed", 1, "seed"),
    ],
)
def test_resume_with_different_config_is_refused(reference_runs, tiny_dir, key, value, name):
    workdir = reference_runs["layer"]
    before = read_records(workdir)
    with pytest.raises(UserError, match=rf"different config \(changed: {name}\)"):
        overrides = {"model__norm": "layer", key: value}
        training.train_and_evaluate(make_config(tiny_dir, **overrides), workdir)
    assert read_records(workdir) == before
    assert json.loads((workdir / "config.json").read_text())["model"]["norm"] == "layer"


def test_cli_resume_with_different_config_is_refused(reference_runs, tiny_dir):
    result = run_cli(reference_runs["layer"], tiny_dir, "--config.model.norm=rms")
    assert_clean_cli_error(result, "different config", "model.norm")


# 7. More inputs a user can get wrong, and crash leftovers.


@pytest.mark.parametrize(
    "key,value",
    [
        ("steps_per_call", 0),
        ("eval_batch_size", -1),
        ("checkpoint__every_epochs", 0),
        ("checkpoint__keep", 0),
        ("num_epochs", -1),
    ],
)
def test_nonpositive_settings_are_user_errors(tiny_dir, tmp_path, key, value):
    with pytest.raises(UserError, match=key.replace("__", ".")):
        training.train_and_evaluate(make_config(tiny_dir, **{key: value}), tmp_path)


def test_switching_data_source_on_resume_is_refused(reference_runs, tiny_dir, tmp_path):
    shutil.copytree(reference_runs["layer"], tmp_path, dirs_exist_ok=True)
    moved = tmp_path / "moved_data"
    shutil.copytree(tiny_dir, moved)
    # Another directory with the same files is fine (num_epochs=3: nothing left to train) ...
    training.train_and_evaluate(make_config(tiny_dir, data__dir=str(moved)), tmp_path)
    # ... but switching to config.data.source (the cache, or TFDS: another split) is not.
    with pytest.raises(UserError, match=r"different config \(changed: data.dir\)"):
        training.train_and_evaluate(make_config(tiny_dir, data__dir=None), tmp_path)


def test_non_finite_evaluation_is_neither_recorded_nor_checkpointed(
    tiny_dir, tmp_path, monkeypatch
):
    original = pimnist.eval_fn

    def nan_eval(model, batch):
        return {k: v * np.nan for k, v in original(model, batch).items()}

    monkeypatch.setattr(pimnist, "eval_fn", nan_eval)
    with pytest.raises(UserError, match="non-finite after epoch 1"):
        training.train_and_evaluate(make_config(tiny_dir), tmp_path)
    assert read_records(tmp_path) == []
    assert checkpoint_steps(tmp_path) == []


def test_a_record_cut_short_by_a_kill_is_dropped_on_resume(reference_runs, tiny_dir, tmp_path):
    shutil.copytree(reference_runs["layer"], tmp_path, dirs_exist_ok=True)
    records = read_records(tmp_path)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 4, "step": 6')  # a write interrupted half way
    with pytest.raises(json.JSONDecodeError):
        read_records(tmp_path)
    assert metric_writers.read_records(tmp_path / "metrics.jsonl") == records
    training.train_and_evaluate(make_config(tiny_dir, num_epochs=4), tmp_path)
    assert [r["epoch"] for r in read_records(tmp_path)] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    "config,words",
    [
        ("configs/no_such_config.py", "No such file"),
        ("configs/skipthought.py:huge", "Unknown skipthought variant"),
    ],
)
def test_cli_unloadable_config_is_one_paragraph(tmp_path, config, words):
    cmd = [sys.executable, "-m", "lnexp.main", f"--config={config}", f"--workdir={tmp_path}"]
    out = subprocess.run(cmd, cwd=REPO, env=cli_env(None), capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "error: the config file cannot be loaded" in out.stderr and words in out.stderr
