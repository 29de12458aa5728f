"""mkdocs hooks (``hooks:`` in mkdocs.yml): links from the pages to the repository's files
outside ``docs/``.

The pages link figures, configs and results by their paths in the repository
(``../../results/fig6/figure.png`` from ``docs/studies/fig6.md``), which GitHub and editors
follow. mkdocs only knows the files under ``docs/``, so for the site every such file that
exists is copied under ``_repo/`` (as it is: a linked ``.md`` file is not rendered) and the
links point at the copy. A link to a file that does not exist is left alone, so that
``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

PREFIX = "_repo"
# [text](target) and ![alt](target), with an optional #anchor or "title" after the target.
_LINK = re.compile(r"(\]\()([^)\s#]+)((?:#[^)\s]*)?(?:\s+\"[^\"]*\")?\))")


class _RepoFile(File):
    """A repository file copied into the site as it is (never rendered as a page)."""

    def is_documentation_page(self) -> bool:
        return False

    def is_static_page(self) -> bool:
        return False


def _repo_path(config, page_src_uri: str, target: str) -> str | None:
    """``target`` (linked from the page ``page_src_uri``) as a path in the repository, when it
    lies outside ``docs/`` but inside the repository; otherwise None."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    docs = Path(config.docs_dir).resolve()
    repo = Path(config.config_file_path).resolve().parent
    resolved = Path(os.path.normpath(docs / posixpath.dirname(page_src_uri) / target))
    if resolved.is_relative_to(docs) or not resolved.is_relative_to(repo):
        return None
    return resolved.relative_to(repo).as_posix()


def on_files(files: Files, config) -> Files:
    repo = Path(config.config_file_path).resolve().parent
    for page in list(files.documentation_pages()):
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for match in _LINK.finditer(text):
            rel = _repo_path(config, page.src_uri, match.group(2))
            src_uri = f"{PREFIX}/{rel}"
            if rel and (repo / rel).is_file() and files.get_file_from_path(src_uri) is None:
                files.append(_RepoFile.generated(config, src_uri, abs_src_path=str(repo / rel)))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    def relink(match: re.Match) -> str:
        rel = _repo_path(config, page.file.src_uri, match.group(2))
        if rel is None or files.get_file_from_path(f"{PREFIX}/{rel}") is None:
            return match.group(0)
        start = posixpath.dirname(page.file.src_uri) or "."
        return match.group(1) + posixpath.relpath(f"{PREFIX}/{rel}", start) + match.group(3)

    return _LINK.sub(relink, markdown)
