"""Keeps the public path ``lnexp.evaluate`` (``lnexp.evaluate.run``, ``python -m lnexp.evaluate``)
of the SentEval protocol, which lives in :mod:`lnexp.senteval.evaluate`."""

from typing import Any

if __name__ == "__main__":
    import runpy

    # lnexp.senteval.evaluate run as the main module: its own command line, flags and --help.
    runpy.run_module("lnexp.senteval.evaluate", run_name="__main__", alter_sys=True)
else:
    from lnexp.senteval import evaluate as _evaluate
    from lnexp.senteval.evaluate import EncodeFn, evaluate_run, main, protocol, results_table, run

    __all__ = ["EncodeFn", "evaluate_run", "main", "protocol", "results_table", "run"]

    def __getattr__(name: str) -> Any:  # The module's other names, for code that used them here.
        return getattr(_evaluate, name)
