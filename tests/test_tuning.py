"""lnexp.reporting.tuning: a hyperparameter chosen per configuration from a sweep's validation
curves."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from lnexp import config as config_module
from lnexp.reporting import tuning
from lnexp.reporting.runs import find_runs

REPO = Path(__file__).resolve().parents[1]


def write_run(root: Path, norm: str, rate: float, valid: list[float], seed: int = 0) -> None:
    run_dir = root / f"model.norm={norm},optimizer.learning_rate={rate:g}" / f"seed={seed}"
    run_dir.mkdir(parents=True)
    config = {
        "experiment": "pimnist",
        "seed": seed,
        "batch_size": 128,
        "model": {"norm": norm},
        "optimizer": {"learning_rate": rate},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = [json.dumps({"epoch": e, "valid_error": v}) for e, v in enumerate(valid, 1)]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def sweep(tmp_path):
    # layer: 1e-3 wins on the last half (0.02, 0.02) although 3e-4 has the best single epoch.
    write_run(tmp_path, "layer", 3e-4, [0.05, 0.01, 0.03, 0.03])
    write_run(tmp_path, "layer", 1e-3, [0.05, 0.04, 0.02, 0.02])
    write_run(tmp_path, "layer", 3e-3, [0.05, 0.04, 0.03, float("nan")])  # Diverged.
    # none: the highest rate wins, at the edge; two seeds are averaged.
    write_run(tmp_path, "none", 3e-4, [0.05, 0.05, 0.04, 0.04])
    write_run(tmp_path, "none", 1e-3, [0.05, 0.04, 0.03, 0.03])
    write_run(tmp_path, "none", 1e-3, [0.05, 0.04, 0.01, 0.01], seed=1)
    return tmp_path


def test_score_is_the_mean_of_the_last_half_and_infinite_when_diverged(sweep):
    runs = {(r.cell, r.seed): r for r in find_runs(sweep)}
    assert tuning.score(runs[("model.norm=layer,optimizer.learning_rate=0.0003", 0)]) == 0.03
    assert math.isinf(tuning.score(runs[("model.norm=layer,optimizer.learning_rate=0.003", 0)]))


def test_choose_per_configuration_with_edges(sweep):
    rows = tuning.choose(find_runs(sweep), "optimizer.learning_rate", ["model.norm"])
    layer, none = rows
    assert layer["model.norm"] == "layer" and layer["chosen"] == 1e-3 and layer["at_edge"] is None
    assert layer["scores"]["0.001"] == pytest.approx(0.02)
    assert none["chosen"] == 1e-3 and none["at_edge"] == "highest"
    assert none["scores"]["0.001"] == pytest.approx(0.02)  # (0.03 + 0.01) / 2 over seeds.


def test_command_line_writes_the_choice_and_refuses_test_metrics(sweep):
    cmd = [sys.executable, "-m", "lnexp.reporting.tuning", "--workdir", str(sweep)]
    cmd += ["--by", "model.norm"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "| layer | 3.00 | **2.00** | diverged | 0.001 |" in out
    assert "0.001 (at the highest edge)" in out
    assert json.loads((sweep / "choice.json").read_text())[0]["chosen"] == 1e-3
    bad = subprocess.run([*cmd, "--metric", "test_error"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def tuned_config(rate=None):
    import ml_collections

    config = ml_collections.ConfigDict(
        {
            "batch_size": 4,
            "model": {"norm": "layer"},
            "optimizer": {
                "learning_rate": rate,
                "tuned_rates": (
                    ("model.norm=layer,batch_size=128", 3e-3),
                    ("model.norm=layer,batch_size=4", 1e-4),
                    ("model.norm=batch,batch_size=4", 3e-5),
                ),
            },
        }
    )
    config.optimizer.learning_rate = rate
    config.lock()
    return config


def test_resolve_learning_rate_from_the_table():
    config = tuned_config()
    resolved = config_module.resolve_learning_rate(config)
    assert resolved.optimizer.learning_rate == 1e-4 and config.optimizer.learning_rate is None
    # A rate given explicitly wins over the table.
    assert config_module.resolve_learning_rate(tuned_config(0.5)).optimizer.learning_rate == 0.5
    with config.unlocked():
        config.model.norm = "weight"
    from lnexp.errors import UserError

    with pytest.raises(UserError, match="0 entries of config.optimizer.tuned_rates match"):
        config_module.resolve_learning_rate(config)


def test_tuned_pimnist_config_names_a_rate_per_method_and_batch_size():
    from lnexp.config import load_config

    config_path = REPO / "configs" / "pimnist.py"
    assert load_config(config_path).optimizer.learning_rate == 3e-4  # The default: one rate.
    rates = {}
    for norm in ("none", "batch", "layer", "weight"):
        for batch_size in (128, 4):
            overrides = [("model.norm", norm), ("batch_size", str(batch_size))]
            config = load_config(f"{config_path}:tuned", overrides)
            assert config.optimizer.learning_rate is None
            rates[norm, batch_size] = config_module.resolve_learning_rate(
                config
            ).optimizer.learning_rate
    assert all(isinstance(r, float) and 1e-6 < r < 1e-1 for r in rates.values()), rates
    # A rate given on the command line wins over the table.
    config = load_config(f"{config_path}:tuned", [("optimizer.learning_rate", "0.5")])
    assert config_module.resolve_learning_rate(config).optimizer.learning_rate == 0.5
