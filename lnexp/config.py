"""Loading a config file and applying ``KEY=VALUE`` overrides: the one loader of
``scripts/compare.py``, the benchmarks and the tests (``python -m lnexp.main`` uses absl's
``config_flags``, which loads the same files).

A config file is a Python file with ``get_config(arg=None) -> ml_collections.ConfigDict``; it is
named ``path`` or ``path:arg`` (``configs/pimnist.py:tuned``). An override sets one field by its
dotted key (``model.norm=batch``); a text value is read as a Python literal (``(16, 8)``,
``1e-3``, ``None``) unless the field holds a string, any other value is set as it is. A key the
config does not have is a :class:`~lnexp.errors.UserError`, never a new field.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections

from lnexp.errors import UserError

Overrides = Iterable[tuple[str, Any]] | Mapping[str, Any]


def parse_assignment(text: str) -> tuple[str, str]:
    """``'model.norm=batch'`` -> ``('model.norm', 'batch')``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"Expected KEY=VALUE, got {text!r} (e.g. --set num_epochs=5).")
    return key.strip(), value.strip()


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Overrides
) -> ml_collections.ConfigDict:
    """Sets ``(key, value)`` pairs (dotted keys; text parsed as a Python literal unless the field
    holds a string; other values set as they are); returns ``config``."""
    pairs = overrides.items() if isinstance(overrides, Mapping) else overrides
    for key, value in pairs:
        *parents, leaf = key.split(".")
        node = config
        try:
            for name in parents:
                node = node[name]
            if leaf not in node:
                raise KeyError(leaf)
            # A string field takes the text as it is (so data.dir=123 stays a path).
            parse = isinstance(value, str) and node.get_type(leaf) is not str
            node[leaf] = _parse_value(value) if parse else value
        except (KeyError, AttributeError) as e:
            raise UserError(
                f"The config has no key {key!r} (from {key}={value}); check its spelling "
                "against the config file."
            ) from e
        except TypeError as e:
            raise UserError(f"Cannot set {key}={value}: {e}") from e
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
        node = config
        for name in key.split("."):
            node = node.get(name) if isinstance(node, ml_collections.ConfigDict) else None
        return node

    def matches(condition: str) -> bool:
        for assignment in condition.split(","):
            key, _, text = assignment.partition("=")
            if value(key) != _parse_value(text):
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
