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

from lnexp import cli
from lnexp.bench.report import run_benchmark, to_markdown
from lnexp.bench.sections import SECTIONS, BenchConfig
from lnexp.errors import UserError, command_line

_SECTIONS = flags.DEFINE_list(
    "sections", ["pimnist"], f"Sections to run, in order ({', '.join(SECTIONS)}), or 'all'."
)
_OUT = flags.DEFINE_string("out", "results/bench.json", "Where the JSON results go.")
_MARKDOWN = flags.DEFINE_string("markdown", None, "Also write the markdown report here.")


def _define_setting_flags() -> dict[str, tuple[flags.FlagHolder, type | None]]:
    """One flag per field of :class:`BenchConfig` (the sections' settings), with the field's
    default and help: name -> (flag, element type of a list flag, else None)."""
    types = typing.get_type_hints(BenchConfig)
    defined = {}
    for field in dataclasses.fields(BenchConfig):
        kind, help_text = types[field.name], field.metadata["help"]
        element = None
        if typing.get_origin(kind) is tuple:
            element = typing.get_args(kind)[0]
            flag = flags.DEFINE_list(field.name, [str(v) for v in field.default], help_text)
        elif kind is bool:
            flag = flags.DEFINE_bool(field.name, field.default, help_text)
        elif kind is int:
            flag = flags.DEFINE_integer(field.name, field.default, help_text)
        else:  # str, or str | None
            flag = flags.DEFINE_string(field.name, field.default, help_text)
        defined[field.name] = (flag, element)
    return defined


_SETTINGS = _define_setting_flags()


def _settings() -> BenchConfig:
    values = {}
    for name, (flag, element) in _SETTINGS.items():
        if element is None:
            values[name] = flag.value
            continue
        try:
            values[name] = tuple(element(v) for v in flag.value)
        except ValueError:
            raise UserError(f"--{name} takes {element.__name__}s, got {flag.value}.") from None
    return BenchConfig(**values)


@command_line
def main(argv):
    del argv
    results = run_benchmark(_SECTIONS.value, _settings(), out=_OUT.value, markdown=_MARKDOWN.value)
    print(to_markdown(results))
    written = [p for p in (_OUT.value, _MARKDOWN.value) if p]
    if written:
        print("Wrote " + ", ".join(written))


if __name__ == "__main__":
    cli.run(main)
