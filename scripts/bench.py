"""Speed benchmarks, side by side with PyTorch and the machine's limits: one command, one run.

Everything (the whole report in README.md), on an otherwise idle machine::

    python scripts/bench.py --sections all --data_dir PATH_TO_MNIST \\
        --out results/bench.json --markdown results/bench.md

Sections (see :mod:`lnexp.bench`): ``pimnist``, ``recurrent``, ``skipthought``, ``seeds``,
``fig6`` (the last needs ``--data_dir``). PyTorch rows need ``pip install torch==2.13.0``.

Methodology. Every row is compiled and warmed up first (compile time reported apart), then the
rows of a section are timed round-robin, one call of each per round, and each reports its median.
JAX rows are ``jax.jit`` calls ended by ``block_until_ready``; PyTorch rows use
``torch.set_num_threads(os.cpu_count())`` (``--torch_threads`` to change it). The JSON records
the machine, the package versions and the load average at the start; the report carries a warning
when the load was 0.5 or more: on a busy machine PyTorch's threads wait for each other at every
op, so its rows come out far too slow.
"""

from __future__ import annotations

import sys

from absl import app, flags

from lnexp.bench.report import run_benchmark, to_markdown
from lnexp.bench.timing import BenchConfig
from lnexp.errors import UserError

_SECTIONS = flags.DEFINE_list("sections", ["pimnist"], "Sections to run, in order, or 'all'.")
_OUT = flags.DEFINE_string("out", "results/bench.json", "Where the JSON results go.")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Also write the markdown report here.")
_TORCH_COMPILE = flags.DEFINE_bool(
    "torch_compile", True, "Time the torch.compile'd rows (compiling takes tens of seconds)."
)
_TORCH_THREADS = flags.DEFINE_integer(
    "torch_threads", 0, "torch.set_num_threads for the PyTorch rows; 0: os.cpu_count()."
)
# recurrent
_REPEATS = flags.DEFINE_integer("repeats", 20, "recurrent: timed steps per row (median kept).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "recurrent: untimed steps per row after compiling.")
_BATCH = flags.DEFINE_integer("batch", 64, "recurrent: batch size.")
_HIDDEN = flags.DEFINE_integer("hidden", 512, "recurrent: hidden units.")
_INPUT = flags.DEFINE_integer("input", 256, "recurrent: input features per time step.")
_STEPS = flags.DEFINE_integer("steps", 30, "recurrent: time steps per sequence.")
_UNROLLS = flags.DEFINE_list("unrolls", ["1", "10"], "recurrent: scan unroll factors.")
# pimnist
_NORMS = flags.DEFINE_list("pimnist_norms", ["none", "layer", "batch"], "pimnist: methods.")
_BATCHES = flags.DEFINE_list("pimnist_batches", ["128", "4"], "pimnist: batch sizes.")
_EXAMPLES = flags.DEFINE_integer("pimnist_examples", 1600, "pimnist: examples per timed call.")
_PIMNIST_REPEATS = flags.DEFINE_integer("pimnist_repeats", 5, "pimnist: timed calls per row.")
# skipthought
_ST_STEPS = flags.DEFINE_integer("skipthought_steps", 10, "skipthought: steps per timed call.")
_ST_REPEATS = flags.DEFINE_integer("skipthought_repeats", 5, "skipthought: timed calls per row.")
# fig6
_DATA_DIR = flags.DEFINE_string("data_dir", None, "fig6: directory of the MNIST IDX files.")
_FIG6_EPOCHS = flags.DEFINE_integer("fig6_epochs", 2, "fig6: epochs per run of the grid.")
_FIG6_WORKDIR = flags.DEFINE_string("fig6_workdir", "runs/bench_fig6", "fig6: run directory.")


def _ints(flag) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in flag.value)
    except ValueError:
        raise UserError(f"--{flag.name} takes integers, got {flag.value}.") from None


def main(argv):
    del argv
    try:
        config = BenchConfig(
            batch=_BATCH.value,
            hidden=_HIDDEN.value,
            input=_INPUT.value,
            steps=_STEPS.value,
            repeats=_REPEATS.value,
            warmup=_WARMUP.value,
            unrolls=_ints(_UNROLLS),
            torch_compile=_TORCH_COMPILE.value,
            torch_threads=_TORCH_THREADS.value,
            pimnist_norms=tuple(_NORMS.value),
            pimnist_batches=_ints(_BATCHES),
            pimnist_examples=_EXAMPLES.value,
            pimnist_repeats=_PIMNIST_REPEATS.value,
            skipthought_steps=_ST_STEPS.value,
            skipthought_repeats=_ST_REPEATS.value,
            data_dir=_DATA_DIR.value,
            fig6_epochs=_FIG6_EPOCHS.value,
            fig6_workdir=_FIG6_WORKDIR.value,
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
