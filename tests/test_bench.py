"""The benchmarks (lnexp.bench, scripts/bench.py) at tiny sizes: rows, ratios, limits, reports,
and that each PyTorch twin computes what the lnexp model computes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lnexp import cells
from lnexp.bench import machine, norms, recurrent, report, timing
from lnexp.bench.sections import BenchConfig
from lnexp.bench.timing import Prepared, time_interleaved
from lnexp.errors import UserError
from lnexp.studies.draw import bench as draw
from lnexp.studies.pimnist import bench as pimnist
from lnexp.studies.pimnist import bench_grid as fig6
from lnexp.studies.transformer import bench as transformer

REPO = Path(__file__).resolve().parents[1]
# Importing torch 2.13 warns about its own use of torch.jit.script_method.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method:DeprecationWarning")

# One unroll keeps the JAX compiles few; torch.compile is tested on its own (slow).
TINY = BenchConfig(
    batch=2,
    hidden=8,
    input=4,
    steps=3,
    repeats=1,
    warmup=1,
    unrolls=(1,),
    torch_compile=False,
    torch_threads=1,
    pimnist_norms=("none", "layer"),
    pimnist_batches=(8,),
    pimnist_examples=16,
    pimnist_repeats=1,
)
JAX_ROWS = [
    "lnexp LN-GRU (inputs precomputed, unroll 1)",
    "lnexp LN-GRU (per-step inputs, unroll 1)",
    "lnexp LN-LSTM (inputs precomputed, unroll 1)",
    "lnexp LN-LSTM (per-step inputs, unroll 1)",
    "lnexp GRU norm=none (inputs precomputed, unroll 1)",
    "lnexp GRU norm=none (per-step inputs, unroll 1)",
    recurrent.FLAX_GRU,
]
TORCH_ROWS = ["torch nn.GRU", "torch LN-GRU (eager)", recurrent.TORCH_COMPILED_LN_GRU]
# Tiny, fixed machine limits, so the PI-MNIST tests do not spend time measuring them.
LIMITS = {
    "matmul": [{"library": "jax", "shape": [2, 2, 2], "flops_per_s": 1e11}],
    "bandwidth": [{"array_mb": 1.0, "donated": True, "bytes_per_s": 2e10}],
    "matmul_flops_per_s": 1e11,
    "bandwidth_bytes_per_s": 2e10,
    "cache_bandwidth_bytes_per_s": 4e10,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The recurrent section run once at tiny sizes: (results, JSON path, markdown path)."""
    directory = tmp_path_factory.mktemp("bench")
    out, markdown = directory / "out" / "bench.json", directory / "bench.md"
    results = report.run_benchmark(["recurrent"], TINY, out=out, markdown=markdown)
    return results, out, markdown


def _rows(results, section="recurrent") -> dict[str, dict]:
    return {row["name"]: row for row in results["sections"][section]["rows"]}


def test_jax_rows_are_timed(run):
    results, _, _ = run
    rows = _rows(results)
    assert list(rows) == JAX_ROWS + TORCH_ROWS
    flax_ms = rows[recurrent.FLAX_GRU]["median_ms"]
    for name in JAX_ROWS:
        row = rows[name]
        assert row["tokens_per_s"] > 0 and math.isfinite(row["tokens_per_s"]), name
        assert row["compile_s"] > 0 and row["median_ms"] > 0 and row["repeats"] == 1, name
        assert row["tokens_per_s"] == pytest.approx(2 * 3 / (row["median_ms"] / 1e3))
        assert row["x_flax_gru"] == pytest.approx(row["median_ms"] / flax_ms)
    assert rows[recurrent.FLAX_GRU]["x_flax_gru"] == 1.0
    assert rows["lnexp LN-GRU (per-step inputs, unroll 1)"]["precompute_inputs"] is False


def test_json_and_markdown_are_written(run):
    results, out, markdown = run
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(results))
    assert [row["name"] for row in written["sections"]["recurrent"]["rows"]] == list(_rows(results))
    m = written["machine"]
    assert m["cpu"] and m["cpu_count"] >= 1 and m["jax"]
    assert "torch" in m and "load_average" in m
    assert written["config"]["hidden"] == 8 and written["config"]["steps"] == 3
    text = markdown.read_text()
    assert text == report.to_markdown(results)
    assert "### recurrent" in text and "| row | compile s | ms/step | tokens/s |" in text
    for name in JAX_ROWS + TORCH_ROWS:
        assert f"| {name} |" in text


def test_torch_rows_without_torch_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(recurrent, "import_torch", lambda: None)
    rows = recurrent._torch_rows(TINY, np.zeros((2, 3, 4), np.float32))
    assert [row["name"] for row in rows] == TORCH_ROWS
    for row in rows:
        assert "pip install torch" in row["skipped"] and "median_ms" not in row
    rows = recurrent.add_ratios(rows, recurrent.REFERENCES)
    assert all(row["x_torch_compile_ln_gru"] is None for row in rows)


def test_unknown_section_and_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="recurrent"):
        report.run_benchmark(["recurent"], TINY, out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    with pytest.raises(UserError, match="pimnist_norms"):
        BenchConfig(pimnist_norms=("weight",))
    with pytest.raises(UserError, match="pimnist_examples"):
        BenchConfig(pimnist_examples=0)


def test_torch_rows(run):
    pytest.importorskip("torch")
    results, _, _ = run
    rows = _rows(results)
    for name in TORCH_ROWS[:2]:
        assert rows[name]["tokens_per_s"] > 0 and rows[name]["compile_s"] is None, name
        assert rows[name]["torch_threads"] == 1
    assert "--notorch_compile" in rows[recurrent.TORCH_COMPILED_LN_GRU]["skipped"]
    assert rows[TORCH_ROWS[0]]["x_torch_compile_ln_gru"] is None


def test_torch_ln_gru_matches_lnexp_gru_cell():
    torch = pytest.importorskip("torch")
    cell = cells.GRUCell(4, 8, norm="layer", rngs=nnx.Rngs(0))
    # Non-trivial LN gains and biases, so that every parameter is copied and used.
    for i, name in enumerate(["norm_i", "norm_h", "norm_i_candidate", "norm_h_candidate"]):
        norm = getattr(cell, name)
        n = norm.scale.shape[0]
        norm.scale[...] = 1.0 + 0.1 * (i + 1) * jnp.sin(jnp.arange(n, dtype=jnp.float32))
        norm.bias[...] = 0.05 * (i + 1) * jnp.cos(jnp.arange(n, dtype=jnp.float32))
    xs = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    _, expected = cells.scan(cell, jnp.asarray(xs))
    with torch.no_grad():
        actual = recurrent.torch_ln_gru(cell)(torch.from_numpy(xs)).numpy()
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compiled_ln_gru_row():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cell = cells.GRUCell(4, 8, norm="layer", rngs=nnx.Rngs(0))
    xs = np.zeros((2, 3, 4), np.float32)
    row = recurrent.prepare_torch("compiled", recurrent.torch_ln_gru(cell), xs, TINY, compile=True)
    if isinstance(row, Prepared):
        row = time_interleaved([row], TINY.repeats)[0]
    # Either timed, or the compile error reported in the row (no C++ compiler, say).
    if row.get("error"):
        assert row["error"].startswith("torch.compile failed:")
    else:
        assert row["compile_s"] > 0 and row["tokens_per_s"] > 0
        assert row["compile_mode"] == "default"


def test_rows_are_timed_round_robin():
    calls = []
    prepared = [
        Prepared(n, "x", lambda n=n: calls.append(n), None, items=6, steps=3) for n in "abc"
    ]
    rows = time_interleaved(prepared, 4)
    assert calls == list("abc") * 4
    assert [r["name"] for r in rows] == list("abc") and all(r["repeats"] == 4 for r in rows)
    # Times are per training step; items per second per call.
    for r in rows:
        assert r["median_ms"] * 3 / 1e3 == pytest.approx(6 / r["tokens_per_s"])


def test_a_settling_row_is_timed_after_its_untimed_calls():
    """``settle=2``: each round calls the row three times and times the last call only."""
    clock = {"t": 0.0, "calls": []}

    def step(name, cost):
        clock["calls"].append(name)
        clock["t"] += cost if clock["calls"][-2:-1] == [name] else 10 * cost  # Slow after another.

    prepared = [
        Prepared("a", "x", lambda: step("a", 1.0), None, settle=2),
        Prepared("b", "x", lambda: step("b", 2.0), None),
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timing.time, "perf_counter", lambda: clock["t"])
        rows = time_interleaved(prepared, 3)
    assert clock["calls"] == list("aaab") * 3
    # a's timed call follows a's own: its steady cost; b follows a: its slow cost.
    assert [r["median_ms"] for r in rows] == [1e3 * 1.0, 1e3 * 20.0]
    assert all(r["repeats"] == 3 for r in rows)


# --------------------------------------------------------------------------------------------
# PI-MNIST.


def test_flops_and_bytes_of_the_paper_mlp():
    # Forward 2 * (784*1000 + 1000*1000 + 1000*10), as much again for the weight gradients, and
    # the input gradients of the second and third layers.
    forward = 2 * (784 * 1000 + 1000 * 1000 + 1000 * 10)
    assert pimnist.flops_per_example() == 2 * forward + 2 * (1000 * 1000 + 1000 * 10)
    assert pimnist.parameter_count("none") == 784 * 1000 + 1000 + 1000 * 1000 + 1000 + 10010
    # Layer norm: no biases in the linear maps, a gain and a bias per hidden unit; the logits
    # keep their bias (the paper's placement: no LN there).
    assert pimnist.parameter_count("layer") == 784_000 + 1_000_000 + 10_010 + 4 * 1000


def test_roofline_picks_the_binding_limit():
    lim = dict(LIMITS, matmul_flops_per_s=1e11, bandwidth_bytes_per_s=5e10)
    lim["cache_bandwidth_bytes_per_s"] = 1e11
    big = pimnist.roofline("none", 128, lim)
    assert big["bound"] == "matmul"
    assert big["limit_examples_per_s"] == pytest.approx(1e11 / pimnist.flops_per_example())
    assert big["cache_limit_examples_per_s"] == big["limit_examples_per_s"]
    small = pimnist.roofline("none", 4, lim)
    assert small["bound"] == "memory"
    assert small["bytes_per_step"] == 10 * 4 * pimnist.parameter_count("none")
    assert small["limit_examples_per_s"] == pytest.approx(4 * 5e10 / small["bytes_per_step"])
    assert small["cache_limit_examples_per_s"] == pytest.approx(2 * small["limit_examples_per_s"])


def test_memory_bandwidth_is_the_largest_arrays_triad(monkeypatch):
    def fake(num_floats, repeats=10, donate=True, steps=10):
        rate = (1e12 / num_floats) * (0.5 if not donate else 1.0)  # Smaller arrays: faster.
        return {"array_mb": num_floats * 4 / 2**20, "donated": donate, "bytes_per_s": rate}

    monkeypatch.setattr(machine, "measure_bandwidth", fake)
    monkeypatch.setattr(machine, "measure_matmul", lambda shapes, torch_threads=0: LIMITS["matmul"])
    lim = machine.machine_limits([(2, 2, 2)], [1000, 10])
    assert lim["bandwidth_bytes_per_s"] == 1e12 / 1000
    assert lim["cache_bandwidth_bytes_per_s"] == 1e12 / 10
    assert [r["donated"] for r in lim["bandwidth"]] == [True, True, False]


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_torch_mlp_computes_what_the_lnexp_mlp_computes(norm):
    torch = pytest.importorskip("torch")
    model = pimnist.lnexp_model(norm, 128, 0)
    twin = pimnist.torch_mlp(norm)
    # Copy lnexp's parameters into the twin, layer by layer: Linear, then the normalizer.
    linears = [m for m in twin if isinstance(m, torch.nn.Linear)]
    normalizers = [m for m in twin if isinstance(m, torch.nn.LayerNorm | torch.nn.BatchNorm1d)]
    layers = list(model.layers)
    assert len(linears) == len(layers) == 3
    with torch.no_grad():
        for linear, layer in zip(linears, layers, strict=True):
            linear.weight.copy_(torch.from_numpy(np.array(layer.linear.kernel[...]).T))
            if linear.bias is not None:
                linear.bias.copy_(torch.from_numpy(np.array(layer.linear.bias[...])))
        hidden = [layer for layer in layers if layer.norm_name != "none"]
        assert len(normalizers) == len(hidden)
        for normalizer, layer in zip(normalizers, hidden, strict=True):
            normalizer.weight.copy_(torch.from_numpy(np.array(layer.norm.scale[...])))
            normalizer.bias.copy_(torch.from_numpy(np.array(layer.norm.bias[...])))
    x = np.random.default_rng(0).random((5, 784), np.float32)
    model.eval()  # Batch norm: running averages (fresh: mean 0, variance 1) in both.
    twin.eval()
    expected = np.asarray(model(jnp.asarray(x)))
    with torch.no_grad():
        actual = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("without_torch", [False, True])
def test_pimnist_section_rows_ratios_and_goals(monkeypatch, without_torch):
    monkeypatch.setattr(pimnist, "limits", lambda config: LIMITS)
    if without_torch:
        monkeypatch.setattr(pimnist, "import_torch", lambda: None)
    results = pimnist.run(TINY)
    rows = {(r["method"], r["norm"]): r for r in results["rows"]}
    expected = {(m, n) for m in pimnist.FRAMEWORKS for n in ("none", "layer")}
    assert set(rows) == expected | {(pimnist.LNEXP_SGD, "none")}
    assert rows[pimnist.LNEXP_SGD, "none"]["examples_per_s"] > 0
    for norm in ("none", "layer"):
        row = rows[pimnist.LNEXP, norm]
        assert row["examples_per_s"] > 0 and row["compile_s"] > 0 and row["batch"] == 8
        assert row["examples_per_s"] == pytest.approx(8 / (row["median_ms"] / 1e3))
        limit = pimnist.roofline(norm, 8, LIMITS)["limit_examples_per_s"]
        assert row["fraction_of_limit"] == pytest.approx(row["examples_per_s"] / limit)
        compiled = rows[pimnist.TORCH_COMPILED, norm]
        if "examples_per_s" not in rows[pimnist.TORCH_EAGER, norm]:  # PyTorch not installed
            for method in pimnist.FRAMEWORKS[1:]:
                assert "pip install torch" in rows[method, norm]["skipped"]
            assert row["x_torch_eager"] is None
        else:
            assert "--notorch_compile" in compiled["skipped"]
            eager = rows[pimnist.TORCH_EAGER, norm]["examples_per_s"]
            assert row["x_torch_eager"] == pytest.approx(row["examples_per_s"] / eager)
            assert rows[pimnist.TORCH_EAGER, norm]["x_torch_eager"] == 1.0
    # Batch 8 has no goal of its own; the layer-norm overhead goal needs batch 128.
    assert results["goals"] == []
    assert results["limits"] is LIMITS
    text = report.to_markdown({"machine": machine.machine_info(), "sections": {"pimnist": results}})
    assert "| lnexp norm=layer batch=8 |" in text and "Machine limits (measured)" in text


def test_pimnist_goals_wording():
    rows = []
    for norm, ms in (("none", 10.0), ("layer", 10.5)):
        rows.append(
            {"method": pimnist.LNEXP, "norm": norm, "batch": 128, "median_ms": ms,
             "x_torch_eager": 2.0, "x_torch_best": 1.4, "fraction_of_limit": 0.8,
             "bound": "matmul",
             "limit_examples_per_s": 20_000.0}
        )  # fmt: skip
    goals = pimnist.goals(rows)
    assert "Goal norm=none batch=128 >= 1.8x torch eager: met (2.00x)." in goals
    assert "Goal norm=none batch=128 >= 1.3x the best PyTorch row: met (1.40x)." in goals
    assert any(g.startswith("Goal norm=none batch=128 >= 85% of the matmul limit: NOT met (80%")
               for g in goals)  # fmt: skip
    assert goals[-1] == "Goal layer norm <= 10% over none at batch 128: met (+5.0%)."


def test_machine_limits_are_measured():
    rows = machine.measure_matmul([(8, 8, 8)], repeats=1, torch_threads=1)
    assert rows[0]["library"] == "jax" and rows[0]["flops_per_s"] > 0
    donated = machine.measure_bandwidth(1024, repeats=1)
    fresh = machine.measure_bandwidth(1024, repeats=1, donate=False)
    assert donated["donated"] and not fresh["donated"] and donated["bytes_per_s"] > 0


# --------------------------------------------------------------------------------------------
# Figure 6 grid and the command line.


def test_fig6_without_data_is_skipped_with_a_note():
    results = fig6.run(TINY)
    assert "--data_dir" in results["rows"][0]["skipped"]


def test_fig6_limit_counts_training_steps_and_evaluations():
    lim = LIMITS
    step_s = 4 / pimnist.roofline("layer", 4, lim)["limit_examples_per_s"]
    eval_s = fig6.EVAL_EXAMPLES * fig6.forward_flops_per_example() / lim["matmul_flops_per_s"]
    assert fig6.limit_seconds("layer", 4, 100, 2, lim) == pytest.approx(100 * step_s + 2 * eval_s)


@pytest.mark.slow
def test_fig6_trains_the_grid_and_reports_wall_time(tiny_mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(pimnist, "limits", lambda config: LIMITS)
    monkeypatch.chdir(REPO)
    config = BenchConfig(data_dir=str(tiny_mnist_dir), fig6_epochs=1, fig6_workdir=str(tmp_path))
    overrides = (("model.hidden_sizes", "(16,16)"), ("eval_batch_size", "100"))
    results = fig6.run(config, overrides=overrides)
    rows = results["rows"]
    assert len(rows) == 9 and rows[-1]["name"] == "whole grid"
    for row in rows[:-1]:
        assert row["wall_s"] > row["compile_s"] > 0 and row["limit_s"] > 0
        assert row["x_limit"] == pytest.approx(row["wall_s"] / row["limit_s"])
        assert (tmp_path / f"model.norm={row['norm']},batch_size={row['batch']}").is_dir()
    assert rows[-1]["wall_s"] == pytest.approx(sum(r["wall_s"] for r in rows[:-1]))
    assert "Figure 6 grid" in results["goals"][0]


def test_cli_writes_json_and_markdown(tmp_path):
    out, markdown = tmp_path / "b.json", tmp_path / "b.md"
    result = subprocess.run(
        [sys.executable, "scripts/bench.py", "--sections=recurrent", "--batch=2", "--hidden=4",
         "--input=3", "--steps=2", "--repeats=1", "--warmup=0", "--unrolls=1",
         "--notorch_compile", f"--out={out}", f"--markdown={markdown}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(out.read_text())["sections"]["recurrent"]["rows"]
    assert "### recurrent" in markdown.read_text()
    bad = subprocess.run(
        [sys.executable, "scripts/bench.py", "--sections=nope", f"--out={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "error: flag --sections=nope: unknown name 'nope'" in bad.stderr


def test_jax_devices_are_recorded():
    assert machine.machine_info()["jax_devices"] == [str(d) for d in jax.devices()]


def test_every_registered_section_fulfils_the_section_contract():
    import dataclasses

    from lnexp.bench.section import CommonSettings
    from lnexp.bench.sections import SECTIONS

    names = {f.name for f in dataclasses.fields(BenchConfig)}
    for name, section in SECTIONS.items():
        assert issubclass(section.Settings, CommonSettings) and callable(section.run), name
        assert issubclass(BenchConfig, section.Settings), name
        fields = dataclasses.fields(section.Settings)
        assert {f.name for f in fields} <= names and all(f.metadata["help"] for f in fields)
        assert all(len(column) == 3 for column in section.COLUMNS), name


# --------------------------------------------------------------------------------------------
# Transformer.

# configs/transformer.py:tiny (context 16, width 32, 2 blocks, batch 8), two steps a call.
TRANSFORMER_TINY = BenchConfig(
    transformer_config=f"{REPO / 'configs' / 'transformer.py'}:tiny",
    transformer_steps=2,
    transformer_repeats=1,
    torch_compile=False,
    torch_threads=1,
)


def _tiny_transformer_config():
    return transformer.load_model_config(TRANSFORMER_TINY)


def _default_transformer_config():
    return transformer.load_config(REPO / "configs" / "transformer.py")


@pytest.mark.parametrize("without_torch", [False, True])
def test_transformer_section_rows_rates_and_goal(monkeypatch, without_torch):
    monkeypatch.setattr(transformer, "limits", lambda *args: LIMITS)
    if without_torch:
        monkeypatch.setattr(transformer, "import_torch", lambda: None)
    else:
        pytest.importorskip("torch")
    results = transformer.run(TRANSFORMER_TINY)
    rows = {row["name"]: row for row in results["rows"]}
    others = [transformer.norm_row(n) for n in ("rms", "none")]
    assert list(rows) == [*transformer.FRAMEWORKS, *others, *transformer.ATTENTION_ROWS]
    attention = rows[transformer.ATTENTION_LNEXP]
    assert attention["median_ms"] > 0 and attention["x_torch_compiled"] is None
    if without_torch:
        assert "pip install torch" in rows[transformer.ATTENTION_TORCH]["skipped"]
    else:
        assert rows[transformer.ATTENTION_TORCH]["median_ms"] > 0
    assert results["goals"][-1].startswith("Profile: attention (forward and backward")
    assert [rows[name]["norm"] for name in others] == ["rms", "none"]
    assert all(rows[name]["tokens_per_s"] > 0 for name in others)
    lnexp = rows[transformer.LNEXP]
    flops = lnexp["flops_per_token"]
    assert lnexp["compile_s"] > 0 and lnexp["optimizer"] == "adamw"
    timed = [lnexp] if without_torch else [lnexp, rows[transformer.TORCH_EAGER]]
    for row in timed:
        rate = row["tokens_per_s"]
        assert rate > 0 and math.isfinite(rate), row["name"]
        # 2 steps of 8 windows of 16 tokens per call; median_ms is per step.
        assert rate == pytest.approx(2 * 8 * 16 / (2 * row["median_ms"] / 1e3))
        assert row["fraction_of_matmul_limit"] == pytest.approx(rate * flops / 1e11)
        assert row["x_torch_compiled"] is None  # --notorch_compile
    compiled = rows[transformer.TORCH_COMPILED]
    if without_torch:
        for name in transformer.FRAMEWORKS[1:]:
            assert "pip install torch" in rows[name]["skipped"] and "median_ms" not in rows[name]
    else:
        assert "--notorch_compile" in compiled["skipped"]
        assert rows[transformer.TORCH_EAGER]["torch_threads"] == 1
    assert results["goals"][0].endswith(f"not measured ({compiled['skipped']}).")
    assert results["limits"] is LIMITS
    text = report.to_markdown(
        {"machine": machine.machine_info(), "sections": {"transformer": results}}
    )
    assert "### transformer" in text and "| lnexp |" in text and "x torch.compile" in text


def test_transformer_flops_per_token_of_the_default_model():
    config = _default_transformer_config()
    model = transformer.experiment.build_model(config, transformer.VOCAB, nnx.Rngs(0))
    # Per block qkv, out, fc, proj: 3d^2 + d^2 + 4d^2 + 4d^2 = 12 d^2; the untied head d V.
    n = 4 * 12 * 128**2 + 128 * 174
    assert transformer.matmul_params(model) == n == 808_704
    assert transformer.flops_per_token(model) == 6 * n + 12 * 4 * 64 * 128


def test_transformer_goal_wording():
    rows = [
        {"name": transformer.LNEXP, "x_torch_compiled": 1.25},
        {"name": transformer.TORCH_COMPILED, "x_torch_compiled": 1.0},
        {"name": transformer.norm_row("rms"), "x_torch_compiled": 1.05},
    ]
    assert transformer.goals(rows) == [
        "Goal lnexp >= 1.1x torch.compile's tokens/s: met (1.25x).",
        "Goal lnexp, norm=rms >= 1.1x torch.compile's tokens/s: NOT met (1.05x).",
    ]


def test_transformer_without_a_pytorch_twin_is_skipped_with_a_note():
    config = _tiny_transformer_config()
    assert transformer.twin_mismatch(config) is None
    config.model.norm = "rms"
    assert transformer.twin_mismatch(config) == "no PyTorch twin of config.model.norm='rms'"


def test_torch_transformer_has_the_lnexp_parameters_and_computes_the_same():
    torch = pytest.importorskip("torch")
    config = _default_transformer_config()  # The section's default model.
    model = transformer.experiment.build_model(config, transformer.VOCAB, nnx.Rngs(0))
    twin = transformer.torch_transformer(model)
    assert transformer.parameter_count(twin) == transformer.parameter_count(model) == 846_254
    config = _tiny_transformer_config()
    model = transformer.experiment.build_model(config, transformer.VOCAB, nnx.Rngs(0))
    # Non-trivial gains and biases, so that every parameter is copied and used.
    layer_norms = [n for b in model.blocks for n in (b.attn_norm, b.mlp_norm)] + [model.final_norm]
    for i, norm in enumerate(layer_norms):
        n = norm.scale.shape[0]
        norm.scale[...] = 1.0 + 0.1 * jnp.sin(jnp.arange(n, dtype=jnp.float32) + i)
        norm.bias[...] = 0.05 * jnp.cos(jnp.arange(n, dtype=jnp.float32) + i)
    ids = np.random.default_rng(0).integers(0, transformer.VOCAB, (3, 16))
    expected = np.asarray(model(jnp.asarray(ids)))
    with torch.no_grad():
        actual = transformer.torch_transformer(model).eval()(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_torch_transformer_trains_as_the_lnexp_loop_does():
    """The PyTorch rows do the lnexp row's work: the same windows, loss, clip, AdamW (decay on
    the matrices) and learning-rate schedule give the same losses, step by step."""
    torch = pytest.importorskip("torch")
    from lnexp.training import Trainer, make_mesh, make_optimizer
    from lnexp.training.batches import Chunk

    torch.set_num_threads(1)
    config, steps = _tiny_transformer_config(), 6  # Through the tiny config's 5 warmup steps.
    text = transformer.synthetic_text(config, steps, 0)
    task = transformer.lnexp_task(config, text)
    indices = transformer.batch_indices(task, config.batch_size, steps, 0)
    twin = transformer.torch_transformer(task.model).train()
    optimizer, scheduler = transformer.torch_optimizer(twin.parameters(), config, fused=False)
    ids = torch.from_numpy(text[task.train_data["start"][indices][..., None] + np.arange(17)])
    losses = []
    for batch in ids.long():
        logits = twin(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 174), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(twin.parameters(), config.optimizer.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    trainer = Trainer(task, make_optimizer(config), make_mesh(), 0)
    _, data, _ = trainer.put_data(4)
    _, metrics = trainer.train_chunk(trainer.initial_state, data, Chunk(indices))
    np.testing.assert_allclose(losses, np.asarray(metrics["loss"]), rtol=1e-5)
    assert losses[-1] != losses[0]  # The parameters moved.


@pytest.mark.slow
def test_transformer_torch_compiled_row():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    config = _tiny_transformer_config()
    text = transformer.synthetic_text(config, 2, 0)
    task = transformer.lnexp_task(config, text)
    starts = task.train_data["start"][transformer.batch_indices(task, 8, 2, 0)]
    method = transformer.TORCH_COMPILED
    row = transformer.prepare_torch(method, config, task.model, text, starts, 2 * 8 * 16)
    if isinstance(row, Prepared):
        row = time_interleaved([row], 1)[0]
    # Either timed, or the compile error reported in the row (no C++ compiler, say).
    if row.get("error"):
        assert row["error"].startswith("torch.compile failed:")
    else:
        assert row["compile_s"] > 0 and row["tokens_per_s"] > 0


# --------------------------------------------------------------------------------------------
# DRAW.


def test_draw_section_rows_and_epoch_cost(monkeypatch):
    # 2 glimpses stand for the CPU protocol (20 epochs); 1 is no config's.
    monkeypatch.setitem(draw.PROTOCOLS, 2, ("CPU protocol", 20))
    monkeypatch.delitem(draw.PROTOCOLS, 16)
    config = BenchConfig(draw_glimpses=(1, 2), draw_steps=1, draw_repeats=1)
    results = draw.run(config)
    rows = {(r["glimpses"], r["norm"]): r for r in results["rows"]}
    assert list(rows) == [(1, "none"), (1, "cell"), (2, "none"), (2, "cell")]
    for (glimpses, _), row in rows.items():
        rate = row["images_per_s"]
        assert rate == pytest.approx(128 / (row["median_ms"] / 1e3))
        assert row["epoch_min"] == pytest.approx(50_000 / rate / 60)
        baseline = rows[glimpses, "none"]
        assert row["x_baseline"] == pytest.approx(row["median_ms"] / baseline["median_ms"])
        assert ("run_h" in row) == (glimpses == 2)
    assert rows[2, "cell"]["run_h"] == pytest.approx(20 * rows[2, "cell"]["epoch_min"] / 60)
    text = report.to_markdown({"machine": machine.machine_info(), "sections": {"draw": results}})
    assert "### draw" in text and "| min/epoch | hours/run |" in text
    with pytest.raises(UserError, match="draw_glimpses"):
        BenchConfig(draw_glimpses=(0,))


def test_norms_section_rows_ratios_and_goals():
    settings = BenchConfig(
        norms_shapes=("4x8x16", "8x32"), residual_depth=2, norms_repeats=2, norms_warmup=0
    )
    result = norms.run(settings)
    rows = result["rows"]
    groups = ["4x8x16", "8x32", "4x8x16, 2 residual blocks"]
    assert [r["group"] for r in rows] == [g for g in groups for _ in norms.NORMS]
    assert all(r["median_ms"] > 0 for r in rows)
    for row in rows:
        if row["norm"] == norms.RMS:
            assert row["x_rms"] == 1.0
    assert len(result["goals"]) == 3 and all(
        g.startswith("Goal lnexp LayerNorm") for g in result["goals"]
    )
    with pytest.raises(UserError, match="32x64x128"):
        BenchConfig(norms_shapes=("32by64",))
