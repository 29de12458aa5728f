"""Speed benchmarks, side by side with PyTorch and the machine's limits: one command, one run.

Everything (the whole report in README.md), on an otherwise idle machine::

    python scripts/bench.py --sections all --data_dir PATH_TO_MNIST \\
        --out results/bench.json --markdown results/bench.md

Sections (see :mod:`lnexp.bench`; registered in :mod:`lnexp.bench.sections`): ``pimnist``,
``recurrent``, ``skipthought``, ``seeds``, ``fig6`` (these two need ``--data_dir``),
``transformer``. Each
section's settings are flags of the same names, their help prefixed by the section (``--help``).
PyTorch rows need ``pip install torch==2.13.0``.

Methodology. Every row is compiled and warmed up first (compile time reported apart), then the
rows of a section are timed round-robin, one call of each per round, and each reports its median.
JAX rows are ``jax.jit`` calls ended by ``block_until_ready``; PyTorch rows use
``torch.set_num_threads(os.cpu_count())`` (``--torch_threads`` to change it). The JSON records
the machine, the package versions and the load average at the start; the report carries a warning
when the load was 0.5 or more: on a busy machine PyTorch's threads wait for each other at every
op, so its rows come out far too slow.
"""

from __future__ import annotations

import dataclasses
import typing

from absl import flags

from lnexp import cli, flag_kinds
from lnexp.bench.report import run_benchmark, to_markdown
from lnexp.bench.section import define_flag
from lnexp.bench.sections import SECTIONS, BenchConfig
from lnexp.errors import command_line
from lnexp.training.metric_writers import quiet_library_logs


def define_flags() -> None:
    """The command line's flags: the sections, the outputs, and one flag per field of
    :class:`BenchConfig` (the sections' settings), of the kind each field declares."""
    flag_kinds.names(
        "sections",
        ["pimnist"],
        f"Sections to run, in order ({', '.join(SECTIONS)}), or 'all'.",
        list(SECTIONS),
        extra=["all"],
    )
    flag_kinds.path("out", "results/bench.json", "Where the JSON results go.", kind="file")
    flag_kinds.path("markdown", None, "Also write the markdown report here.", kind="file")
    types = typing.get_type_hints(BenchConfig)
    for field in dataclasses.fields(BenchConfig):
        define_flag(field, types[field.name])


def _settings() -> BenchConfig:
    values = {
        field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(BenchConfig)
    }
    return BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@command_line
def main(argv):
    del argv
    quiet_library_logs()
    f = flags.FLAGS
    results = run_benchmark(f.sections, _settings(), out=f.out, markdown=f.markdown)
    print(to_markdown(results))
    written = [p for p in (f.out, f.markdown) if p]
    if written:
        print("Wrote " + ", ".join(written))


if __name__ == "__main__":
    define_flags()
    cli.run(main)
