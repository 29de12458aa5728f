"""Faults a long run meets, injected for real and seen through the command line: a damaged
checkpoint, a full filesystem, two launches on one workdir, and settings out of range.

Each must end in one ``error:`` paragraph (exit 2) or a warning line and a run that carries on,
with nothing lost: earlier checkpoints intact, and a resumed run's records equal to those of an
uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from conftest import REPO, load_config
from test_run_dir import small_state
from test_train import (  # noqa: F401 (subprocess_compilation_cache: an autouse fixture)
    STEPS_PER_EPOCH,
    assert_clean_cli_error,
    cli_command,
    cli_env,
    make_config,
    read_records,
    run_cli,
    subprocess_compilation_cache,
    without_timing,
)

from lnexp import config_ranges, training
from lnexp.errors import UserError
from lnexp.training.run_dir import RunDir

SMALL: dict = {}  # test_train's small model (its command line sets the same)
SMALL_CLI: tuple = ()


@pytest.fixture(scope="module")
def reference(tiny_mnist_dir, tmp_path_factory) -> Path:
    """An uninterrupted 3-epoch run of the small model."""
    workdir = tmp_path_factory.mktemp("reference")
    training.train_and_evaluate(make_config(tiny_mnist_dir, **SMALL), workdir)
    return workdir


def train_epochs(data: Path, workdir: Path, epochs: int) -> None:
    training.train_and_evaluate(make_config(data, num_epochs=epochs, **SMALL), workdir)


def damage(checkpoint: Path) -> None:
    """Overwrites the array files of a checkpoint, as a failing disk does, and truncates one."""
    files = sorted(p for p in checkpoint.rglob("*") if p.is_file() and p.parent.name == "d")
    assert files, checkpoint
    for path in files:
        path.write_bytes(b"\xff" * path.stat().st_size)
    with files[0].open("r+b") as f:
        f.truncate(files[0].stat().st_size // 2)


# --------------------------------------------------------------------------------------------
# Damaged checkpoints.


def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes(
    tiny_mnist_dir, reference, tmp_path
):
    train_epochs(tiny_mnist_dir, tmp_path, 2)
    newest = tmp_path / "checkpoints" / str(2 * STEPS_PER_EPOCH)
    damage(newest)
    result = run_cli(tmp_path, tiny_mnist_dir, *SMALL_CLI)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    warnings = [line for line in result.stderr.splitlines() if "does not read back" in line]
    assert len(warnings) == 1, result.stderr[-3000:]
    assert f"step {2 * STEPS_PER_EPOCH}" in warnings[0] and ".damaged" in warnings[0]
    assert (tmp_path / "checkpoints" / f"{2 * STEPS_PER_EPOCH}.damaged").is_dir()  # Kept.
    assert without_timing(read_records(tmp_path)) == without_timing(read_records(reference))
    assert RunDir(tmp_path).checkpoint_steps() == [STEPS_PER_EPOCH * e for e in (1, 2, 3)]


def test_no_readable_checkpoint_is_one_error(tiny_mnist_dir, tmp_path):
    train_epochs(tiny_mnist_dir, tmp_path, 2)
    for step in RunDir(tmp_path).checkpoint_steps():
        damage(tmp_path / "checkpoints" / str(step))
    before = read_records(tmp_path)
    for _ in range(2):  # The same answer again once they are set aside.
        result = run_cli(tmp_path, tiny_mnist_dir, *SMALL_CLI)
        assert result.returncode == 2, result.stderr[-3000:]
        assert_clean_cli_error(result, str(tmp_path / "checkpoints"), "new --workdir")
    assert len(RunDir(tmp_path).damaged_checkpoints()) == 2
    assert read_records(tmp_path) == before  # Nothing rewritten.


def test_restoring_a_model_skips_a_damaged_checkpoint(tmp_path):
    """What lnexp.encode and lnexp.studies.skipthought.evaluate read: the newest model that reads
    back."""
    run = RunDir(tmp_path)
    with run.checkpoints(keep=3) as checkpoints:
        for step in (1, 2, 3):
            checkpoints.save(step, small_state(step))
    damage(tmp_path / "checkpoints" / "3")
    with run.checkpoints() as checkpoints:
        step, variables = checkpoints.restore_newest_model()
    assert step == 2 and sorted(variables) == ["params", "rest"]
    assert run.checkpoint_steps() == [1, 2]
    assert [p.name for p in run.damaged_checkpoints()] == ["3.damaged"]
    for s in (1, 2):
        damage(tmp_path / "checkpoints" / str(s))
    with run.checkpoints() as checkpoints, pytest.raises(UserError, match="reads back"):
        checkpoints.restore_newest_model()
    assert len(run.damaged_checkpoints()) == 3


# --------------------------------------------------------------------------------------------
# A full filesystem.


@pytest.fixture
def small_tmpfs(tmp_path) -> Path:
    """A 12 MB tmpfs (needs the right to mount: skipped without it)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_filesystem_is_one_error_and_nothing_is_lost(
    tiny_mnist_dir, reference, tmp_path, small_tmpfs
):
    workdir = small_tmpfs / "run"
    train_epochs(tiny_mnist_dir, tmp_path / "first", 1)
    shutil.copytree(tmp_path / "first", workdir)
    # Fill the filesystem but for 40 kB: less than a checkpoint (about 170 kB).
    stat = os.statvfs(small_tmpfs)
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 40_000))
    result = run_cli(workdir, tiny_mnist_dir, *SMALL_CLI)
    assert result.returncode == 2, result.stderr[-3000:]
    assert_clean_cli_error(result, "Cannot write to the workdir", str(workdir), "MB")
    assert RunDir(workdir).checkpoint_steps() == [STEPS_PER_EPOCH]
    with RunDir(workdir).checkpoints() as checkpoints:  # Intact.
        assert int(checkpoints.restore(STEPS_PER_EPOCH)["epoch"]) == 1

    filler.unlink()
    result = run_cli(workdir, tiny_mnist_dir, *SMALL_CLI)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list((workdir / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    assert without_timing(read_records(workdir)) == without_timing(read_records(reference))


# --------------------------------------------------------------------------------------------
# Two launches on one workdir.


def test_a_second_launch_is_refused_while_the_first_runs(tiny_mnist_dir, tmp_path):
    command = cli_command(tmp_path, tiny_mnist_dir, *SMALL_CLI, "--config.num_epochs=1000")
    first = subprocess.Popen(
        command, cwd=REPO, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        lock = tmp_path / ".lock"
        deadline = time.monotonic() + 120
        while not (lock.exists() and f"pid {first.pid}" in lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, "the first run ended"
            time.sleep(0.05)
        second = run_cli(tmp_path, tiny_mnist_dir, *SMALL_CLI, "--config.num_epochs=1000")
        assert second.returncode == 2
        assert_clean_cli_error(second, str(tmp_path), "in use by another run", f"pid {first.pid}")
        assert first.poll() is None  # Untouched.
    finally:
        first.kill()
        first.wait()
    # The killed holder's lock is gone with it, although its .lock file stays.
    assert lock.exists()
    with RunDir(tmp_path).lock():
        pass


def test_a_stale_lock_file_does_not_block(tmp_path):
    (tmp_path / ".lock").write_text("pid 999999 on host gone: python -m lnexp.main\n")
    with RunDir(tmp_path).lock():
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            # Another open file description of the same process conflicts too.
            with RunDir(tmp_path).lock():
                pass
    with RunDir(tmp_path).lock():
        pass


# --------------------------------------------------------------------------------------------
# Settings out of range.

CONFIGS = [
    ("pimnist", None),
    ("pimnist", "tuned"),
    ("pimnist", "tiny"),
    ("seqmnist", None),
    ("seqmnist", "tiny"),
    *(("skipthought", v) for v in ("small", "paper", "tiny")),
]


def test_every_numeric_field_of_every_config_has_a_range():
    for name, variant in CONFIGS:
        config = load_config(name, variant)
        config_ranges.check_ranges(config)  # The defaults are in range.
        for key, value in config_ranges.flat_items(config):
            *parents, leaf = key.split(".")
            node = config
            for name in parents:
                node = node[name]
            if config_ranges.is_numeric(value) or node.get_type(leaf) in (int, float):
                assert key in config_ranges.RANGES, f"configs/{name}.py: {key} has no range"
        placeholders = [
            k
            for k, v in config_ranges.flat_items(config)
            if v is None and k in config_ranges.RANGES
        ]
        for key in placeholders:
            assert config_ranges.RANGES[key].optional, key


ALL_CONFIGS = [
    *CONFIGS,
    *(("transformer", v) for v in ("default", "large", "tiny")),
    ("draw", None),
    ("draw", "tiny"),
]


@pytest.mark.parametrize(("name", "variant"), ALL_CONFIGS)
def test_every_string_field_of_every_config_is_declared(name, variant):
    """A string field names a choice (lnexp.config_ranges.CHOICES, or its study's CHOICES) or is
    a declared text (TEXTS); each declared choice holds the config's own value."""
    config = load_config(name, variant)
    choices = {**config_ranges.CHOICES, **config_ranges.study_choices(config.experiment)}
    for key, value in config_ranges.flat_items(config):
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        if isinstance(value, str) or node.get_type(leaf) is str:
            assert key in choices or key in config_ranges.TEXTS, f"configs/{name}.py: {key}"
        if key in choices and value is not None:
            assert value in choices[key].values, (key, value)


def test_the_declared_names_are_those_the_layers_and_configs_take():
    from lnexp import norms
    from lnexp.config import import_file
    from lnexp.models import initializers, recurrent, transformer
    from lnexp.studies import EXPERIMENTS, check_config
    from lnexp.studies.skipthought import task as skipthought
    from lnexp.studies.transformer import task as transformer_task

    assert config_ranges.CHOICES["experiment"].values == EXPERIMENTS
    from lnexp.data import mnist

    assert config_ranges.CHOICES["data.source"].values == mnist.SOURCES
    for study, module in (("skipthought", skipthought), ("transformer", transformer_task)):
        variants = import_file(REPO / "configs" / f"{study}.py").VARIANTS
        assert set(module.CHOICES["variant"].values) == set(variants)
    assert transformer_task.CHOICES["model.norm"].values == transformer.NORMS
    assert set(config_ranges.study_choices("pimnist")["model.kernel_init"].values) == set(
        initializers.INITIALIZERS
    )
    assert config_ranges.study_choices("pimnist")["model.norm"].values == tuple(norms.REGISTRY)
    assert config_ranges.study_choices("seqmnist")["model.cell"].values == tuple(recurrent.CELLS)
    # Every declared name of every study builds its model (abstractly): none is refused later.
    for name in EXPERIMENTS:
        for key, choice in config_ranges.study_choices(name).items():
            for value in choice.values if key != "variant" else ():
                overrides = {key.replace(".", "__"): value}
                if name == "seqmnist" and key == "model.norm" and value == "cell":
                    overrides["model__cell"] = "lstm"  # The LSTM's own variant.
                check_config(load_config(name, "tiny", **overrides))


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("optimizer.learning_rate", -1.0, ["> 0"]),
        ("optimizer.b2", 1.0, ["[0, 1)"]),
        ("optimizer.grad_clip_norm", -0.5, [">= 0"]),
        ("model.hidden_sizes", (16, 0), [">= 1"]),
        ("model.bn_momentum", 1.5, ["[0, 1)"]),
        ("num_epochs", 0, [">= 1"]),
        ("batch_size", 0, [">= 1"]),
    ],
)
def test_values_out_of_range_are_refused(key, value, words):
    config = load_config("pimnist", **{key.replace(".", "__"): value})
    with pytest.raises(UserError) as info:
        config_ranges.check_ranges(config)
    for word in [f"config.{key}=", *words]:
        assert word in str(info.value), str(info.value)


def test_cli_negative_learning_rate_is_refused_before_any_work(tiny_mnist_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_cli(workdir, tiny_mnist_dir, "--config.optimizer.learning_rate=-1")
    assert result.returncode == 2
    assert_clean_cli_error(result, "config.optimizer.learning_rate=-1", "> 0")
    assert not workdir.exists()


def test_range_declarations_describe_themselves():
    assert config_ranges.Range(low=0, high=1, open_high=True).describe() == "a number in [0, 1)"
    assert config_ranges.count("x").describe() == "an integer >= 1"
    assert not config_ranges.count("x").contains(True) and not config_ranges.count("x").contains(
        1.0
    )


def test_a_read_only_workdir_is_one_error(tiny_mnist_dir, reference, small_tmpfs):
    workdir = small_tmpfs / "run"
    train_epochs(tiny_mnist_dir, workdir, 1)
    before = read_records(workdir)
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    try:
        result = run_cli(workdir, tiny_mnist_dir, *SMALL_CLI)
        assert result.returncode == 2, result.stderr[-3000:]
        assert_clean_cli_error(result, "Cannot write to the workdir", str(workdir), "Read-only")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_tmpfs)], check=True)
    assert read_records(workdir) == before
    result = run_cli(workdir, tiny_mnist_dir, *SMALL_CLI)
    assert result.returncode == 0, result.stderr[-3000:]
    assert without_timing(read_records(workdir)) == without_timing(read_records(reference))
