"""Every ``>>>`` example in the package's docstrings runs, so the API reference (built from the
docstrings, docs/api.md) never shows an example that does not work.

The modules are found by reading the package's files: a module that gains an example is tested
without being listed here.
"""

import doctest
import importlib
from pathlib import Path

import pytest

import lnexp

PACKAGE = Path(lnexp.__file__).parent


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_layers_cells_and_models_have_examples():
    """The modules users import first each show at least one example."""
    for name in ("lnexp.norms", "lnexp.cells", "lnexp.models.mlp", "lnexp.models.transformer"):
        assert name in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    result = doctest.testmod(module, optionflags=flags)
    assert result.attempted > 0, f"{name}: its '>>> ' lines are not in a docstring doctest reads"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_no_example_is_skipped():
    """A skipped example is one the reference shows without knowing that it works: an example
    that cannot run as a doctest is a literal block (``Usage::``), not ``>>>`` lines."""
    skipped = [
        str(path.relative_to(PACKAGE.parent))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "doctest: +SKIP" in path.read_text(encoding="utf-8")
    ]
    assert skipped == []
