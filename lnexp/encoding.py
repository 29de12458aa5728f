"""Keeps the public path ``lnexp.encoding`` (``python -m lnexp.encoding``) of the skip-thought
sentence encoder, which lives in :mod:`lnexp.senteval.encode`."""

from typing import Any

if __name__ == "__main__":
    import runpy

    # lnexp.senteval.encode run as the main module: its own command line, flags and --help.
    runpy.run_module("lnexp.senteval.encode", run_name="__main__", alter_sys=True)
else:
    from lnexp.senteval import encode as _encode
    from lnexp.senteval.encode import SentenceEncoder, encode, main

    __all__ = ["SentenceEncoder", "encode", "main"]

    def __getattr__(name: str) -> Any:  # The module's other names, for code that used them here.
        return getattr(_encode, name)
