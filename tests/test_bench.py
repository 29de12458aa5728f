"""Smoke tests of scripts/bench.py at tiny sizes: rows, JSON, markdown, the PyTorch LN-GRU."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lnexp import cells
from lnexp.errors import UserError

REPO = Path(__file__).resolve().parents[1]
# Importing torch 2.13 warns about its own use of torch.jit.script_method.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script_method:DeprecationWarning")


def _load_script():
    # Loaded once per session: the script defines absl flags, which cannot be defined twice.
    name = "lnexp_scripts_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / "bench.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bench = _load_script()

# One unroll keeps the JAX compiles few; torch.compile is tested on its own (slow).
TINY = bench.BenchConfig(
    batch=2,
    hidden=8,
    input=4,
    steps=3,
    repeats=1,
    warmup=1,
    unrolls=(1,),
    torch_compile=False,
    torch_threads=1,
)
JAX_ROWS = [
    "lnexp LN-GRU (inputs precomputed, unroll 1)",
    "lnexp LN-GRU (per-step inputs, unroll 1)",
    "lnexp LN-LSTM (inputs precomputed, unroll 1)",
    "lnexp LN-LSTM (per-step inputs, unroll 1)",
    "lnexp GRU norm=none (inputs precomputed, unroll 1)",
    "lnexp GRU norm=none (per-step inputs, unroll 1)",
    bench.FLAX_GRU,
]
TORCH_ROWS = ["torch nn.GRU", "torch LN-GRU (eager)", bench.TORCH_COMPILED_LN_GRU]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The recurrent section run once at tiny sizes: (results, JSON path, markdown path)."""
    directory = tmp_path_factory.mktemp("bench")
    out, markdown = directory / "out" / "bench.json", directory / "bench.md"
    results = bench.run_benchmark(["recurrent"], TINY, out=out, markdown=markdown)
    return results, out, markdown


def _rows(results) -> dict[str, dict]:
    return {row["name"]: row for row in results["sections"]["recurrent"]["rows"]}


def test_jax_rows_are_timed(run):
    results, _, _ = run
    rows = _rows(results)
    assert list(rows) == JAX_ROWS + TORCH_ROWS
    flax_ms = rows[bench.FLAX_GRU]["median_ms"]
    for name in JAX_ROWS:
        row = rows[name]
        assert row["tokens_per_s"] > 0 and math.isfinite(row["tokens_per_s"]), name
        assert row["compile_s"] > 0 and row["median_ms"] > 0 and row["repeats"] == 1, name
        assert row["tokens_per_s"] == pytest.approx(2 * 3 / (row["median_ms"] / 1e3))
        assert row["x_flax_gru"] == pytest.approx(row["median_ms"] / flax_ms)
    assert rows[bench.FLAX_GRU]["x_flax_gru"] == 1.0
    assert rows["lnexp LN-GRU (per-step inputs, unroll 1)"]["precompute_inputs"] is False


def test_json_and_markdown_are_written(run):
    results, out, markdown = run
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(results))
    assert [row["name"] for row in written["sections"]["recurrent"]["rows"]] == list(_rows(results))
    machine = written["machine"]
    assert machine["cpu"] and machine["cpu_count"] >= 1 and machine["jax"]
    assert "torch" in machine and "load_average" in machine
    assert written["config"]["hidden"] == 8 and written["config"]["steps"] == 3
    text = markdown.read_text()
    assert text == bench.to_markdown(results)
    assert "### recurrent" in text and "| row | compile s | ms/step | tokens/s |" in text
    for name in JAX_ROWS + TORCH_ROWS:
        assert f"| {name} |" in text


def test_torch_rows_without_torch_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(bench, "_torch", lambda: None)
    rows = bench._torch_rows(TINY, np.zeros((2, 3, 4), np.float32))
    assert [row["name"] for row in rows] == TORCH_ROWS
    for row in rows:
        assert "pip install torch" in row["skipped"] and "median_ms" not in row
    rows = bench.add_ratios(rows, bench.RECURRENT.references)
    assert all(row["x_torch_compile_ln_gru"] is None for row in rows)


def test_unknown_section_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="recurrent"):
        bench.run_benchmark(["recurent"], TINY, out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_torch_rows(run):
    pytest.importorskip("torch")
    results, _, _ = run
    rows = _rows(results)
    for name in TORCH_ROWS[:2]:
        assert rows[name]["tokens_per_s"] > 0 and rows[name]["compile_s"] is None, name
        assert rows[name]["torch_threads"] == 1
    assert "--notorch_compile" in rows[bench.TORCH_COMPILED_LN_GRU]["skipped"]
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
        actual = bench.torch_ln_gru(cell)(torch.from_numpy(xs)).numpy()
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compiled_ln_gru_row():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    cell = cells.GRUCell(4, 8, norm="layer", rngs=nnx.Rngs(0))
    xs = np.zeros((2, 3, 4), np.float32)
    row = bench.prepare_torch("compiled", bench.torch_ln_gru(cell), xs, TINY, compile=True)
    if isinstance(row, bench.Prepared):
        row = bench.time_interleaved([row], TINY)[0]
    # Either timed, or the compile error reported in the row (no C++ compiler, say).
    if row.get("error"):
        assert row["error"].startswith("torch.compile failed:")
    else:
        assert row["compile_s"] > 0 and row["tokens_per_s"] > 0
        assert row["compile_mode"] == "default"


def test_rows_are_timed_round_robin():
    calls = []
    prepared = [bench.Prepared(n, "x", lambda n=n: calls.append(n), None) for n in "abc"]
    rows = bench.time_interleaved(prepared, TINY)
    assert calls == list("abc") * TINY.repeats
    assert [r["name"] for r in rows] == list("abc") and all(
        r["repeats"] == TINY.repeats for r in rows
    )
