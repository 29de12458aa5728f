"""Tests for lnexp.training.train_seeds: several seeds in one program match their separate runs.

The separate runs are ``training.train_and_evaluate`` with ``config.seed = s`` on the tiny MNIST
files of ``test_train``. Tolerance: a vectorized step runs batched matrix products, which XLA may
sum in another order than the unbatched ones, so the seeds' numbers differ from the separate
runs' in the last bits of float32 (measured over 3 epochs of 17 steps: losses and NLLs by at most
2e-7 relative, parameters by at most 1.2e-7 absolute). The tests allow rtol 1e-5 on losses and
NLLs, 2e-6 absolute on parameters, and at most one example classified differently per split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import load_config
from test_train import (
    STEPS_PER_EPOCH,
    TIMING_KEYS,
    assert_trees_equal,
    checkpoint_steps,
    make_config,
    read_records,
    restore_latest,
    without_timing,
)

from lnexp import training
from lnexp.bench.sections import BenchConfig
from lnexp.errors import UserError
from lnexp.reporting.grid import expand_grid, run_grid
from lnexp.studies.pimnist import bench_seeds
from lnexp.studies.pimnist import task as pimnist

REPO = Path(__file__).resolve().parents[1]
SEEDS = (1, 0)  # Not sorted: seed i of the call goes to workdir i, whatever its value.
NUM_EPOCHS = 2


def assert_close_records(vectorized: list[dict], separate: list[dict]) -> None:
    assert [r["epoch"] for r in vectorized] == [r["epoch"] for r in separate]
    for a, b in zip(vectorized, separate, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - TIMING_KEYS:
            if key.endswith("_error"):
                assert abs(a[key] - b[key]) <= 1 / 50 + 1e-6, (key, a[key], b[key])
            elif isinstance(a[key], float):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)
            else:
                assert a[key] == b[key], key


@pytest.fixture(scope="module")
def separate_runs(tiny_mnist_dir, tmp_path_factory) -> dict[tuple[str, int], Path]:
    """Ordinary 2-epoch runs of each seed, layer and batch norm."""
    runs = {}
    for norm in ("layer", "batch"):
        for seed in SEEDS:
            workdir = tmp_path_factory.mktemp(f"separate_{norm}_{seed}")
            config = make_config(tiny_mnist_dir, model__norm=norm, seed=seed, num_epochs=NUM_EPOCHS)
            training.train_and_evaluate(config, workdir)
            runs[norm, seed] = workdir
    return runs


@pytest.fixture(scope="module")
def vectorized_runs(tiny_mnist_dir, tmp_path_factory) -> dict[tuple[str, int], Path]:
    """The same runs, the seeds of each norm trained together."""
    runs = {}
    for norm in ("layer", "batch"):
        base = tmp_path_factory.mktemp(f"vectorized_{norm}")
        workdirs = [base / f"seed={seed}" for seed in SEEDS]
        config = make_config(tiny_mnist_dir, model__norm=norm, num_epochs=NUM_EPOCHS)
        last = training.train_seeds(config, SEEDS, workdirs)
        assert [r["epoch"] for r in last] == [NUM_EPOCHS] * len(SEEDS)
        runs.update({(norm, seed): workdir for seed, workdir in zip(SEEDS, workdirs, strict=True)})
    return runs


@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_each_seed_matches_its_separate_run(separate_runs, vectorized_runs, norm):
    for seed in SEEDS:
        vectorized, separate = vectorized_runs[norm, seed], separate_runs[norm, seed]
        assert (vectorized / "config.json").read_text() == (separate / "config.json").read_text()
        assert json.loads((vectorized / "config.json").read_text())["seed"] == seed
        assert_close_records(read_records(vectorized), read_records(separate))
        assert list((vectorized / "tensorboard").glob("events.out.tfevents.*"))
        assert checkpoint_steps(vectorized) == checkpoint_steps(separate)
        # The checkpoint holds the seed's own state, as a separate run's (batch norm's running
        # averages included), so either loop can resume it.
        a, b = restore_latest(vectorized), restore_latest(separate)
        assert jax.tree.structure(a) == jax.tree.structure(b)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=2e-6)
    # The seeds are different runs (not one run written twice).
    first, second = (read_records(vectorized_runs[norm, s])[-1] for s in SEEDS)
    assert first["train_loss"] != second["train_loss"]


def test_resume_after_a_finished_epoch(vectorized_runs, tiny_mnist_dir, tmp_path):
    workdirs = [tmp_path / f"seed={seed}" for seed in SEEDS]
    config = make_config(tiny_mnist_dir, model__norm="batch", num_epochs=1)
    training.train_seeds(config, SEEDS, workdirs)
    training.train_seeds(config.copy_and_resolve_references(), SEEDS, workdirs)  # Nothing to do.
    config.num_epochs = NUM_EPOCHS
    training.train_seeds(config, SEEDS, workdirs)
    for seed, workdir in zip(SEEDS, workdirs, strict=True):
        reference = vectorized_runs["batch", seed]
        assert without_timing(read_records(workdir)) == without_timing(read_records(reference))
        assert_trees_equal(restore_latest(workdir), restore_latest(reference))
    # A separate run resumes a seed's directory too.
    config = make_config(tiny_mnist_dir, model__norm="batch", seed=SEEDS[0], num_epochs=3)
    training.train_and_evaluate(config, workdirs[0])
    assert [r["epoch"] for r in read_records(workdirs[0])] == [1, 2, 3]


def test_seeds_resuming_from_different_steps_are_refused(separate_runs, tiny_mnist_dir, tmp_path):
    workdirs = [tmp_path / "seed=1", tmp_path / "seed=0"]
    shutil.copytree(separate_runs["layer", 1], workdirs[0])
    config = make_config(tiny_mnist_dir, model__norm="layer", num_epochs=3)
    with pytest.raises(
        UserError, match=rf"different steps \(seed 1: {2 * STEPS_PER_EPOCH}, seed 0: 0"
    ):
        training.train_seeds(config, SEEDS, workdirs)
    with pytest.raises(UserError, match="distinct seeds"):
        training.train_seeds(config, [0, 0], workdirs)


def nan_loss_for(seed: int, step: int):
    """``pimnist.loss_fn``, except that the loss of ``seed`` is NaN at (0-based) ``step``: the
    step's random key ``fold_in(key(seed), step)`` tells the seeds apart inside ``jax.vmap``."""
    original = pimnist.loss_fn
    target = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), step))

    def loss_fn(model, batch, rng):
        loss, metrics = original(model, batch, rng)
        hit = jax.numpy.all(jax.random.key_data(rng) == target)
        return jax.numpy.where(hit, jax.numpy.nan, loss), metrics

    return loss_fn


def test_divergence_of_one_seed_stops_all_and_keeps_checkpoints(
    tiny_mnist_dir, tmp_path, monkeypatch
):
    workdirs = [tmp_path / f"seed={seed}" for seed in SEEDS]
    config = make_config(tiny_mnist_dir, model__norm="layer", num_epochs=1)
    training.train_seeds(config, SEEDS, workdirs)
    monkeypatch.setattr(pimnist, "loss_fn", nan_loss_for(seed=0, step=STEPS_PER_EPOCH + 1))
    config.num_epochs = NUM_EPOCHS
    with pytest.raises(UserError) as info:
        training.train_seeds(config, SEEDS, workdirs)
    message = str(info.value)
    assert f"seed 0 ({workdirs[1]})" in message, message
    assert f"epoch 2, step {STEPS_PER_EPOCH + 2}" in message, message
    for workdir in workdirs:
        assert checkpoint_steps(workdir) == [STEPS_PER_EPOCH]
        assert [r["epoch"] for r in read_records(workdir)] == [1]


def test_run_grid_trains_seeds_together_and_falls_back_one_by_one(
    separate_runs, tiny_mnist_dir, tmp_path, monkeypatch
):
    """A seed diverging in a vectorized group: the group is retrained one seed after the other,
    so the healthy seed finishes (as its separate run) and only the bad one fails."""
    monkeypatch.setattr(pimnist, "loss_fn", nan_loss_for(seed=1, step=3))
    shared = [
        ("data.dir", str(tiny_mnist_dir)),
        ("model.hidden_sizes", "(32, 32)"),
        ("num_epochs", "1"),
        ("batch_size", "32"),
        ("eval_batch_size", "200"),
    ]
    cells = expand_grid(["model.norm=layer"], seeds=2)
    log = []
    failures = run_grid(
        str(REPO / "configs" / "pimnist.py"),
        tmp_path,
        cells,
        shared,
        log.append,
        vectorize_seeds=True,
    )
    assert "training seeds 0, 1 together" in log[0], log
    assert "together failed" in log[1] and "seed 1" in log[1], log
    assert [(cell.seed, "diverged" in message) for cell, message in failures] == [(1, True)]
    healthy = read_records(cells[0].run_dir(tmp_path))
    assert_close_records(healthy, read_records(separate_runs["layer", 0])[:1])


def test_run_grid_groups_seeds_by_configuration_and_resume_step(tmp_path, monkeypatch):
    import lnexp.training.loop

    calls = []

    def fake_train(config, run_dir):
        calls.append(("alone", config.model.norm, config.seed))

    def fake_train_seeds(config, seed_list, workdirs):
        calls.append(("together", config.model.norm, tuple(seed_list)))
        assert [Path(w).name for w in workdirs] == [f"seed={s}" for s in seed_list]
        if config.model.norm == "rms":
            raise UserError("rms diverged")

    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", fake_train)
    monkeypatch.setattr(lnexp.training.loop, "train_seeds", fake_train_seeds)
    cells = expand_grid(["model.norm=none,rms"], seeds=3)
    (cells[1].run_dir(tmp_path) / "checkpoints" / "40").mkdir(parents=True)  # none, seed 1
    run_grid(
        str(REPO / "configs" / "pimnist.py"),
        tmp_path,
        cells,
        log=lambda line: None,
        vectorize_seeds=True,
    )
    assert calls == [
        ("together", "none", (0, 2)),
        ("alone", "none", 1),
        ("together", "rms", (0, 1, 2)),
        ("alone", "rms", 0),
        ("alone", "rms", 1),
        ("alone", "rms", 2),
    ]


def test_tasks_with_sequence_lengths_are_refused(tiny_books_dir, corpus_cache, tmp_path):
    config = load_config(
        "skipthought", "tiny", data__dir=str(tiny_books_dir), data__cache_dir=str(corpus_cache)
    )
    with pytest.raises(UserError, match="sequence length.*one after the other"):
        training.train_seeds(config, [0, 1], [tmp_path / "0", tmp_path / "1"])


def test_time_seeds_times_one_seed_and_the_seeds_together(tiny_mnist_dir):
    config = make_config(tiny_mnist_dir, steps_per_call=3)
    rows = bench_seeds.time_seeds(config, 2, repeats=1, warmup=0)
    assert [(r["name"], r["seeds"]) for r in rows] == [("1 seed", 1), ("2 seeds in one program", 2)]
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] > 0
    assert all(r["median_ms"] > 0 and r["seed_steps_per_s"] > 0 for r in rows)
    assert rows[1]["speedup"] == pytest.approx(2 * rows[0]["median_ms"] / rows[1]["median_ms"])


def test_seeds_section_without_data_is_skipped_with_a_note():
    results = bench_seeds.run(BenchConfig())
    assert "--data_dir" in results["rows"][0]["skipped"]
