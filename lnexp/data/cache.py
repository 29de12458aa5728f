"""Where lnexp keeps what it downloads and builds: one cache directory, set by two variables.

* :func:`cache_root`: ``$LNEXP_CACHE``, else ``$XDG_CACHE_HOME/lnexp``, else ``~/.cache/lnexp``.
  Processed book corpora are kept here (:mod:`lnexp.data.text`).
* :func:`data_root`: ``$LNEXP_DATA``, else ``cache_root()/data``. The data sets, one folder each
  (``mnist/``, ``books/``, ``senteval/``), laid out as their own users know them. Point
  ``LNEXP_DATA`` at a folder that already holds them (a lab's shared copy; read-only is fine)
  and nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$LNEXP_CACHE``, else ``$XDG_CACHE_HOME/lnexp``, else ``~/.cache/lnexp``."""
    if os.environ.get("LNEXP_CACHE"):
        return Path(os.environ["LNEXP_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "lnexp"


def data_root() -> Path:
    """``$LNEXP_DATA``, else ``cache_root() / "data"``: the folder holding one folder per data
    set."""
    if os.environ.get("LNEXP_DATA"):
        return Path(os.environ["LNEXP_DATA"]).expanduser()
    return cache_root() / "data"


def dataset_dir(name: str) -> Path:
    """The cache folder of one data set, ``data_root() / name`` (e.g. ``"mnist"``)."""
    return data_root() / name
