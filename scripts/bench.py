"""Speed benchmarks: named sections, one JSON file, one markdown table per section.

The ``recurrent`` section times one training step (forward and backward, gradients with
respect to every parameter and the inputs) of a recurrent layer over a ``(batch, steps, input)``
sequence: lnexp's LN-GRU and LN-LSTM through :func:`lnexp.cells.scan` (inputs projected before
the scan or step by step, scan unrolled or not), lnexp's plain GRU, Flax's
``nnx.RNN(nnx.GRUCell)``, PyTorch's ``nn.GRU`` and a PyTorch LN-GRU written here (eager and
``torch.compile``\\ d). PyTorch is an optional extra, not in ``requirements.txt``
(``pip install torch==2.13.0``, the CPU build); without it its rows are marked skipped.

Run the paper-sized recurrent benchmark (hidden 512, input 256, 30 steps, batch 64)::

    python scripts/bench.py --sections recurrent --out results/bench.json \\
        --markdown results/bench.md

Methodology. JAX: the whole step is one ``jax.jit``; tracing and compiling are timed apart
(``compile_s``), then ``--warmup`` calls, then ``--repeats`` timed calls each ended by
``block_until_ready``. PyTorch: ``torch.set_num_threads(os.cpu_count())`` (``--torch_threads``
to change it); the step is
``loss = f(x); loss.backward()``; for ``torch.compile`` (default mode) the first step, which
compiles, is ``compile_s``; then ``--warmup`` and ``--repeats`` steps as for JAX. The loss is
the mean square of all outputs. Each row reports the median time per step, ``tokens/s =
batch * steps / median``, and the median relative to the section's reference rows.

Measure on an otherwise idle machine: the JSON records the load average at the start, and the
output carries a warning when it was 0.5 or more. On a busy machine PyTorch's threads wait for
each other at every op (a tiny ``nn.GRU`` step measured 85 ms with 2 threads on 2 busy cores,
0.5 ms with 1 thread), so its rows come out far too slow.

Sections are named entries of :data:`SECTIONS`; each returns rows (dicts, one per timed
configuration) and names the rows that its ratio columns are relative to.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from lnexp import cells
from lnexp.errors import UserError

_SECTIONS = flags.DEFINE_list("sections", ["recurrent"], "Sections to run, in order.")
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed iterations per row (the median is kept).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed iterations per row after compiling.")
_BATCH = flags.DEFINE_integer("batch", 64, "Batch size.")
_HIDDEN = flags.DEFINE_integer("hidden", 512, "Hidden units of the recurrent layers.")
_INPUT = flags.DEFINE_integer("input", 256, "Input features per time step.")
_STEPS = flags.DEFINE_integer("steps", 30, "Time steps per sequence.")
_UNROLLS = flags.DEFINE_list("unrolls", ["1", "10"], "Scan unroll factors of the lnexp rows.")
_TORCH_COMPILE = flags.DEFINE_bool(
    "torch_compile", True, "Time the torch.compile'd rows (compiling takes tens of seconds)."
)
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch.set_num_threads for the PyTorch rows; 0: os.cpu_count()."
)
_OUT = flags.DEFINE_string("out", "results/bench.json", "Where the JSON results go.")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Also write the markdown tables here.")

Array = jax.Array
Row = dict[str, Any]

FLAX_GRU = "flax nnx.RNN(nnx.GRUCell)"
TORCH_COMPILED_LN_GRU = "torch LN-GRU (torch.compile)"
TORCH_INSTALL = "pip install torch==2.13.0"


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Sizes and repetitions shared by all sections."""

    batch: int = 64
    hidden: int = 512
    input: int = 256
    steps: int = 30
    repeats: int = 20
    warmup: int = 3
    unrolls: tuple[int, ...] = (1, 10)
    torch_compile: bool = True
    torch_threads: int = 0  # 0: os.cpu_count().
    seed: int = 0

    def __post_init__(self):
        for name in ("batch", "hidden", "input", "steps", "repeats"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}.")
        if self.warmup < 0:
            raise UserError(f"--warmup must be at least 0, got {self.warmup}.")
        if self.torch_threads < 0:
            raise UserError(f"--torch_threads must be at least 0, got {self.torch_threads}.")
        if not self.unrolls or min(self.unrolls) < 1:
            raise UserError(f"--unrolls must be positive integers, got {list(self.unrolls)}.")

    @property
    def tokens(self) -> int:
        """Tokens per step: one per sequence and time step."""
        return self.batch * self.steps


@dataclasses.dataclass(frozen=True)
class Section:
    """A benchmark section: a function giving rows, and the rows the ratios are relative to.

    Attributes:
        run: Times every row of the section.
        references: Ratio column name -> the name of the row whose median time is 1.0 there.
        goals: Lines summarizing the rows (e.g. whether a speed goal is met).
    """

    run: Callable[[BenchConfig], list[Row]]
    references: dict[str, str]
    goals: Callable[[list[Row]], list[str]] = lambda rows: []


# --------------------------------------------------------------------------------------------
# Timing.


def _timing_row(
    name: str, framework: str, config: BenchConfig, times: list[float], compile_s: float | None
) -> Row:
    median = statistics.median(times)
    return {
        "name": name,
        "framework": framework,
        "compile_s": compile_s,
        "median_ms": 1e3 * median,
        "min_ms": 1e3 * min(times),
        "tokens_per_s": config.tokens / median,
        "repeats": len(times),
    }


def _note_row(name: str, framework: str, *, skipped: str | None = None, error: str | None = None):
    return {"name": name, "framework": framework, "skipped": skipped, "error": error}


@dataclasses.dataclass
class Prepared:
    """A compiled, warmed-up row waiting to be timed: ``step()`` runs one synchronous step."""

    name: str
    framework: str
    step: Callable[[], Any]
    compile_s: float | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def time_interleaved(prepared: list[Prepared], config: BenchConfig) -> list[Row]:
    """Times every row ``config.repeats`` times, round-robin: one step of each row per round,
    so that drift in the machine's speed (other tenants, frequency changes) falls on every row
    alike instead of on whichever rows ran during it."""
    times: list[list[float]] = [[] for _ in prepared]
    for _ in range(config.repeats):
        for p, row_times in zip(prepared, times, strict=True):
            start = time.perf_counter()
            p.step()
            row_times.append(time.perf_counter() - start)
    return [
        _timing_row(p.name, p.framework, config, t, p.compile_s) | p.extra
        for p, t in zip(prepared, times, strict=True)
    ]


def prepare_jax(
    name: str, loss_fn: Callable[..., Array], args: tuple[Any, ...], config: BenchConfig
) -> Prepared:
    """Compiles and warms up ``jax.jit(jax.value_and_grad(loss_fn, argnums=all))``."""
    step = jax.jit(jax.value_and_grad(loss_fn, argnums=tuple(range(len(args)))))
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start
    for _ in range(config.warmup):
        jax.block_until_ready(compiled(*args))
    return Prepared(name, "jax", lambda: jax.block_until_ready(compiled(*args)), compile_s)


def _mean_square(ys: Array) -> Array:
    return jnp.mean(jnp.square(ys))


def _nnx_loss(model: nnx.Module, apply: Callable[[nnx.Module, Array], Array]):
    """A pure ``loss(params, xs)`` of ``model``'s parameters; its other state is held fixed."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params: nnx.State, xs: Array) -> Array:
        return _mean_square(apply(nnx.merge(graphdef, params, rest), xs))

    return loss, params


# --------------------------------------------------------------------------------------------
# PyTorch (optional).


def _torch():
    """The ``torch`` module, or ``None`` when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@functools.cache
def _torch_ln_gru_class():
    import torch

    class TorchLNGRU(torch.nn.Module):
        """lnexp's ``GRUCell(norm='layer')`` over a sequence, in PyTorch (eqs. 26-28)::

            [z; r] = LN(W_h h) + LN(W_x x)                 # each LN over 2H
            h~     = tanh(LN(W x) + s(r) * LN(U h))
            h      = (1 - s(z)) * h + s(z) * h~

        The input projections (and their layer norms) of all steps are computed before the
        Python loop over time. Kernels are ``(in, out)`` as in lnexp; ``load_lnexp`` copies an
        lnexp cell's parameters.
        """

        def __init__(self, in_features: int, hidden: int, epsilon: float = 1e-5):
            super().__init__()
            H = hidden
            self.hidden = hidden
            self.w_x = torch.nn.Parameter(torch.empty(in_features, 3 * H))
            self.w_h = torch.nn.Parameter(torch.empty(H, 3 * H))
            self.norm_i = torch.nn.LayerNorm(2 * H, eps=epsilon)
            self.norm_h = torch.nn.LayerNorm(2 * H, eps=epsilon)
            self.norm_i_candidate = torch.nn.LayerNorm(H, eps=epsilon)
            self.norm_h_candidate = torch.nn.LayerNorm(H, eps=epsilon)

        @torch.no_grad()
        def load_lnexp(self, cell: cells.GRUCell) -> TorchLNGRU:
            def copy(dst, src):
                dst.copy_(torch.from_numpy(np.array(src[...], np.float32)))

            copy(self.w_x, cell.dense_i.kernel)
            copy(self.w_h, cell.dense_h.kernel)
            for name in ("norm_i", "norm_h", "norm_i_candidate", "norm_h_candidate"):
                copy(getattr(self, name).weight, getattr(cell, name).scale)
                copy(getattr(self, name).bias, getattr(cell, name).bias)
            return self

        def forward(self, xs):  # (batch, time, in) -> (batch, time, hidden)
            H = self.hidden
            a = xs @ self.w_x
            x_gates = self.norm_i(a[..., : 2 * H])
            x_candidate = self.norm_i_candidate(a[..., 2 * H :])
            h = xs.new_zeros(xs.shape[0], H)
            outputs = []
            for t in range(xs.shape[1]):
                b = h @ self.w_h
                gates = torch.sigmoid(self.norm_h(b[:, : 2 * H]) + x_gates[:, t])
                z, r = gates[:, :H], gates[:, H:]
                candidate = torch.tanh(x_candidate[:, t] + r * self.norm_h_candidate(b[:, 2 * H :]))
                h = (1.0 - z) * h + z * candidate
                outputs.append(h)
            return torch.stack(outputs, dim=1)

    return TorchLNGRU


def torch_ln_gru(cell: cells.GRUCell):
    """A PyTorch LN-GRU with the parameters of lnexp's ``cell`` (``norm='layer'``)."""
    TorchLNGRU = _torch_ln_gru_class()
    epsilon = cell.norm_h.epsilon
    return TorchLNGRU(cell.in_features, cell.hidden_features, epsilon).load_lnexp(cell)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def prepare_torch(
    name: str, module, xs_np: np.ndarray, config: BenchConfig, *, compile: bool
) -> Prepared | Row:
    """Warms up ``loss = mean(module(x) ** 2); loss.backward()`` (grads of parameters and
    ``x``), compiled first if asked; a note row when ``torch.compile`` fails."""
    import torch

    x = torch.from_numpy(np.array(xs_np)).requires_grad_(True)

    def forward_loss(x):
        ys = module(x)
        ys = ys[0] if isinstance(ys, tuple) else ys  # nn.GRU returns (outputs, h_n).
        return ys.square().mean()

    loss_fn = forward_loss
    if compile:
        torch._dynamo.reset()
        loss_fn = torch.compile(forward_loss)

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        loss_fn(x).backward()

    compile_s = None
    if compile:
        start = time.perf_counter()
        try:
            step()
        except Exception as e:  # Inductor needs a C++ compiler; report, don't crash.
            return _note_row(name, "torch", error=f"torch.compile failed: {_first_line(e)}")
        compile_s = time.perf_counter() - start
    for _ in range(config.warmup):
        step()
    extra = {"compile_mode": "default"} if compile else {}
    return Prepared(name, "torch", step, compile_s, extra)


# --------------------------------------------------------------------------------------------
# The recurrent section.


def _lnexp_rows(config: BenchConfig, xs: Array) -> list[Prepared]:
    rows = []
    unrolls = sorted({min(u, config.steps) for u in config.unrolls})
    variants = [
        ("LN-GRU", lambda rngs: cells.GRUCell(config.input, config.hidden, rngs=rngs), unrolls),
        ("LN-LSTM", lambda rngs: cells.LSTMCell(config.input, config.hidden, rngs=rngs), unrolls),
        (
            "GRU norm=none",
            lambda rngs: cells.GRUCell(config.input, config.hidden, norm="none", rngs=rngs),
            unrolls[:1],
        ),
    ]
    for label, make, cell_unrolls in variants:
        for unroll in cell_unrolls:
            for precompute in (True, False):
                mode = "inputs precomputed" if precompute else "per-step inputs"
                name = f"lnexp {label} ({mode}, unroll {unroll})"

                def apply(cell, xs, unroll=unroll, precompute=precompute):
                    return cells.scan(cell, xs, unroll=unroll, precompute_inputs=precompute)[1]

                loss, params = _nnx_loss(make(nnx.Rngs(config.seed)), apply)
                row = prepare_jax(name, loss, (params, xs), config)
                row.extra = {"unroll": unroll, "precompute_inputs": precompute}
                rows.append(row)
    return rows


def _flax_gru_row(config: BenchConfig, xs: Array) -> Prepared:
    rnn = nnx.RNN(nnx.GRUCell(config.input, config.hidden, rngs=nnx.Rngs(config.seed)))
    zeros = jnp.zeros((config.batch, config.hidden), jnp.float32)  # As lnexp's scan starts.
    loss, params = _nnx_loss(rnn, lambda model, xs: model(xs, initial_carry=zeros))
    row = prepare_jax(FLAX_GRU, loss, (params, xs), config)
    row.framework = "flax"
    return row


def _torch_rows(config: BenchConfig, xs_np: np.ndarray) -> list[Prepared | Row]:
    names = ["torch nn.GRU", "torch LN-GRU (eager)", TORCH_COMPILED_LN_GRU]
    torch = _torch()
    if torch is None:
        skipped = f"PyTorch is not installed ({TORCH_INSTALL})"
        return [_note_row(name, "torch", skipped=skipped) for name in names]
    torch.set_num_threads(config.torch_threads or os.cpu_count() or 1)
    torch.manual_seed(config.seed)
    gru = torch.nn.GRU(config.input, config.hidden, batch_first=True)
    ln_gru_cell = cells.GRUCell(config.input, config.hidden, rngs=nnx.Rngs(config.seed))
    rows = [
        prepare_torch(names[0], gru, xs_np, config, compile=False),
        prepare_torch(names[1], torch_ln_gru(ln_gru_cell), xs_np, config, compile=False),
    ]
    if config.torch_compile:
        ln_gru = torch_ln_gru(ln_gru_cell)
        rows.append(prepare_torch(names[2], ln_gru, xs_np, config, compile=True))
    else:
        rows.append(_note_row(names[2], "torch", skipped="not run (--notorch_compile)"))
    for row in rows:
        (row.extra if isinstance(row, Prepared) else row)["torch_threads"] = torch.get_num_threads()
    return rows


def recurrent_section(config: BenchConfig) -> list[Row]:
    """LN-GRU / LN-LSTM forward+backward against Flax's and PyTorch's GRUs."""
    rng = np.random.default_rng(config.seed)
    xs_np = rng.standard_normal((config.batch, config.steps, config.input), np.float32)
    xs = jnp.asarray(xs_np)
    rows = _lnexp_rows(config, xs) + [_flax_gru_row(config, xs)] + _torch_rows(config, xs_np)
    timed = iter(time_interleaved([r for r in rows if isinstance(r, Prepared)], config))
    return [next(timed) if isinstance(r, Prepared) else r for r in rows]


def recurrent_goals(rows: list[Row]) -> list[str]:
    """Whether the fastest lnexp LN-GRU meets the issue's two speed goals."""
    ln_grus = [r for r in rows if r["name"].startswith("lnexp LN-GRU") and "median_ms" in r]
    if not ln_grus:
        return []
    best = min(ln_grus, key=lambda r: r["median_ms"])
    lines = []
    for column, limit in (("x_torch_compile_ln_gru", 1.0), ("x_flax_gru", 1.3)):
        reference = RECURRENT.references[column]
        ratio = best.get(column)
        if ratio is None:
            lines.append(f"Goal {best['name']} <= {limit}x {reference}: not measured.")
        else:
            verdict = "met" if ratio <= limit else "NOT met"
            lines.append(f"Goal {best['name']} <= {limit}x {reference}: {verdict} ({ratio:.2f}x).")
    return lines


RECURRENT = Section(
    run=recurrent_section,
    references={"x_flax_gru": FLAX_GRU, "x_torch_compile_ln_gru": TORCH_COMPILED_LN_GRU},
    goals=recurrent_goals,
)

SECTIONS: dict[str, Section] = {"recurrent": RECURRENT}


# --------------------------------------------------------------------------------------------
# Running, JSON, markdown.


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including the load when the run started."""
    torch = _torch()
    return {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "torch": torch.__version__ if torch is not None else None,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
        "jax_devices": [str(d) for d in jax.devices()],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def busy_warnings(machine: dict[str, Any]) -> list[str]:
    """A warning when other processes kept the CPUs busy as the run started."""
    load = machine["load_average"]
    if load is None or load[0] < 0.5:
        return []
    return [
        f"The 1-minute load average was {load[0]:.2f} on {machine['cpu_count']} cores when the "
        "run started: other processes were using the CPUs, so these timings are not "
        "representative (multi-threaded PyTorch suffers most: its threads wait for each other)."
    ]


def add_ratios(rows: list[Row], references: dict[str, str]) -> list[Row]:
    """Adds each reference column: the row's median time over the reference row's."""
    by_name = {row["name"]: row for row in rows}
    for column, reference in references.items():
        ref_ms = by_name.get(reference, {}).get("median_ms")
        for row in rows:
            ms = row.get("median_ms")
            row[column] = ms / ref_ms if ms is not None and ref_ms is not None else None
    return rows


def run_benchmark(
    section_names: list[str],
    config: BenchConfig,
    *,
    out: str | Path | None = None,
    markdown: str | Path | None = None,
) -> dict[str, Any]:
    """Runs the sections; returns (and writes to ``out``) the results as JSON-ready data.

    Raises:
        UserError: For an unknown section name.
    """
    unknown = [name for name in section_names if name not in SECTIONS]
    if unknown or not section_names:
        raise UserError(
            f"Unknown sections {unknown}: --sections takes a comma-separated list of "
            f"{sorted(SECTIONS)}."
        )
    machine = machine_info()
    results: dict[str, Any] = {
        "machine": machine,
        "config": dataclasses.asdict(config),
        "warnings": busy_warnings(machine),
        "sections": {},
    }
    for name in section_names:
        section = SECTIONS[name]
        rows = add_ratios(section.run(config), section.references)
        results["sections"][name] = {
            "rows": rows,
            "references": section.references,
            "goals": section.goals(rows),
        }
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
    if markdown is not None:
        markdown = Path(markdown)
        markdown.parent.mkdir(parents=True, exist_ok=True)
        markdown.write_text(to_markdown(results))
    return results


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{suffix}"


def to_markdown(results: dict[str, Any]) -> str:
    """One table per section, preceded by the machine and sizes, followed by the goals."""
    m, c = results["machine"], results["config"]
    lines = [
        f"Machine: {m['cpu']}, {m['cpu_count']} cores (load average at start "
        f"{_fmt(m['load_average'][0] if m['load_average'] else None, '.2f')}); "
        f"jax {m['jax']}, flax {m['flax']}, torch {m['torch'] or 'not installed'}.",
        "",
        f"Sizes: batch {c['batch']}, {c['steps']} steps, input {c['input']}, hidden "
        f"{c['hidden']}; forward+backward, float32; median of {c['repeats']} steps after "
        f"{c['warmup']} warm-up steps, the rows timed round-robin (one step of each per round).",
    ]
    for warning in results.get("warnings", []):
        lines += ["", f"**Warning:** {warning}"]
    for name, section in results["sections"].items():
        ratio_columns = list(section["references"])
        header = ["row", "compile s", "ms/step", "tokens/s"]
        header += [f"x {section['references'][col]}" for col in ratio_columns]
        lines += ["", f"### {name}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for row in section["rows"]:
            note = row.get("skipped") or row.get("error")
            if note:
                cells_ = [row["name"], "—", "—", "—", *(["—"] * len(ratio_columns))]
                cells_[-1] = f"— ({note})"
            else:
                cells_ = [
                    row["name"],
                    _fmt(row["compile_s"], ".2f"),
                    _fmt(row["median_ms"], ".2f"),
                    _fmt(row["tokens_per_s"], ",.0f"),
                    *(_fmt(row[col], ".2f", "x") for col in ratio_columns),
                ]
            lines.append("| " + " | ".join(cells_) + " |")
        if section["goals"]:
            lines += [""] + [f"- {goal}" for goal in section["goals"]]
    return "\n".join(lines) + "\n"


def main(argv):
    del argv
    try:
        try:
            unrolls = tuple(int(u) for u in _UNROLLS.value)
        except ValueError:
            raise UserError(f"--unrolls takes integers, got {_UNROLLS.value}.") from None
        config = BenchConfig(
            batch=_BATCH.value,
            hidden=_HIDDEN.value,
            input=_INPUT.value,
            steps=_STEPS.value,
            repeats=_REPEATS.value,
            warmup=_WARMUP.value,
            unrolls=unrolls,
            torch_compile=_TORCH_COMPILE.value,
            torch_threads=_TORCH_THREADS.value,
        )
        results = run_benchmark(_SECTIONS.value, config, out=_OUT.value, markdown=_MARKDOWN.value)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(to_markdown(results))
    written = [p for p in (_OUT.value, _MARKDOWN.value) if p]
    if written:
        print("Wrote " + ", ".join(written))


if __name__ == "__main__":
    app.run(main)
