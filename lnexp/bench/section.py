"""What a benchmark section is: the contract every module of :mod:`lnexp.bench` that
``scripts/bench.py --sections`` runs fulfils, and the settings all sections share.

A section is a module with

* ``Settings``: a frozen dataclass of the section's own settings, subclassing
  :class:`CommonSettings` (or another section's ``Settings`` whose fields it reads too). Every
  field has a default and ``metadata={'help': ...}``; ``scripts/bench.py`` makes each field a
  flag of the same name, and checks the values in ``__post_init__`` (raising
  :class:`~lnexp.errors.UserError`; call ``super().__post_init__()`` first);
* ``run(settings) -> SectionResult``: times the section's rows;
* ``COLUMNS``: the columns of its markdown table, ``(row key, title, format spec)``; a spec
  ending in ``x`` prints a ratio (``'.2fx'`` -> ``1.23x``).

A new section is its module and one entry in :mod:`lnexp.bench.sections` (its name and its
``Settings`` among the bases of ``BenchConfig``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NotRequired, Protocol, TypedDict

from lnexp.bench.timing import Row
from lnexp.errors import UserError

Column = tuple[str, str, str]


def setting(default: Any, help: str) -> Any:  # noqa: A002 (absl's name for it)
    """A field of a section's ``Settings``: its default and its flag's help."""
    return dataclasses.field(default=default, metadata={"help": help})


def check_at_least(settings: Any, minimum: int, names: Sequence[str]) -> None:
    """Raises a :class:`UserError` naming the first of ``names`` below ``minimum``."""
    for name in names:
        if getattr(settings, name) < minimum:
            raise UserError(f"--{name} must be at least {minimum}, got {getattr(settings, name)}.")


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """The settings every section may read."""

    torch_compile: bool = setting(
        True, "Time the torch.compile'd rows (compiling takes tens of seconds)."
    )
    torch_threads: int = setting(
        0, "torch.set_num_threads for the PyTorch rows; 0: os.cpu_count()."
    )
    data_dir: str | None = setting(
        None, "fig6, seeds: directory of the MNIST IDX files (those sections train on them)."
    )
    seed: int = setting(0, "Seed of parameters and synthetic data.")

    def __post_init__(self) -> None:
        if self.torch_threads < 0:
            raise UserError(f"--torch_threads must be at least 0, got {self.torch_threads}.")


class SectionResult(TypedDict):
    """What a section's ``run`` returns (and ``bench.json`` holds under its name)."""

    rows: list[Row]
    goals: list[str]
    setup: str
    limits: NotRequired[dict[str, Any]]  # The machine's measured limits, when the rows use them.


class Section(Protocol):
    """A benchmark section module (see the module docstring)."""

    Settings: type[CommonSettings]
    COLUMNS: Sequence[Column]

    def run(self, settings: Any) -> SectionResult: ...
