"""A griffe extension for the API page (docs/api.md): lnexp's docstrings are Google style with
a few reST habits, which Markdown would misread.

* ``Example:`` opens an ``Examples:`` section (Google style knows only the plural; the singular
  would be an admonition whose doctests Markdown reads as block quotes and their output,
  ``[1.0, 1.0]``, as links). A doctest elsewhere at the left margin (``>>>`` lines and their
  output, up to a blank line) becomes a fenced ``pycon`` block.
* A paragraph that ends in ``::`` (reST's literal block follows) ends in ``:``; the indented
  block after it is already a code block in Markdown.
* Sphinx roles (``:func:`x` ``, ``:mod:`~a.b` ``) become code spans.

Loaded by mkdocstrings from mkdocs.yml (``extensions:``), by path from the repository root.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc|const):`~?([^`]+)`")


def _fence_doctests(text: str) -> str:
    out: list[str] = []
    in_doctest = False
    for line in text.split("\n"):
        if not in_doctest and line.startswith(">>>"):
            out.append("```pycon")
            in_doctest = True
        elif in_doctest and not line.strip():
            out.append("```")
            in_doctest = False
        out.append(line)
    if in_doctest:
        out.append("```")
    return "\n".join(out)


def rewrite(text: str) -> str:
    """The docstring ``text`` with the rewrites above."""
    text = _ROLE.sub(lambda m: f"`{m.group(1)}`", text)
    text = re.sub(r"^Example:[ \t]*$", "Examples:", text, flags=re.MULTILINE)
    text = re.sub(r"(?<=\S)::$", ":", text, flags=re.MULTILINE)
    text = re.sub(r"^::$", "", text, flags=re.MULTILINE)
    return _fence_doctests(text)


class DocstringRewrites(griffe.Extension):
    """Applies :func:`rewrite` to every docstring."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
