"""What a benchmark section is: the contract every module of :mod:`lnexp.bench` that
``scripts/bench.py --sections`` runs fulfils, and the settings all sections share.

A section is a module with

* ``Settings``: a frozen dataclass of the section's own settings, subclassing
  :class:`CommonSettings` (or another section's ``Settings`` whose fields it reads too). Every
  field is a :func:`setting`: its default, its help and what its values may be, which
  ``scripts/bench.py`` makes a flag of the same name (of the kind :mod:`lnexp.flag_kinds`
  declares: a bad value is refused when the command line is parsed) and
  :meth:`CommonSettings.__post_init__` checks again for a ``Settings`` made in Python;
* ``run(settings) -> SectionResult``: times the section's rows;
* ``COLUMNS``: the columns of its markdown table, ``(row key, title, format spec)``; a spec
  ending in ``x`` prints a ratio (``'.2fx'`` -> ``1.23x``).

A new section is its module and one entry in :mod:`lnexp.bench.sections` (its name and its
``Settings`` among the bases of ``BenchConfig``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any, NotRequired, Protocol, TypedDict

from absl import flags

from lnexp.bench.timing import Row
from lnexp.errors import UserError

Column = tuple[str, str, str]

flags.disclaim_key_flags()  # define_flag's flags belong to scripts/bench.py (its --help).


def setting(
    default: Any,
    help: str,  # noqa: A002 (absl's name for it)
    *,
    low: int = 1,
    choices: Sequence[str] | None = None,
    pattern: str | None = None,
    example: str = "",
    path: str | None = None,
    allow_empty: bool = False,
) -> Any:
    """A field of a section's ``Settings``: its default, its flag's help and its values.

    Args:
        default: The default value (a tuple for a list flag).
        help: The flag's help.
        low: An integer (or each of a tuple of them) is at least this.
        choices: The names a tuple of strings takes.
        pattern: A regular expression each string of a tuple matches (``example``: a valid
            list, for the message).
        path: A string field names a directory: ``'in'`` (it must exist) or ``'out'``.
        allow_empty: A free string field may be empty.
    """
    kind = {"low": low, "choices": choices, "pattern": pattern, "example": example}
    kind.update(path=path, allow_empty=allow_empty)
    return dataclasses.field(default=default, metadata={"help": help, **kind})


def parser(field: dataclasses.Field, annotation: Any) -> flags.ArgumentParser | None:
    """The parser of a :func:`setting` field's flag (one of :mod:`lnexp.flag_kinds`), the one
    description of its values: the flag parses with it and :meth:`CommonSettings.__post_init__`
    checks with it. ``None`` for a bool (absl's own flag)."""
    from lnexp import flag_kinds  # Here: a section imports no absl flags machinery otherwise.

    meta = field.metadata
    if annotation is bool:
        return None
    if annotation is int:
        return flags.IntegerParser(lower_bound=meta["low"], upper_bound=flag_kinds.INT32_MAX)
    if typing.get_origin(annotation) is tuple and typing.get_args(annotation)[0] is int:
        return flag_kinds.CountsParser(meta["low"])
    if typing.get_origin(annotation) is tuple:
        if meta["choices"] is not None:
            return flag_kinds.NamesParser(meta["choices"])
        return flag_kinds.TextsParser(meta["pattern"], meta["example"])
    if meta["path"] is not None:
        return flag_kinds.PathParser("dir", must_exist=meta["path"] == "in")
    return flag_kinds.TextParser(meta["allow_empty"])


def define_flag(field: dataclasses.Field, annotation: Any) -> flags.FlagHolder:
    """The flag of a :func:`setting` field (named as it), of the kind its values are."""
    kind, default = parser(field, annotation), field.default
    if kind is None:
        return flags.DEFINE_bool(field.name, default, field.metadata["help"])
    if isinstance(kind, flags.ListParser):
        serializer, default = flags.CsvListSerializer(","), list(default)
    else:
        serializer = flags.ArgumentSerializer()
    return flags.DEFINE(kind, field.name, default, field.metadata["help"], serializer=serializer)


def check_setting(field: dataclasses.Field, annotation: Any, value: Any) -> None:
    """Refuses a value of a :func:`setting` field that its flag would refuse.

    Raises:
        UserError: naming the flag and what its values may be.
    """
    kind = parser(field, annotation)
    if kind is None or value is None:
        return
    try:
        kind.parse(list(value) if isinstance(value, tuple) else value)
    except ValueError as e:
        raise UserError(f"--{field.name}={value!r}: {e}.") from None


@dataclasses.dataclass(frozen=True)
class CommonSettings:
    """The settings every section may read."""

    torch_compile: bool = setting(
        True, "Time the torch.compile'd rows (compiling takes tens of seconds)."
    )
    torch_threads: int = setting(
        0, "torch.set_num_threads for the PyTorch rows; 0: os.cpu_count().", low=0
    )
    data_dir: str | None = setting(
        None,
        "fig6, seeds: directory of the MNIST IDX files (those sections train on them).",
        path="in",
    )
    seed: int = setting(0, "Seed of parameters and synthetic data.", low=0)

    def __post_init__(self) -> None:
        """Checks every field of the (sub)class's settings (:func:`check_setting`)."""
        annotations = typing.get_type_hints(type(self))
        for field in dataclasses.fields(self):
            if field.metadata.get("help") is not None:
                check_setting(field, annotations[field.name], getattr(self, field.name))


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

    # Optional: ``check(settings)`` raises a UserError for settings the section cannot run
    # with that need more than the fields' own checks (a config file to load); every selected
    # section's runs before the first section starts.
