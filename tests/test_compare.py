"""Tests for lnexp.reporting (grid, runs, summary, figure) and scripts/compare.py: the grid,
overrides, aggregation, the figure."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from lnexp import config as config_files
from lnexp.errors import UserError
from lnexp.reporting.grid import check_grid, expand_grid, run_grid
from lnexp.reporting.runs import Run, export, find_runs, read_metrics
from lnexp.reporting.summary import report, summarize
from lnexp.studies.pimnist import task as pimnist

REPO = Path(__file__).resolve().parents[1]
PAPER_CSV = REPO / "lnexp" / "reference" / "paper_fig6_pimnist.csv"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def paper_csv_rows() -> list[dict[str, str]]:
    """The reference CSV read independently of lnexp.reporting (comment lines dropped)."""
    lines = [line for line in PAPER_CSV.read_text().splitlines() if not line.startswith("#")]
    return list(csv.DictReader(lines))


def paper_csv_value(batch_size: int, panel: str, method: str, epoch: int) -> float:
    (row,) = [
        r
        for r in paper_csv_rows()
        if (r["batch_size"], r["panel"], r["method"], r["epoch"])
        == (str(batch_size), panel, method, str(epoch))
    ]
    return float(row["value"])


# --------------------------------------------------------------------------------------------
# The paper's curves.


PAPER_METHODS = {"Base": "none", "BN": "batch", "LN": "layer"}
PAPER_METRICS = {"train_NLL": "train_nll", "test_err": "test_error"}


def test_paper_fig6_covers_the_papers_grid_and_matches_the_csv():
    paper = pimnist.reference_curves()
    assert set(paper) == {(b, n) for b in (128, 4) for n in ("none", "batch", "layer")}
    for curve in paper.values():
        assert set(curve) == {
            f"{metric}{suffix}"
            for metric in ("train_nll", "test_error")
            for suffix in ("", "_epoch", "_lo", "_hi")
        }
        for metric in ("train_nll", "test_error"):
            for suffix in ("", "_epoch", "_lo", "_hi"):
                assert curve[f"{metric}{suffix}"].shape == (65,)
            epochs = curve[f"{metric}_epoch"]
            assert epochs[0] == 0 and epochs[-1] == 64 and np.all(np.diff(epochs) >= 0)
            assert np.all(curve[f"{metric}_lo"] <= curve[metric])
            assert np.all(curve[metric] <= curve[f"{metric}_hi"])

    # A few rows checked by hand against the CSV.
    assert paper[(128, "layer")]["test_error"][64] == 0.01295
    assert paper[(4, "layer")]["test_error"][64] == 0.01365
    assert paper[(128, "batch")]["test_error"][0] == 0.0195
    assert paper[(128, "batch")]["test_error"][57] == 0.0119
    assert paper[(128, "none")]["test_error"][1] == 0.02015
    bn4 = paper[(4, "batch")]
    assert (bn4["train_nll"][0], bn4["train_nll_lo"][0], bn4["train_nll_hi"][0]) == (
        0.1793,
        0.1381,
        0.2205,
    )

    # Every row of the CSV, in order, per (batch size, method, panel).
    rows = paper_csv_rows()
    assert len(rows) == 2 * 2 * 3 * 65
    groups: dict[tuple[int, str, str], list[dict[str, str]]] = {}
    for r in rows:
        key = (int(r["batch_size"]), PAPER_METHODS[r["method"]], PAPER_METRICS[r["panel"]])
        groups.setdefault(key, []).append(r)
    assert len(groups) == 12
    for (batch_size, norm, metric), group in groups.items():
        curve = paper[(batch_size, norm)]
        for column, suffix in (("epoch", "_epoch"), ("value", ""), ("band_lo", "_lo")):
            expected = [float(r[column]) for r in group]
            np.testing.assert_array_equal(curve[f"{metric}{suffix}"], expected)
        np.testing.assert_array_equal(curve[f"{metric}_hi"], [float(r["band_hi"]) for r in group])


def test_paper_fig6_has_one_point_per_epoch_0_to_64():
    for key, curve in pimnist.reference_curves().items():
        for metric in ("train_nll", "test_error"):
            np.testing.assert_array_equal(
                curve[f"{metric}_epoch"], np.arange(65), err_msg=f"{key} {metric}"
            )


# --------------------------------------------------------------------------------------------
# The grid, overrides and configs.


def test_expand_grid_is_the_product_times_seeds_with_cell_names(tmp_path):
    cells = expand_grid(["model.norm=none,layer", "batch_size=128, 4"], seeds=2)
    assert [(c.name, c.seed) for c in cells] == [
        ("model.norm=none,batch_size=128", 0),
        ("model.norm=none,batch_size=128", 1),
        ("model.norm=none,batch_size=4", 0),
        ("model.norm=none,batch_size=4", 1),
        ("model.norm=layer,batch_size=128", 0),
        ("model.norm=layer,batch_size=128", 1),
        ("model.norm=layer,batch_size=4", 0),
        ("model.norm=layer,batch_size=4", 1),
    ]
    assert cells[2].values == (("model.norm", "none"), ("batch_size", "4"))
    assert cells[3].run_dir(tmp_path) == tmp_path / "model.norm=none,batch_size=4" / "seed=1"

    # No axes: one cell per seed, named "base".
    assert [(c.name, c.seed) for c in expand_grid([], seeds=3)] == [
        ("base", 0),
        ("base", 1),
        ("base", 2),
    ]
    assert expand_grid(["model.norm=layer"], seeds=0) == []
    with pytest.raises(UserError, match="KEY=VALUE"):
        expand_grid(["model.norm"], seeds=1)
    with pytest.raises(UserError):
        config_files.parse_assignment("=layer")
    assert config_files.parse_assignment(" data.dir = /a=b ") == ("data.dir", "/a=b")


def test_load_config_reads_the_pimnist_config():
    config = config_files.load_config(REPO / "configs" / "pimnist.py")
    assert config.experiment == "pimnist"
    assert (config.num_epochs, config.batch_size, config.seed) == (64, 128, 0)
    assert config.model.norm == "layer"
    assert tuple(config.model.hidden_sizes) == (1000, 1000)
    assert config.data.dir is None and config.data.limit_train is None

    # With an argument after ':' and overrides.
    config = config_files.load_config(
        f"{REPO / 'configs' / 'pimnist.py'}:tuned", [("batch_size", "4"), ("model.norm", "batch")]
    )
    assert (config.batch_size, config.model.norm) == (4, "batch")

    with pytest.raises(UserError, match="does not exist"):
        config_files.load_config(REPO / "configs" / "no_such_config.py")


def test_apply_overrides_reads_text_as_the_fields_type():
    config = config_files.load_config(REPO / "configs" / "pimnist.py")
    config_files.apply_overrides(
        config,
        [
            ("num_epochs", "3"),
            ("optimizer.learning_rate", "0.01"),
            ("model.epsilon", "1e-6"),
            ("model.norm", "rms"),
            ("model.hidden_sizes", "(16, 8)"),
            ("data.dir", "/tmp/mnist"),
            ("data.limit_train", "100"),
            ("model.normalize_logits", "True"),
            ("model.bn_unbiased", "false"),  # absl's spelling of a bool too
        ],
    )
    assert config.num_epochs == 3 and type(config.num_epochs) is int
    assert config.optimizer.learning_rate == 0.01 and type(config.optimizer.learning_rate) is float
    assert config.model.epsilon == 1e-6
    assert config.model.norm == "rms"
    assert tuple(config.model.hidden_sizes) == (16, 8)
    assert config.data.dir == "/tmp/mnist"
    assert config.data.limit_train == 100 and type(config.data.limit_train) is int
    assert config.model.normalize_logits is True
    assert config.model.bn_unbiased is False

    # An int for a float field is a float; a later override of a tuple replaces it; a
    # one-element tuple stays a tuple; a string field takes any text as it is.
    config_files.apply_overrides(
        config,
        [
            ("optimizer.learning_rate", "1"),
            ("model.hidden_sizes", "(16,)"),
            ("data.dir", "123"),
        ],
    )
    assert config.optimizer.learning_rate == 1.0 and type(config.optimizer.learning_rate) is float
    assert tuple(config.model.hidden_sizes) == (16,)
    assert config.data.dir == "123"

    # Values that are not text are set as they are (None included: a command line cannot say
    # None for an int, and neither can a text override).
    config_files.apply_overrides(config, [("data.limit_train", None), ("model.hidden_sizes", (4,))])
    assert config.data.limit_train is None and tuple(config.model.hidden_sizes) == (4,)
    with pytest.raises(UserError, match="data.limit_train=None"):
        config_files.apply_overrides(config, [("data.limit_train", "None")])


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
def test_a_text_override_is_read_as_the_command_line_reads_it():
    """lnexp.config.parse_value and ``--config.KEY=VALUE`` (ml_collections' config_flags on the
    same config file): one rule, so a grid's cell is the config its command line would give."""
    from absl import flags
    from ml_collections import config_flags

    path = str(REPO / "configs" / "pimnist.py")
    overrides = [
        ("num_epochs", "3"),
        ("batch_size", "4"),
        ("optimizer.learning_rate", "3e-4"),
        ("optimizer.learning_rate", "1"),
        ("model.epsilon", "1e-3"),
        ("model.norm", "batch"),
        ("model.kernel_init", "normal_0.01"),
        ("model.hidden_sizes", "(100,100)"),
        ("model.normalize_logits", "true"),
        ("data.dir", "/data/mnist"),
        ("data.input_scaling", "standardize"),
        ("data.limit_train", "64"),
        ("optimizer.schedule", "cosine"),
    ]
    for key, text in overrides:
        argv = ["lnexp", f"--config={path}", f"--config.{key}={text}"]
        values = flags.FlagValues()
        config_flags.DEFINE_config_file("config", flag_values=values, sys_argv=argv)
        values(argv)
        from_flags = values["config"].value
        from_api = config_files.load_config(path, [(key, text)])
        assert from_api.to_json() == from_flags.to_json(), (key, text)
        assert (
            config_files.parse_value(config_files.load_config(path), key, text)
            == (values["config"].override_values[key])
        )


def test_grid_values_are_checked_against_the_config_before_training():
    config = config_files.load_config(REPO / "configs" / "pimnist.py")
    check_grid(config, ["model.norm=none,layer", "batch_size=128, 4", "optimizer.eps=1e-4"])
    with pytest.raises(UserError) as info:
        check_grid(config, ["model.norm=none", "batch_size=128,four"])
    message = str(info.value)
    assert message.startswith("--grid batch_size=128,four: Cannot set batch_size=four")
    assert "the field holds an int" in message
    with pytest.raises(UserError, match=r"--grid model.nrom=layer: The config has no key 'model"):
        check_grid(config, ["model.nrom=layer"])
    with pytest.raises(UserError, match="no values"):
        check_grid(config, ["model.norm=,"])


def committed_cells() -> list[Path]:
    """Every committed run directory of a grid: results/**/<cell>/seed=<s>/config.json."""
    return sorted(p.parent for p in (REPO / "results").rglob("seed=*/config.json"))


def test_committed_grid_cells_come_out_as_they_were_made():
    """Cell names and configs are unchanged by the parsing rule, so those runs resume: each
    committed cell's values, read from its directory name, give the config.json it holds."""
    run_dirs = committed_cells()
    assert len(run_dirs) >= 100
    cells = {run_dir.parent.name for run_dir in run_dirs}
    assert {"model.norm=layer,batch_size=4", "model.norm=layer,optimizer.learning_rate=3e-5"} <= (
        cells
    )
    configs = {}
    for run_dir in run_dirs:
        stored = json.loads((run_dir / "config.json").read_text())
        name = run_dir.parent.name
        values = [config_files.parse_assignment(a) for a in name.split(",")]
        seed = int(run_dir.name.removeprefix("seed="))
        (cell,) = expand_grid([f"{k}={v}" for k, v in values], seeds=seed + 1)[seed:]
        assert (cell.name, cell.run_dir(run_dir.parents[1])) == (name, run_dir)
        experiment = stored["experiment"]
        if experiment not in configs:
            configs[experiment] = config_files.load_config(REPO / "configs" / f"{experiment}.py")
        config = config_files.apply_overrides(
            configs[experiment].copy_and_resolve_references(), [*values, ("seed", str(seed))]
        )
        made = json.loads(config.to_json_best_effort())
        for key, _ in [*values, ("seed", "")]:
            ours, theirs = made, stored
            for part in key.split("."):
                ours, theirs = ours[part], theirs[part]
            assert json.dumps(ours) == json.dumps(theirs), (run_dir, key)


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("num_epoch", "3", "no key 'num_epoch'"),
        ("model.nrom", "layer", "no key 'model.nrom'"),
        ("modle.norm", "layer", "no key 'modle.norm'"),
        ("num_epochs", "many", "num_epochs=many"),  # a string for an int
        ("num_epochs", "1.5", "num_epochs=1.5"),  # a float for an int
        ("model.normalize_logits", "maybe", "normalize_logits"),
        ("model.hidden_sizes", "(16, 8", "hidden_sizes"),
    ],
)
def test_apply_overrides_rejects_unknown_keys_and_bad_types(key, value, match):
    config = config_files.load_config(REPO / "configs" / "pimnist.py")
    with pytest.raises(UserError, match=match):
        config_files.apply_overrides(config, [(key, value)])


def test_run_grid_skips_finished_cells_and_collects_failures(tmp_path, monkeypatch):
    import lnexp.training.loop

    calls = []

    def fake_train(config, run_dir):
        calls.append((config.model.norm, config.seed, config.num_epochs, Path(run_dir)))
        if config.model.norm == "rms":
            raise UserError("rms diverged")
        run_dir.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"epoch": e}) for e in range(1, config.num_epochs + 1)]
        (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        return {}

    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", fake_train)
    cells = expand_grid(["model.norm=none,rms,layer"], seeds=2)
    finished = cells[0].run_dir(tmp_path)  # none, seed 0: all 2 epochs done
    finished.mkdir(parents=True)
    (finished / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')
    partial = cells[5].run_dir(tmp_path)  # layer, seed 1: 1 of 2 epochs done
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text('{"epoch": 1}\n')

    log = []
    failures = run_grid(
        str(REPO / "configs" / "pimnist.py"),
        tmp_path,
        cells,
        shared=[("num_epochs", "2")],
        log=log.append,
    )
    assert [(n, s, e) for n, s, e, _ in calls] == [
        ("none", 1, 2),
        ("rms", 0, 2),
        ("rms", 1, 2),
        ("layer", 0, 2),
        ("layer", 1, 2),
    ]
    assert [d for *_, d in calls] == [c.run_dir(tmp_path) for c in cells[1:]]
    assert failures == [(cells[2], "rms diverged"), (cells[3], "rms diverged")]
    assert "skipped" in log[0] and str(finished) in log[0]
    assert sum("skipped" in line for line in log) == 1
    assert sum("failed: rms diverged" in line for line in log) == 2

    # Everything that succeeded is now finished: a second pass only retries the failures.
    calls.clear()
    run_grid(
        str(REPO / "configs" / "pimnist.py"), tmp_path, cells, [("num_epochs", "2")], log.append
    )
    assert [(n, s) for n, s, *_ in calls] == [("rms", 0), ("rms", 1)]


def test_run_grid_skips_a_cell_another_process_is_training(tmp_path, monkeypatch):
    """The same grid started twice shares the cells: a cell whose lock another process holds is
    skipped (not a failure) and the next free one trained."""
    import lnexp.training.loop
    from lnexp.training.run_dir import RunDir

    trained = []

    def fake_train(config, run_dir):
        with RunDir(run_dir).lock():  # The real loop's first step on a run directory.
            trained.append(Path(run_dir))
            (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
        return {}

    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", fake_train)
    cells = expand_grid(["model.norm=none,layer"], seeds=2)
    log = []
    with RunDir(cells[1].run_dir(tmp_path)).lock():  # "Another process" trains none, seed 1.
        failures = run_grid(
            str(REPO / "configs" / "pimnist.py"), tmp_path, cells, [("num_epochs", "1")], log.append
        )
    assert failures == []
    assert trained == [cells[i].run_dir(tmp_path) for i in (0, 2, 3)]
    busy = [line for line in log if "is being trained by" in line]
    assert len(busy) == 1 and str(cells[1].run_dir(tmp_path)) in busy[0]
    assert f"pid {os.getpid()}" in busy[0]  # The holder, as its lock file names it.
    assert "1 cell(s) were being trained by other processes" in log[-1]

    def failing_train(config, run_dir):
        raise UserError("diverged")

    # Freed, the cell trains on the next pass; a failure that is not the lock is still one.
    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", failing_train)
    failures = run_grid(
        str(REPO / "configs" / "pimnist.py"), tmp_path, cells, [("num_epochs", "1")], log.append
    )
    assert failures == [(cells[1], "diverged")]


def test_run_grid_skips_a_cell_another_process_finished_meanwhile(tmp_path, monkeypatch):
    """The cells to train are listed at the start; one that another copy of the grid finishes
    while this one trains an earlier cell is skipped when its turn comes, not trained again."""
    import lnexp.training.loop

    cells = expand_grid(["model.norm=none,layer"], seeds=1)
    trained = []

    def fake_train(config, run_dir):
        trained.append(Path(run_dir))
        for cell in cells:  # Meanwhile, the other process finishes the next cell.
            cell.run_dir(tmp_path).mkdir(parents=True, exist_ok=True)
            (cell.run_dir(tmp_path) / "metrics.jsonl").write_text('{"epoch": 1}\n')
        return {}

    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", fake_train)
    log = []
    failures = run_grid(
        str(REPO / "configs" / "pimnist.py"), tmp_path, cells, [("num_epochs", "1")], log.append
    )
    assert failures == [] and trained == [cells[0].run_dir(tmp_path)]
    assert f"[2/2] {cells[1].run_dir(tmp_path)} is finished now; skipped." in log


def test_vectorized_seeds_with_one_held_train_the_others(tmp_path, monkeypatch):
    """--vectorize_seeds when another process trains one seed: the others still train (one by
    one), the held one is skipped as busy, and nothing counts as failed."""
    import lnexp.training.loop
    from lnexp.training.run_dir import RunDir, held

    def fake_train_seeds(config, seeds, run_dirs):
        with held([RunDir(d) for d in run_dirs]):  # The real program locks every seed's dir.
            raise AssertionError("a held seed's lock was taken")

    trained = []

    def fake_train(config, run_dir):
        with RunDir(run_dir).lock():
            trained.append(config.seed)
            (run_dir / "metrics.jsonl").write_text('{"epoch": 1}\n')
        return {}

    monkeypatch.setattr(lnexp.training.loop, "train_seeds", fake_train_seeds)
    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", fake_train)
    cells = expand_grid(["model.norm=layer"], seeds=3)
    log = []
    with RunDir(cells[1].run_dir(tmp_path)).lock():
        failures = run_grid(
            str(REPO / "configs" / "pimnist.py"),
            tmp_path,
            cells,
            [("num_epochs", "1")],
            log.append,
            vectorize_seeds=True,
        )
    assert failures == [] and trained == [0, 2]
    assert any("is training one of these seeds; the others one by one" in line for line in log)
    assert sum("is being trained by" in line for line in log) == 1


def test_run_grid_refuses_a_finished_run_of_another_config(tmp_path, monkeypatch):
    """A finished run whose config.json differs from its cell's config in a field that may not
    change (another rate) is refused, not skipped as the cell's own; one that differs only in
    where its data was, or that predates a field, is skipped."""
    import lnexp.training.loop

    monkeypatch.setattr(lnexp.training.loop, "train_and_evaluate", lambda *a: pytest.fail("ran"))
    config = config_files.load_config(REPO / "configs" / "pimnist.py")
    (cell,) = expand_grid(["model.norm=layer"], seeds=1)
    run = cell.run_dir(tmp_path)
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n')

    def trained_with(**changes):
        saved = config.to_dict()
        saved.update(seed=0, num_epochs=2, model={**saved["model"], "norm": "layer"})
        saved["data"] = {**saved["data"], "dir": "/elsewhere"}
        for key, value in changes.items():
            block, _, field = key.partition("__")
            saved[block] = {**saved[block], field: value}
        del saved["checkpoint"]["keep_every_steps"]  # Written before the field existed.
        (run / "config.json").write_text(json.dumps(saved))

    def grid():
        log = []
        shared = [("num_epochs", "2"), ("data.dir", "/here")]
        run_grid(str(REPO / "configs" / "pimnist.py"), tmp_path, [cell], shared, log.append)
        return log

    trained_with()
    assert "is finished; skipped" in grid()[0]
    trained_with(optimizer__learning_rate=1e-3)
    with pytest.raises(UserError, match=r"finished but was trained with another config .*"
                       r"\(changed: optimizer.learning_rate\)"):  # fmt: skip
        grid()


# --------------------------------------------------------------------------------------------
# Aggregation of synthetic run directories.

NORMS = ("layer", "weight")  # the paper has no weight norm curves
BATCH_SIZES = (128, 4)
SEEDS = (3, 10, 7)  # "seed=10" sorts before "seed=3" as a directory name
NUM_EPOCHS = 5
BASE = {("layer", 128): 0.013, ("weight", 128): 0.015, ("layer", 4): 0.014, ("weight", 4): 0.017}
SPREAD = {("layer", 128): 0.001, ("weight", 128): 0.002, ("layer", 4): 0.003, ("weight", 4): 0.004}


def cell_name(norm: str, batch_size: int) -> str:
    return f"model.norm={norm},batch_size={batch_size}"


def synthetic_test_error(norm: str, batch_size: int, i: int, epoch: int) -> float:
    """Seed number i (0, 1, 2) is best at epoch 2 + i; its final error falls with i."""
    key = (norm, batch_size)
    return BASE[key] + SPREAD[key] * i + 0.002 * abs(epoch - (2 + i))


def synthetic_record(norm: str, batch_size: int, i: int, epoch: int) -> dict:
    return {
        "epoch": epoch,
        "step": epoch * 60_000 // batch_size,
        "train_nll": 0.5 / (epoch * (1 + i)),
        "valid_nll": 0.1 + 0.01 * i,
        "valid_error": 0.02 + 0.001 * epoch,
        "test_nll": 0.09 + 0.01 * i,
        "test_error": synthetic_test_error(norm, batch_size, i, epoch),
        "examples_per_sec": 1000.0 + i,
        "wall_s": 60.0 * epoch + 30.0 * i,  # last: 300, 330, 360 s -> 5.5 min on average
        "compile_s": 1.5,
    }


def synthetic_config(norm: str, batch_size: int, seed: int, experiment: str = "pimnist") -> dict:
    """Nested like ``ConfigDict.to_json_best_effort()`` (tuples as lists, None as null)."""
    return {
        "batch_size": batch_size,
        "checkpoint": {"every_epochs": 1, "keep": 3},
        "data": {"dir": "/data/mnist", "limit_train": None},
        "eval_batch_size": 5000,
        "experiment": experiment,
        "log_every_s": 30.0,
        "model": {
            "bn_unbiased": None,
            "epsilon": 1e-05,
            "hidden_sizes": [1000, 1000],
            "kernel_init": "he_normal",
            "norm": norm,
            "normalize_logits": None,
        },
        "num_epochs": NUM_EPOCHS,
        "optimizer": {"learning_rate": 0.001, "name": "adam"},
        "seed": seed,
        "steps_per_call": 500,
    }


@pytest.fixture
def synthetic_workdir(tmp_path) -> Path:
    """2 norms x 2 batch sizes x 3 seeds x 5 epochs of run directories, plus some clutter."""
    workdir = tmp_path / "grid"
    for norm in NORMS:
        for batch_size in BATCH_SIZES:
            for i, seed in enumerate(SEEDS):
                run_dir = workdir / cell_name(norm, batch_size) / f"seed={seed}"
                run_dir.mkdir(parents=True)
                config = synthetic_config(norm, batch_size, seed)
                (run_dir / "config.json").write_text(json.dumps(config, indent=2))
                records = [
                    synthetic_record(norm, batch_size, i, e) for e in range(1, NUM_EPOCHS + 1)
                ]
                (run_dir / "metrics.jsonl").write_text(
                    "".join(json.dumps(r) + "\n" for r in records)
                )
    # A run that has not written metrics yet, and a directory that is no run: both ignored.
    started = workdir / cell_name("layer", 128) / "seed=99"
    started.mkdir()
    (started / "config.json").write_text(json.dumps(synthetic_config("layer", 128, 99)))
    (workdir / "notes").mkdir()
    return workdir


def expected_row(norm: str, batch_size: int) -> dict:
    """The summary row computed with the statistics module from the synthetic curves."""
    curves = [
        [synthetic_test_error(norm, batch_size, i, e) for e in range(1, NUM_EPOCHS + 1)]
        for i in range(len(SEEDS))
    ]
    finals = [c[-1] for c in curves]
    bests = [min(c) for c in curves]
    best_epochs = [1 + c.index(min(c)) for c in curves]
    return {
        "cell": cell_name(norm, batch_size),
        "seeds": sorted(SEEDS),
        "epochs": NUM_EPOCHS,
        "final": [statistics.mean(finals), statistics.stdev(finals)],
        "best": [statistics.mean(bests), statistics.stdev(bests)],
        "best_epoch": statistics.mean(best_epochs),
        "wall_s": statistics.mean(60.0 * NUM_EPOCHS + 30.0 * i for i in range(len(SEEDS))),
    }


def test_report_writes_figure_and_exact_summaries(synthetic_workdir, monkeypatch):
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig

    def capture(fig, *args, **kwargs):
        figures.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    rows = report(synthetic_workdir, line_key="model.norm", column_key="batch_size")

    # summary.json: exactly the right numbers, and what report() returned.
    summary = json.loads((synthetic_workdir / "summary.json").read_text())
    assert summary == json.loads(json.dumps(rows))
    by_cell = {r["cell"]: r for r in summary}
    assert set(by_cell) == {cell_name(n, b) for n in NORMS for b in BATCH_SIZES}
    for norm in NORMS:
        for batch_size in BATCH_SIZES:
            row = by_cell[cell_name(norm, batch_size)]
            expected = expected_row(norm, batch_size)
            assert set(row) - {"paper_at_64", "paper_at_epoch"} == set(expected)
            assert row["seeds"] == [3, 7, 10]
            assert row["epochs"] == NUM_EPOCHS
            assert row["best_epoch"] == pytest.approx(3.0)
            assert row["wall_s"] == pytest.approx(330.0)
            for key in ("final", "best"):
                assert row[key] == pytest.approx(expected[key], rel=1e-12), key
            if norm == "layer":
                assert row["paper_at_64"] == paper_csv_value(batch_size, "test_err", "LN", 64)
                assert row["paper_at_epoch"] == paper_csv_value(
                    batch_size, "test_err", "LN", NUM_EPOCHS
                )
            else:
                assert "paper_at_64" not in row and "paper_at_epoch" not in row
    # The same numbers worked out by hand for two cells.
    ln128 = by_cell[cell_name("layer", 128)]
    assert ln128["final"] == pytest.approx([0.018, 0.001])
    assert ln128["best"] == pytest.approx([0.014, 0.001])
    assert ln128["paper_at_64"] == 0.01295
    wn4 = by_cell[cell_name("weight", 4)]
    assert wn4["final"] == pytest.approx([0.025, 0.002])
    assert wn4["best"] == pytest.approx([0.021, 0.004])

    # summary.md: the same numbers in percent with 2 decimals.
    markdown = (synthetic_workdir / "summary.md").read_text()
    table = markdown.splitlines()
    assert table[0].startswith("| cell | seeds | epochs | final test_error (%) |")
    paper_ln128 = f"{100 * paper_csv_value(128, 'test_err', 'LN', 64):.2f}"
    paper_ln128_5 = f"{100 * paper_csv_value(128, 'test_err', 'LN', 5):.2f}"
    assert (
        f"| model.norm=layer,batch_size=128 | 3 | 5 | 1.80 ± 0.10 | 1.40 ± 0.10 | 3.0 | "
        f"{paper_ln128_5} | {paper_ln128} | 5.5 min |"
    ) in table
    assert (
        "| model.norm=weight,batch_size=4 | 3 | 5 | 2.50 ± 0.20 | 2.10 ± 0.40 | 3.0 | – | – "
        "| 5.5 min |" in (table)
    )
    assert sum(line.startswith("| model.norm=") for line in table) == 4

    # figure.png: a real, non-blank PNG.
    png = synthetic_workdir / "figure.png"
    data = png.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 20_000
    import matplotlib.image

    image = matplotlib.image.imread(png)
    assert image.shape[0] > 400 and image.shape[1] > image.shape[0]
    assert image[..., :3].std() > 0.01

    # The figure: columns by batch size (128 first), rows train NLL (log) and test error; one
    # line per norm (mean over seeds), and the paper's curve only where the paper has the norm.
    (fig,) = figures
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["batch_size = 128", "batch_size = 4"]
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["train_nll", "test_error"]
    assert axes[0, 0].get_yscale() == "log" and axes[1, 0].get_yscale() == "linear"
    paper = pimnist.reference_curves()
    for j, batch_size in enumerate(BATCH_SIZES):
        for i, metric in enumerate(("train_nll", "test_error")):
            lines = {line.get_label(): line for line in axes[i, j].get_lines()}
            assert set(lines) == {"layer (3 seeds)", "weight (3 seeds)", "layer (paper)"}
            for norm in NORMS:
                values = [
                    [synthetic_record(norm, batch_size, k, e)[metric] for e in range(1, 6)]
                    for k in range(len(SEEDS))
                ]
                mean = lines[f"{norm} (3 seeds)"]
                np.testing.assert_array_equal(mean.get_xdata(), np.arange(1, 6))
                np.testing.assert_allclose(mean.get_ydata(), np.mean(values, axis=0))
            np.testing.assert_array_equal(
                lines["layer (paper)"].get_ydata(), paper[(batch_size, "layer")][metric]
            )


def test_summarize_single_seed_unfinished_runs_and_other_experiments():
    def run(cell, seed, errors, experiment="pimnist", norm="layer"):
        records = [
            {"epoch": e, "test_error": v, "wall_s": 10.0 * e} for e, v in enumerate(errors, 1)
        ]
        config = flatten_dict(synthetic_config(norm, 128, seed, experiment), sep=".")
        return Run(cell, seed, config, records)

    rows = summarize(
        [
            run("one", 0, [0.3, 0.1, 0.2]),
            run("short", 0, [0.5, 0.4, 0.3, 0.2, 0.1]),
            run("short", 1, [0.4, 0.2, 0.3]),
            run("other", 0, [0.3, 0.2], experiment="cifar"),
        ]
    )
    one, short, other = rows
    assert one["final"] == (0.2, 0.0) and one["best"] == (0.1, 0.0)
    assert one["best_epoch"] == 2.0 and one["epochs"] == 3 and one["wall_s"] == 30.0
    assert one["paper_at_64"] == 0.01295
    assert short["epochs"] == 3  # the least advanced seed
    assert short["seeds"] == [0, 1]
    assert short["final"] == pytest.approx((0.2, np.std([0.1, 0.3], ddof=1)))
    assert short["best_epoch"] == 3.5 and short["wall_s"] == 40.0
    assert "paper_at_64" not in other  # same batch size and norm, but not the paper's task

    with pytest.raises(UserError, match="No run directories"):
        report(Path("/nonexistent/lnexp-grid"))


def write_runs(workdir: Path, experiment: str, records: list[dict], norms=("none", "layer")):
    """One seed per norm of ``experiment``, each with ``records``."""
    for norm in norms:
        run_dir = workdir / f"model.norm={norm}" / "seed=0"
        run_dir.mkdir(parents=True)
        config = {"experiment": experiment, "model": {"norm": norm}, "seed": 0}
        (run_dir / "config.json").write_text(json.dumps(config))
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize(
    "experiment, metric, metrics",
    [
        ("pimnist", "test_error", ("train_nll", "test_error")),
        ("skipthought", "valid_nll", ("train_loss", "valid_nll", "valid_next_ppl")),
        ("transformer", "valid_bpc", ("train_loss", "valid_bpc")),
        ("draw", "test_bound", ("train_loss", "test_bound")),
    ],
)
def test_report_defaults_to_the_studys_metrics(tmp_path, monkeypatch, experiment, metric, metrics):
    """A grid of skip-thoughts (or any study) is reported by its own metrics unless told:
    before, every report defaulted to PI-MNIST's and a finished skip-thoughts grid ended in
    "no run has the metric 'train_nll'"."""
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda fig, *a, **k: figures.append(fig) or savefig(fig, *a, **k),
    )
    names = {"epoch", "step", "wall_s", metric, *metrics}
    records = [{n: float(e) if n != "epoch" else e for n in names} for e in (1, 2)]
    write_runs(tmp_path, experiment, records)
    report(tmp_path)
    assert f"final {metric}" in (tmp_path / "summary.md").read_text().splitlines()[0]
    assert not list(tmp_path.glob("*.tmp"))  # Each file written beside, then renamed over.
    (fig,) = figures
    assert [ax.get_ylabel() for ax in fig.axes] == list(metrics)
    # Told otherwise, the flags win.
    report(tmp_path, metric="wall_s", metrics=["wall_s"])
    assert "final wall_s" in (tmp_path / "summary.md").read_text()


def test_report_of_several_studies_asks_for_the_metrics(tmp_path):
    for sub, experiment, metric in (("a", "pimnist", "test_error"), ("b", "draw", "test_bound")):
        records = [{"epoch": 1, metric: 0.1, "wall_s": 1.0}]
        write_runs(tmp_path / sub, experiment, records, norms=("none",))
    for sub in ("a", "b"):
        for cell in (tmp_path / sub).iterdir():
            cell.rename(tmp_path / f"{sub}-{cell.name}")
    with pytest.raises(UserError, match=r"\['draw', 'pimnist'\].*--metric=NAME --metrics="):
        report(tmp_path)
    report(tmp_path, metric="wall_s", metrics=["wall_s"])  # Named, they are reported.


# --------------------------------------------------------------------------------------------
# End to end through the CLI.


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/compare.py", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_cli_runs_a_grid_skips_finished_cells_and_reports(tmp_path, tiny_mnist_dir):
    data_dir = tiny_mnist_dir
    workdir = tmp_path / "grid"
    grid_args = [
        "--config=configs/pimnist.py",
        f"--workdir={workdir}",
        "--grid=model.norm=none,layer",
        "--seeds=1",
        "--config.num_epochs=1",
        f"--config.data.dir={data_dir}",
        "--config.model.hidden_sizes=(16,)",
        "--config.batch_size",  # absl's two forms: --flag=value and --flag value.
        "32",
        "--config.data.limit_train=64",
    ]
    result = run_cli(*grid_args)
    assert result.returncode == 0, result.stdout + result.stderr
    run_dirs = [workdir / f"model.norm={norm}" / "seed=0" for norm in ("none", "layer")]
    for run_dir, norm in zip(run_dirs, ("none", "layer"), strict=True):
        records = read_metrics(run_dir)
        assert [r["epoch"] for r in records] == [1]
        assert records[0]["step"] == 64 // 32
        assert 0.0 <= records[0]["test_error"] <= 1.0
        config = json.loads((run_dir / "config.json").read_text())
        assert config["model"]["norm"] == norm and config["model"]["hidden_sizes"] == [16]
        assert (config["num_epochs"], config["batch_size"], config["seed"]) == (1, 32, 0)
        assert (config["data"]["dir"], config["data"]["limit_train"]) == (str(data_dir), 64)
    assert (workdir / "figure.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((workdir / "summary.json").read_text())
    assert sorted(r["cell"] for r in summary) == ["model.norm=layer", "model.norm=none"]
    assert all(r["seeds"] == [0] and r["epochs"] == 1 for r in summary)
    assert "| model.norm=none | 1 | 1 |" in (workdir / "summary.md").read_text()
    assert "| model.norm=none | 1 | 1 |" in result.stdout
    mtimes = [(d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs]

    # Again: both cells are finished, so nothing is trained.
    result = run_cli(*grid_args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("skipped") == 2, result.stdout
    assert "training" not in result.stdout
    assert [(d / "metrics.jsonl").stat().st_mtime_ns for d in run_dirs] == mtimes
    assert all(len(read_metrics(d)) == 1 for d in run_dirs)

    # --report alone only aggregates.
    for name in ("figure.png", "summary.md", "summary.json"):
        (workdir / name).unlink()
    result = run_cli(f"--workdir={workdir}", "--report")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "skipped" not in result.stdout and "training" not in result.stdout
    assert (workdir / "figure.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((workdir / "summary.json").read_text()) == summary

    # Errors the user can fix exit with status 2 and a message.
    result = run_cli(f"--workdir={tmp_path / 'empty'}", "--report")
    assert result.returncode == 2 and "No run directories" in result.stderr
    result = run_cli(f"--workdir={workdir}", "--grid=model.norm=layer")
    assert result.returncode == 2 and "--config is required" in result.stderr


@pytest.mark.slow
def test_cli_grid_in_two_processes_shares_the_cells(tmp_path, tiny_mnist_dir):
    """The same grid command in a second process skips the cell the first is training (its
    lock held, here by this test) and trains the next; run again, it trains the freed cell."""
    from lnexp.training.run_dir import RunDir

    workdir = tmp_path / "grid"
    grid_args = [
        "--config=configs/pimnist.py",
        f"--workdir={workdir}",
        "--grid=model.norm=none,layer",
        "--config.num_epochs=1",
        f"--config.data.dir={tiny_mnist_dir}",
        "--config.model.hidden_sizes=(16,)",
        "--config.batch_size=32",
        "--config.data.limit_train=64",
    ]
    held, other = (workdir / f"model.norm={n}" / "seed=0" for n in ("none", "layer"))
    with RunDir(held).lock():
        result = run_cli(*grid_args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{held} is being trained by pid {os.getpid()}" in result.stdout, result.stdout
    assert not (held / "metrics.jsonl").exists()
    assert [r["epoch"] for r in read_metrics(other)] == [1]

    result = run_cli(*grid_args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{other} is finished; skipped." in result.stdout
    assert [r["epoch"] for r in read_metrics(held)] == [1]
    assert "being trained by" not in result.stdout


def test_cli_refuses_a_bad_grid_or_override_before_training(tmp_path):
    """One ``error:`` paragraph naming the key, exit status 2, and no cell made."""
    workdir = tmp_path / "grid"
    base = ["--config=configs/pimnist.py", f"--workdir={workdir}"]
    cases = [
        (["--grid", "batch_size=128,four"], ["--grid batch_size=128,four", "batch_size=four"]),
        (["--grid=model.nrom=layer,none"], ["--grid model.nrom=layer,none", "no key 'model.nrom'"]),
        (["--config.model.nrom=batch"], ["--config.model.nrom=batch", "no key 'model.nrom'"]),
        (["--config.num_epochs=1.5"], ["--config.num_epochs=1.5", "invalid literal for int()"]),
        (["--set=num_epochs=1"], ["Unknown command line flag 'set'"]),  # Gone: --config.KEY=V.
        (["stray"], ["unexpected arguments: stray"]),
    ]
    for args, words in cases:
        result = run_cli(*base, *args)
        assert result.returncode == 2, (args, result.stdout + result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr, args
        for word in words:
            assert word in result.stderr, (args, word, result.stderr)
    assert not workdir.exists()


def test_summarize_at_an_earlier_epoch(synthetic_workdir):
    rows = {r["cell"]: r for r in summarize(find_runs(synthetic_workdir), at_epoch=3)}
    norm, batch_size = NORMS[0], BATCH_SIZES[0]
    row = rows[cell_name(norm, batch_size)]
    curves = [[synthetic_test_error(norm, batch_size, i, e) for e in range(1, 4)] for i in range(3)]
    assert row["epochs"] == 3
    np.testing.assert_allclose(row["final"][0], statistics.mean(c[-1] for c in curves))
    np.testing.assert_allclose(row["best"][0], statistics.mean(min(c) for c in curves))
    assert row["wall_s"] == statistics.mean(60.0 * 3 + 30.0 * i for i in range(3))
    # Runs that never reached the epoch are left out.
    assert summarize(find_runs(synthetic_workdir), at_epoch=NUM_EPOCHS + 1) == []


def test_export_copies_configs_and_metrics_only(synthetic_workdir, tmp_path):
    run_dir = synthetic_workdir / cell_name(NORMS[0], BATCH_SIZES[0]) / f"seed={SEEDS[0]}"
    (run_dir / "checkpoints" / "5").mkdir(parents=True)
    dest = tmp_path / "exported"
    assert export(synthetic_workdir, dest) == len(NORMS) * len(BATCH_SIZES) * 3 + 1
    copied = dest / run_dir.relative_to(synthetic_workdir)
    assert sorted(p.name for p in copied.iterdir()) == ["config.json", "metrics.jsonl"]
    assert (copied / "metrics.jsonl").read_text() == (run_dir / "metrics.jsonl").read_text()
    # The export reports exactly like the original.
    assert summarize(find_runs(dest)) == summarize(find_runs(synthetic_workdir))


def test_export_keeps_downstream_evaluations(synthetic_workdir, tmp_path):
    run_dir = synthetic_workdir / cell_name(NORMS[0], BATCH_SIZES[0]) / f"seed={SEEDS[0]}"
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "3000.json").write_text('{"step": 3000}')
    dest = tmp_path / "exported"
    export(synthetic_workdir, dest)
    copied = dest / run_dir.relative_to(synthetic_workdir) / "eval" / "3000.json"
    assert copied.read_text() == '{"step": 3000}'
