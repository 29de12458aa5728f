"""The recurrent section: one training step of an LN-GRU / LN-LSTM layer against Flax and PyTorch.

Times one training step (forward and backward, gradients with respect to every parameter and the
inputs) of a recurrent layer over a ``(batch, steps, input)`` sequence: lnexp's LN-GRU and LN-LSTM
through :func:`lnexp.cells.scan` (inputs projected before the scan or step by step, scan unrolled
or not), lnexp's plain GRU, Flax's ``nnx.RNN(nnx.GRUCell)``, PyTorch's ``nn.GRU`` and a PyTorch
LN-GRU written here (eager and ``torch.compile``\\ d). The loss is the mean square of all outputs.
JAX: the whole step is one ``jax.jit``, compiled ahead of time (``compile_s``). PyTorch: the step
is ``loss = f(x); loss.backward()``; for ``torch.compile`` (default mode) the first step, which
compiles, is ``compile_s``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lnexp import cells
from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import (
    TORCH_INSTALL,
    Prepared,
    Row,
    first_line,
    import_torch,
    note_row,
    prepare_jax,
    time_rows,
)

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """The recurrent section's sequence batch, repetitions and unroll factors."""

    batch: int = setting(64, "recurrent: batch size.")
    hidden: int = setting(512, "recurrent: hidden units.")
    input: int = setting(256, "recurrent: input features per time step.")
    steps: int = setting(30, "recurrent: time steps per sequence.")
    repeats: int = setting(20, "recurrent: timed steps per row (median kept).")
    warmup: int = setting(3, "recurrent: untimed steps per row after compiling.", low=0)
    unrolls: tuple[int, ...] = setting((1, 10), "recurrent: scan unroll factors.")

    @property
    def tokens(self) -> int:
        """Tokens per step: one per sequence and time step."""
        return self.batch * self.steps


FLAX_GRU = "flax nnx.RNN(nnx.GRUCell)"
TORCH_COMPILED_LN_GRU = "torch LN-GRU (torch.compile)"
REFERENCES = {"x_flax_gru": FLAX_GRU, "x_torch_compile_ln_gru": TORCH_COMPILED_LN_GRU}


def _mean_square(ys: Array) -> Array:
    return jnp.mean(jnp.square(ys))


def _nnx_loss(model: nnx.Module, apply: Callable[[nnx.Module, Array], Array]):
    """A pure ``loss(params, xs)`` of ``model``'s parameters; its other state is held fixed."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params: nnx.State, xs: Array) -> Array:
        return _mean_square(apply(nnx.merge(graphdef, params, rest), xs))

    return loss, params


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


def prepare_torch(
    name: str, module, xs_np: np.ndarray, config: Settings, *, compile: bool
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
            return note_row(name, "torch", error=f"torch.compile failed: {first_line(e)}")
        compile_s = time.perf_counter() - start
    for _ in range(config.warmup):
        step()
    extra = {"compile_mode": "default"} if compile else {}
    return Prepared(name, "torch", step, compile_s, items=config.tokens, extra=extra)


def _lnexp_rows(config: Settings, xs: Array) -> list[Prepared]:
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
                row = prepare_jax(name, loss, (params, xs), config.warmup, items=config.tokens)
                row.extra = {"unroll": unroll, "precompute_inputs": precompute}
                rows.append(row)
    return rows


def _flax_gru_row(config: Settings, xs: Array) -> Prepared:
    rnn = nnx.RNN(nnx.GRUCell(config.input, config.hidden, rngs=nnx.Rngs(config.seed)))
    zeros = jnp.zeros((config.batch, config.hidden), jnp.float32)  # As lnexp's scan starts.
    loss, params = _nnx_loss(rnn, lambda model, xs: model(xs, initial_carry=zeros))
    row = prepare_jax(FLAX_GRU, loss, (params, xs), config.warmup, items=config.tokens)
    row.framework = "flax"
    return row


def _torch_rows(config: Settings, xs_np: np.ndarray) -> list[Prepared | Row]:
    names = ["torch nn.GRU", "torch LN-GRU (eager)", TORCH_COMPILED_LN_GRU]
    torch = import_torch()
    if torch is None:
        skipped = f"PyTorch is not installed ({TORCH_INSTALL})"
        return [note_row(name, "torch", skipped=skipped) for name in names]
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
        rows.append(note_row(names[2], "torch", skipped="not run (--notorch_compile)"))
    for row in rows:
        (row.extra if isinstance(row, Prepared) else row)["torch_threads"] = torch.get_num_threads()
    return rows


def add_ratios(rows: list[Row], references: dict[str, str]) -> list[Row]:
    """Adds each reference column: the row's median time over the reference row's."""
    by_name = {row["name"]: row for row in rows}
    for column, reference in references.items():
        ref_ms = by_name.get(reference, {}).get("median_ms")
        for row in rows:
            ms = row.get("median_ms")
            row[column] = ms / ref_ms if ms is not None and ref_ms is not None else None
    return rows


def run(config: Settings) -> dict:
    """LN-GRU / LN-LSTM forward+backward against Flax's and PyTorch's GRUs."""
    rng = np.random.default_rng(config.seed)
    xs_np = rng.standard_normal((config.batch, config.steps, config.input), np.float32)
    xs = jnp.asarray(xs_np)
    rows = _lnexp_rows(config, xs) + [_flax_gru_row(config, xs)] + _torch_rows(config, xs_np)
    rows = add_ratios(time_rows(rows, config.repeats), REFERENCES)
    return {
        "rows": rows,
        "references": REFERENCES,
        "goals": goals(rows),
        "setup": (
            f"batch {config.batch}, {config.steps} steps, input {config.input}, hidden "
            f"{config.hidden}; forward+backward, float32; median of {config.repeats} steps after "
            f"{config.warmup} warm-up steps, the rows timed round-robin."
        ),
    }


def goals(rows: list[Row]) -> list[str]:
    """Whether the fastest lnexp LN-GRU meets the cells issue's two speed goals."""
    ln_grus = [r for r in rows if r["name"].startswith("lnexp LN-GRU") and "median_ms" in r]
    if not ln_grus:
        return []
    best = min(ln_grus, key=lambda r: r["median_ms"])
    lines = []
    for column, limit in (("x_torch_compile_ln_gru", 1.0), ("x_flax_gru", 1.3)):
        reference = REFERENCES[column]
        ratio = best.get(column)
        if ratio is None:
            lines.append(f"Goal {best['name']} <= {limit}x {reference}: not measured.")
        else:
            verdict = "met" if ratio <= limit else "NOT met"
            lines.append(f"Goal {best['name']} <= {limit}x {reference}: {verdict} ({ratio:.2f}x).")
    return lines


COLUMNS = [
    ("compile_s", "compile s", ".2f"),
    ("median_ms", "ms/step", ".2f"),
    ("tokens_per_s", "tokens/s", ",.0f"),
    ("x_flax_gru", f"x {FLAX_GRU}", ".2fx"),
    ("x_torch_compile_ln_gru", f"x {TORCH_COMPILED_LN_GRU}", ".2fx"),
]
