"""Loading a config file and applying ``KEY=VALUE`` overrides: the Python API behind the grid
of ``scripts/compare.py``, the benchmarks and the tests (the command lines' ``--config`` flag,
:func:`lnexp.cli.define_config`, is ml_collections' ``config_flags``, which loads the same files).

A config file is a Python file with ``get_config(arg=None) -> ml_collections.ConfigDict``; it is
named ``path`` or ``path:arg`` (``configs/pimnist.py:tuned``). An override sets one field by its
dotted key (``model.norm=batch``). A text value is read by :func:`parse_value`, the one rule of
every override: exactly as ``--config.model.norm=batch`` on a command line reads it, by the
parser of the field's type (``4`` for an int, ``1e-3`` for a float, ``true`` or ``True`` for a
bool, ``(16, 8)`` for a tuple; a string field takes the text as it is). Any other value is set
as it is. A key the config does not have is a :class:`~lnexp.errors.UserError`, never a new
field, and so is a text its field's type cannot read.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from lnexp.errors import UserError

Overrides = Iterable[tuple[str, Any]] | Mapping[str, Any]


def parse_assignment(text: str) -> tuple[str, str]:
    """``'model.norm=batch'`` -> ``('model.norm', 'batch')``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"Expected KEY=VALUE, got {text!r} (e.g. --grid model.norm=none,layer).")
    return key.strip(), value.strip()


def _parent(config: ml_collections.ConfigDict, key: str) -> tuple[Any, str]:
    """The ConfigDict holding the dotted ``key``'s last part, and that part; ``(None, leaf)``
    when a parent along the way is missing or not a ConfigDict."""
    *parents, leaf = key.split(".")
    node: Any = config
    for name in parents:
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            return None, leaf
        node = node[name]
    return (node, leaf) if isinstance(node, ml_collections.ConfigDict) else (None, leaf)


def has_key(config: ml_collections.ConfigDict, key: str) -> bool:
    """Whether the dotted ``key`` names a field of ``config``."""
    node, leaf = _parent(config, key)
    return node is not None and leaf in node


def _no_key(key: str, value: Any) -> UserError:
    return UserError(
        f"The config has no key {key!r} (from {key}={value}); check its spelling against the "
        "config file (every run's config.json lists its keys)."
    )


def parse_value(config: ml_collections.ConfigDict, key: str, text: str) -> Any:
    """The value ``--config.KEY=TEXT`` sets in ``config`` (which is left unchanged): ``TEXT``
    read by the parser ml_collections' ``config_flags`` chooses for the field's type (it runs
    that parser on a copy of the config), so that a grid's values and a command line's
    overrides follow one rule.

    Raises:
        UserError: naming the key, if the config has no field ``key`` or ``TEXT`` is not a value
            of its type.
    """
    if not has_key(config, key):
        raise _no_key(key, text)
    argv = ["lnexp", f"--config.{key}={text}"]
    values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_dict(
            "config", copy.deepcopy(config), flag_values=values, lock_config=True, sys_argv=argv
        )
        values(argv)
    except flags.Error as e:
        reason = str(e).removeprefix(f"flag {argv[1]}: ")
        raise UserError(
            f"Cannot set {key}={text}: {reason}; the field holds {_article(key, config)}, and a "
            f"value is read as its field's type (as --config.{key}=... on a command line is)."
        ) from None
    return values["config"].override_values[key]


def _article(key: str, config: ml_collections.ConfigDict) -> str:
    node, leaf = _parent(config, key)
    name = node.get_type(leaf).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Overrides
) -> ml_collections.ConfigDict:
    """Sets ``(key, value)`` pairs in order (dotted keys; a text read by :func:`parse_value`,
    any other value set as it is); returns ``config``."""
    pairs = overrides.items() if isinstance(overrides, Mapping) else overrides
    for key, value in pairs:
        if isinstance(value, str):
            value = parse_value(config, key, value)  # Refuses a missing key too.
        elif not has_key(config, key):
            raise _no_key(key, value)
        node, leaf = _parent(config, key)
        try:
            node[leaf] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"Cannot set {key}={value!r}: {e}") from e
    return config


def import_file(path: str | Path) -> ModuleType:
    """Imports the Python file at ``path`` once (a config file, or ``configs/common.py`` from a
    config file: ``configs/`` is not a package, and a config file is loaded by path)."""
    path = Path(path).resolve()
    name = f"lnexp_config_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise UserError(f"Config file {path} does not exist.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_config(path: str | Path, overrides: Overrides = ()) -> ml_collections.ConfigDict:
    """``get_config(arg)`` of the config file ``path[:arg]``, with ``overrides`` applied."""
    path, _, arg = str(path).partition(":")
    if not Path(path).is_file():
        raise UserError(f"Config file {path} does not exist.")
    spec = importlib.util.spec_from_file_location("lnexp_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # Afresh each time: get_config may read the environment.
    config = module.get_config(arg or None)
    return apply_overrides(config, overrides)


def resolve_learning_rate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with ``optimizer.learning_rate`` looked up in ``optimizer.tuned_rates``.

    ``tuned_rates`` (optional) is a table of ``(condition, rate)`` pairs; a condition is the
    name of a grid cell, ``'model.norm=layer,batch_size=4'``, and matches a config whose fields
    have those values. It is read only when ``learning_rate`` is ``None`` (a rate given on the
    command line always wins), so that ``configs/pimnist.py:tuned`` gives every method and
    batch size the rate chosen for it on the validation split. The returned config (a copy)
    holds the rate, so ``config.json`` records the rate a run trained with.
    """
    opt = config.optimizer
    table = opt.get("tuned_rates")
    if opt.learning_rate is not None or not table:
        return config

    def value(key: str):
        node, leaf = _parent(config, key)
        return node[leaf]

    def matches(condition: str) -> bool:
        for assignment in condition.split(","):
            key, _, text = assignment.partition("=")
            # A condition's value is read as an override's would be (parse_value).
            if not has_key(config, key) or value(key) != parse_value(config, key, text):
                return False
        return True

    found = [rate for condition, rate in table if matches(condition)]
    if len(found) != 1:
        raise UserError(
            f"config.optimizer.learning_rate is None and {len(found)} entries of "
            "config.optimizer.tuned_rates match this config (need exactly one); the table has "
            f"{', '.join(c for c, _ in table)}. Set --config.optimizer.learning_rate=RATE, or "
            "choose a configuration the table covers."
        )
    resolved = ml_collections.ConfigDict(config.to_dict())
    resolved.optimizer.learning_rate = float(found[0])
    resolved.lock()
    return resolved
