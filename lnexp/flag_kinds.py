"""The kinds of flag lnexp's commands take, each checked when the command line is parsed.

absl checks a flag's type (``--seeds=two`` is refused); these declare what a value must also be,
so that a bad one is one ``error:`` paragraph naming the flag (:func:`lnexp.cli.parse_flags`)
before the command does any work, never a traceback from deep inside it:

* :func:`count`: an integer in ``[low, 2**31 - 1]`` (absl's integer flag with bounds);
* :func:`number`: a finite number in a range (absl's float flag takes ``nan`` and ``inf``);
* :func:`choice` and :func:`names`: one name, or a comma-separated list of names, of a set;
* :func:`counts`: a comma-separated list of integers of a range;
* :func:`texts`: a comma-separated list of strings, each matching a pattern;
* :func:`path`: a file or directory that must exist (``must_exist``: what a command reads), or
  a place to write one (never empty, never an existing path of the other kind);
* :func:`text`: any string (``allow_empty``: the empty one too), or one of a pattern;
* :func:`assignments`: ``KEY=VALUE`` given once per flag (``--grid model.norm=none,layer``);
* ``flags.DEFINE_bool`` (absl's own).

Every flag of every command is one of them: tests/test_fuzz.py draws bad values for each kind
and fails for a flag declared otherwise. Each function returns absl's ``FlagHolder``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import flags

from lnexp.config_ranges import FLOAT32_MAX, INT32_MAX

# The flags these functions define belong to the command that calls them (its --help lists
# them), not to this module.
flags.disclaim_key_flags()


def count(
    name: str, default: int | None, help: str, *, low: int = 1, high: int = INT32_MAX
) -> flags.FlagHolder:
    """An integer in ``[low, high]`` (``None``: the default, where the command says what that
    means)."""
    return flags.DEFINE_integer(name, default, help, lower_bound=low, upper_bound=high)


class NumberParser(flags.ArgumentParser):
    """A finite number in ``[low, high]`` (``open_low``: ``> low``)."""

    def __init__(self, low: float = -math.inf, high: float = math.inf, open_low: bool = False):
        self.low, self.high, self.open_low = low, high, open_low

    def describe(self) -> str:
        if self.low == -math.inf and self.high == math.inf:
            return "a finite number"
        if self.high == math.inf:
            return f"a finite number {'>' if self.open_low else '>='} {self.low:g}"
        return f"a number in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"

    def parse(self, argument: Any) -> float:
        try:
            value = float(argument)
        except (TypeError, ValueError):
            raise ValueError(f"{argument!r} is not a number") from None
        above = value > self.low if self.open_low else value >= self.low
        if not (
            math.isfinite(value) and abs(value) <= FLOAT32_MAX and above and value <= self.high
        ):
            raise ValueError(f"{argument} is not {self.describe()}")
        return value

    def flag_type(self) -> str:
        return "float"


def number(
    name: str,
    default: float | None,
    help: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    open_low: bool = False,
) -> flags.FlagHolder:
    """A finite number in ``[low, high]`` (``open_low``: strictly above ``low``)."""
    return flags.DEFINE(NumberParser(low, high, open_low), name, default, help)


def choice(name: str, default: str | None, help: str, values: Sequence[str]) -> flags.FlagHolder:
    """One of ``values``."""
    return flags.DEFINE_enum(name, default, list(values), help)


class NamesParser(flags.ListParser):
    """A comma-separated, non-empty list of names, each one of ``values`` (``extra``: names
    also accepted alone, such as ``all``)."""

    def __init__(self, values: Sequence[str], extra: Sequence[str] = ()):
        super().__init__()
        self.values, self.extra = tuple(values), tuple(extra)

    def parse(self, argument: Any) -> list[str]:
        items = super().parse(argument)
        if not items or any(not item for item in items):
            raise ValueError(f"{argument!r} lists no name (expected some of {self._valid()})")
        if len(items) == 1 and items[0] in self.extra:
            return items
        unknown = [item for item in items if item not in self.values]
        if unknown:
            raise ValueError(f"unknown name {unknown[0]!r} (expected some of {self._valid()})")
        return items

    def _valid(self) -> str:
        return ", ".join([*self.values, *self.extra])


def names(
    name: str,
    default: Sequence[str] | None,
    help: str,
    values: Sequence[str],
    *,
    extra: Sequence[str] = (),
) -> flags.FlagHolder:
    """A comma-separated list of names of ``values`` (``extra``: also accepted alone)."""
    return flags.DEFINE(
        NamesParser(values, extra), name, default, help, serializer=flags.CsvListSerializer(",")
    )


class CountsParser(flags.ListParser):
    """A comma-separated, non-empty list of integers in ``[low, high]``."""

    def __init__(self, low: int = 0, high: int = INT32_MAX):
        super().__init__()
        self.low, self.high = low, high

    def parse(self, argument: Any) -> list[int]:
        items = super().parse(argument)
        try:
            values = [int(item) for item in items]
        except (TypeError, ValueError):
            raise ValueError(f"{argument!r} is not a list of integers, e.g. 1,2") from None
        if not values or any(not self.low <= v <= self.high for v in values):
            raise ValueError(
                f"{argument!r} must list integers in [{self.low}, {self.high}], e.g. {self.low},2"
            )
        return values


def counts(
    name: str, default: Sequence[int] | None, help: str, *, low: int = 0, high: int = INT32_MAX
) -> flags.FlagHolder:
    """A comma-separated list of integers in ``[low, high]``."""
    return flags.DEFINE(
        CountsParser(low, high), name, default, help, serializer=flags.CsvListSerializer(",")
    )


class TextsParser(flags.ListParser):
    """A comma-separated, non-empty list of strings, each matching ``pattern`` (a regular
    expression, whole string)."""

    def __init__(self, pattern: str, example: str):
        super().__init__()
        self.pattern, self.example = re.compile(pattern), example

    def parse(self, argument: Any) -> list[str]:
        items = super().parse(argument)
        bad = [item for item in items if not self.pattern.fullmatch(item)]
        if not items or bad:
            got = repr(bad[0]) if bad else "nothing"
            raise ValueError(f"expected a list such as {self.example}, got {got}")
        return items


def texts(name: str, default: Sequence[str], help: str, *, pattern: str, example: str):
    """A comma-separated list of strings matching ``pattern`` (``example``: one valid list)."""
    return flags.DEFINE(
        TextsParser(pattern, example), name, default, help, serializer=flags.CsvListSerializer(",")
    )


class PathParser(flags.ArgumentParser):
    """A path: ``kind`` is ``'dir'`` or ``'file'``; ``must_exist``: one the command reads."""

    def __init__(self, kind: str, must_exist: bool):
        assert kind in ("dir", "file"), kind
        self.kind, self.must_exist = kind, must_exist

    def parse(self, argument: Any) -> str:
        text = str(argument)
        what = "directory" if self.kind == "dir" else "file"
        if not text.strip():
            raise ValueError(f"the {what} is empty; give a path")
        path = Path(text).expanduser()
        if self.must_exist and not path.exists():
            raise ValueError(f"{text} does not exist; give an existing {what}")
        if path.exists() and path.is_dir() != (self.kind == "dir"):
            raise ValueError(
                f"{text} is a {'file' if path.is_file() else 'directory'}, not a {what}"
            )
        if not path.exists():  # To be written: its nearest existing folder must take it.
            parent = next(p for p in path.absolute().parents if p.exists())
            if not parent.is_dir():
                raise ValueError(f"{text} cannot be created: {parent} is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ValueError(f"{text} cannot be created: {parent} is not writable")
        return str(path)  # ~ expanded: the path checked is the path used.

    def flag_type(self) -> str:
        return "string"


def path(
    name: str, default: str | None, help: str, *, kind: str = "dir", must_exist: bool = False
) -> flags.FlagHolder:
    """A directory (``kind='dir'``) or file (``'file'``); ``must_exist`` for one the command
    reads, else where it writes one (created)."""
    return flags.DEFINE(PathParser(kind, must_exist), name, default, help)


class TextParser(flags.ArgumentParser):
    """A string (``allow_empty``: the empty one too; ``pattern``: a regular expression it
    matches, whole)."""

    def __init__(self, allow_empty: bool, pattern: str | None = None):
        self.allow_empty = allow_empty
        self.pattern = None if pattern is None else re.compile(pattern)

    def parse(self, argument: Any) -> str:
        text = str(argument)
        if not text.strip() and not self.allow_empty:
            raise ValueError("the value is empty")
        if self.pattern is not None and not self.pattern.fullmatch(text):
            raise ValueError(f"{text!r} is not of the form {self.pattern.pattern}")
        return text

    def flag_type(self) -> str:
        return "string"


def text(
    name: str,
    default: str | None,
    help: str,
    *,
    allow_empty: bool = False,
    pattern: str | None = None,
) -> flags.FlagHolder:
    """Any string (not the empty one unless ``allow_empty``; one matching ``pattern``)."""
    return flags.DEFINE(TextParser(allow_empty, pattern), name, default, help)


class AssignmentParser(flags.ArgumentParser):
    """``KEY=VALUE`` (``value_is_dir``: the value names an existing directory)."""

    def __init__(self, example: str, value_is_dir: bool = False):
        self.example, self.value_is_dir = example, value_is_dir

    def parse(self, argument: Any) -> str:
        key, sep, value = str(argument).partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"expected KEY=VALUE, e.g. {self.example}")
        if not self.value_is_dir:
            return str(argument).strip()
        directory = Path(value.strip()).expanduser()
        if not directory.is_dir():
            raise ValueError(f"{value.strip()} is not an existing directory")
        return f"{key.strip()}={directory}"

    def flag_type(self) -> str:
        return "string"


def assignments(name: str, help: str, *, example: str, value_is_dir: bool = False):
    """``KEY=VALUE``, once per flag (a list of them; ``None`` when not given)."""
    return flags.DEFINE_multi(
        AssignmentParser(example, value_is_dir), flags.ArgumentSerializer(), name, None, help
    )
