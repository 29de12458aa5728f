"""lnexp.studies.pimnist.ablation: each choice alone against the protocol (Figure 6's ablation)."""

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO, load_config
from flax.traverse_util import flatten_dict, unflatten_dict

from lnexp.errors import UserError
from lnexp.reporting.runs import find_runs
from lnexp.studies.pimnist import ablation

EPOCHS = 30


def protocol() -> dict:
    return flatten_dict(load_config("pimnist").to_dict(), sep=".")


def write_run(workdir, cell, seed, valid, *, epochs=EPOCHS, drop=(), **changes):
    """A finished run directory of ``epochs`` records whose valid_error is ``valid`` (constant,
    or the last 20 epochs' value when a pair ``(early, late)``) and test_error 0.01 above it."""
    config = {**protocol(), "seed": seed, "num_epochs": EPOCHS}
    config.update({k.replace("__", "."): v for k, v in changes.items()})
    for key in drop:
        del config[key]
    run_dir = workdir / cell / f"seed={seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(unflatten_dict(config, sep=".")))
    early, late = valid if isinstance(valid, tuple) else (valid, valid)
    lines = []
    for epoch in range(1, epochs + 1):
        v = late if epoch > EPOCHS - 20 else early
        lines.append(
            json.dumps({"epoch": epoch, "step": epoch, "valid_error": v, "test_error": v + 0.01})
        )
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def grid(tmp_path):
    for seed, (c, lr, st) in enumerate([(0.0150, 0.0120, 0.0149), (0.0152, 0.0122, 0.0151)]):
        write_run(tmp_path, "model.norm=layer", seed, (0.05, c))
        write_run(tmp_path, "model.norm=layer,lr=1e-3", seed, lr, optimizer__learning_rate=1e-3)
        write_run(tmp_path, "model.norm=layer,std", seed, st, data__input_scaling="standardize")
    write_run(
        tmp_path, "model.norm=layer,cosine", 0, 0.001, epochs=10, optimizer__schedule="cosine"
    )  # Unfinished: not counted.
    write_run(tmp_path, "model.norm=none", 0, 0.02, model__norm="none", data__dir="/elsewhere")
    return tmp_path


def test_choices_are_the_fields_that_differ(grid):
    rows = ablation.ablate(find_runs(grid), protocol())
    labels = [(r["method"], r["choice"], len(r["seeds"])) for r in rows]
    assert labels == [
        ("layer", "control", 2),
        ("layer", "data.input_scaling=standardize", 2),
        ("layer", "optimizer.learning_rate=0.001", 2),
        ("none", "control", 1),
    ]
    control = rows[0]
    assert control["valid"][0] == pytest.approx(0.0151)  # The last 20 epochs only.
    assert control["test"][0] == pytest.approx(0.0251)
    lr = rows[2]
    assert lr["gain"] == pytest.approx(0.003)
    assert lr["gain_se"] == pytest.approx(2**0.5 * 1e-4, rel=1e-3)  # Both seeds' std: 1.41e-4.


def test_adopted_only_beyond_the_standard_error(grid):
    choices = {
        c["key"]: c
        for c in ablation.choose(ablation.ablate(find_runs(grid), protocol()), protocol())
    }
    assert choices["optimizer.learning_rate"]["adopted"]
    assert choices["optimizer.learning_rate"]["best"] == "0.001"
    # Standardizing gains 0.01 points, less than its standard error: the protocol's value stays.
    assert not choices["data.input_scaling"]["adopted"]
    assert choices["data.input_scaling"]["best"] == "standardize"
    assert choices["data.input_scaling"]["effect"] == pytest.approx(0.0001)


def test_worse_choices_keep_the_protocols_value(tmp_path):
    for seed in range(2):
        write_run(tmp_path, "c", seed, 0.015 + seed * 1e-4)
        write_run(tmp_path, "e", seed, 0.02 + seed * 1e-4, model__epsilon=1e-3)
    rows = ablation.ablate(find_runs(tmp_path), protocol())
    (choice,) = ablation.choose(rows, protocol())
    assert (choice["best"], choice["gain"], choice["adopted"]) == (1e-5, 0.0, False)


def test_two_changes_at_once_are_refused(tmp_path):
    write_run(tmp_path, "two", 0, 0.01, model__epsilon=1e-3, optimizer__eps=1e-4)
    with pytest.raises(UserError, match="one at a time"):
        ablation.ablate(find_runs(tmp_path), protocol())


def test_a_run_written_before_a_protocol_field_is_refused(tmp_path):
    """A config.json that lacks a field of the protocol (written before it existed) is refused
    with the fields named, not read as a choice."""
    old, older = tmp_path / "old", tmp_path / "older"
    write_run(old, "model.norm=layer", 0, 0.015, drop=["data.input_scaling"])
    with pytest.raises(UserError, match=r"seed=0 lacks fields of the protocol \(data\.input_"):
        ablation.ablate(find_runs(old), protocol())
    # Fields that are never choices (where the data comes from, ...) may be missing.
    write_run(older, "model.norm=layer", 0, 0.015, drop=["data.url", "data.source"])
    assert [r["choice"] for r in ablation.ablate(find_runs(older), protocol())] == ["control"]


def test_command_line_writes_the_report(grid):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lnexp.studies.pimnist.ablation",
            f"--workdir={grid}",
            f"--config={REPO / 'configs' / 'pimnist.py'}",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    text = (grid / "ablation.md").read_text()
    assert text in done.stdout
    assert "| layer | optimizer.learning_rate=0.001 | 2 | 1.21 ± 0.01 | +0.30 ± 0.01 |" in text
    assert "| layer | 1.29 |" in text  # The paper's final LN error at batch 128.
    report = json.loads((grid / "ablation.json").read_text())
    assert report["window"] == 20 and len(report["rows"]) == 4


def test_command_line_refuses_an_empty_directory(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lnexp.studies.pimnist.ablation",
            f"--workdir={tmp_path}",
            f"--config={REPO / 'configs' / 'pimnist.py'}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: No run directories") and "Traceback" not in done.stderr


def test_the_paper_comparison_uses_the_claims_rule():
    """The best choice matches the paper when |ours - paper| <= 2 se_d, se_d counting the test
    images' binomial noise (as claims.md does), not only the seeds' spread."""

    def row(method, finals):
        stats = ablation._stats(finals)
        return dict(
            method=method,
            choice="control",
            seeds=[0, 1],
            valid=stats,
            test=stats,
            final_test=stats,
            final_tests=finals,
            gain=None,
            gain_se=None,
        )

    # 1.33 +- 0.01 vs 1.29: beyond the seeds' spread, well within the test set's noise (~0.16).
    near = ablation.ablation_markdown([row("layer", [0.0132, 0.0134])], [], 20, {"layer": 0.0129})
    assert "| layer | 1.29 | 1.33 ± 0.01 | control | +0.04 ± 0.16 | yes |" in near
    far = ablation.ablation_markdown([row("layer", [0.0170, 0.0172])], [], 20, {"layer": 0.0129})
    assert "| layer | 1.29 | 1.71 ± 0.01 | control | +0.42 ± 0.17 | no |" in far


def _fake_python(tmp_path):
    """A ``python`` first on PATH that records its arguments instead of training."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, log


def test_protocol_script_reuses_the_ablation_runs_and_trains_each_method_at_its_choice(tmp_path):
    env, log = _fake_python(tmp_path)
    ablation_dir, workdir = tmp_path / "abl", tmp_path / "work"
    cells = {
        "layer": "optimizer.learning_rate=1e-3",
        "batch": "optimizer.learning_rate=1e-4",
        "none": "model.kernel_init=glorot_uniform",
    }
    for norm, choice in cells.items():
        for seed in (0, 1):
            run = ablation_dir / f"model.norm={norm},{choice}" / f"seed={seed}"
            run.mkdir(parents=True)
            (run / "config.json").write_text(f'{{"seed": {seed}}}')
            (run / "metrics.jsonl").write_text(f"{norm} {seed}\n")
    kept = workdir / "model.norm=layer,batch_size=128" / "seed=1"
    kept.mkdir(parents=True)  # A run already there is never overwritten.
    script = [str(REPO / "scripts" / "fig6_protocol.sh"), str(workdir), "MNIST", "128,4"]
    subprocess.run([*script, str(ablation_dir)], env=env, check=True, cwd=REPO)
    for norm in cells:
        for seed in (0, 1):
            copied = workdir / f"model.norm={norm},batch_size=128" / f"seed={seed}"
            if copied == kept:
                assert not any(copied.iterdir())
                continue
            assert (copied / "metrics.jsonl").read_text() == f"{norm} {seed}\n"
            assert (copied / "config.json").exists()
    calls = log.read_text().splitlines()
    assert len(calls) == 3
    for call, (norm, choice) in zip(calls, cells.items(), strict=True):
        assert call.startswith("scripts/compare.py --config configs/pimnist.py")
        assert f"--grid model.norm={norm}" in call and f"--config.{choice}" in call
        assert "--seeds 3" in call and call.endswith("--grid batch_size=128,4")
        assert "--config.data.dir=MNIST" in call


def test_protocol_script_refuses_an_ablation_dir_without_the_runs(tmp_path):
    env, log = _fake_python(tmp_path)
    workdir = tmp_path / "work"
    done = subprocess.run(
        [str(REPO / "scripts" / "fig6_protocol.sh"), str(workdir), "MNIST", "128", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "has no config.json and metrics.jsonl: ABLATION_DIR must be" in done.stderr
    assert not workdir.exists() and not log.exists()
