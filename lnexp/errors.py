"""The one exception type for mistakes a user can fix, and how every command line reports it.

Anything that goes wrong because of what the user gave us (a config value, a data directory, a
batch size that does not fit the devices, a diverged run) raises :class:`UserError` with a
one-paragraph message naming the problem and the fix. Every command line's ``main`` is wrapped in
:func:`command_line`, which prints that message and exits with status 2 without a traceback;
library callers can catch it like any ``ValueError``. A run stopped on purpose (SIGTERM from a
cluster about to preempt it, or Ctrl-C) raises :class:`Interrupted` once its checkpoint is
written; :func:`command_line` prints its paragraph and exits 143 (SIGTERM) or 130 (SIGINT), the
statuses a shell reports for a process those signals ended.
A mistake on the command line itself (an unknown flag, a config key the config lacks) is reported
the same way, one ``error:`` paragraph and status 2, by :mod:`lnexp.cli`'s flag parsing.
The reusable layers raise their own ``ValueError`` subclasses; :func:`config_key` turns those
about a config value into a :class:`UserError`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn, ParamSpec

P = ParamSpec("P")
EXIT_USER_ERROR = 2  # The status of a command line stopped by a UserError.
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports a process killed by SIGINT.
EXIT_TERMINATED = 143  # SIGTERM (preemption), as the shell reports a process killed by it.


class UserError(ValueError):
    """A problem with the user's input, with a message that says how to fix it."""


class Interrupted(Exception):
    """A run stopped by a signal (SIGTERM, SIGINT) after checkpointing where it stopped; its
    message says where and how to resume. Not a :class:`UserError`: nothing is wrong with the
    input, and whoever runs several runs (a grid) must stop too rather than start the next.

    Attributes:
        signal_name: ``'SIGTERM'`` or ``'SIGINT'``.
        exit_status: 143 for SIGTERM, 130 for SIGINT.
    """

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.signal_name = signal_name
        self.exit_status = EXIT_TERMINATED if signal_name == "SIGTERM" else EXIT_INTERRUPTED


def one_line(message: object) -> str:
    """``message`` as one line: line breaks in it (a value the user typed may hold some) written
    as escapes (``\\n``), so that the paragraph stays one."""
    return str(message).translate(_LINE_BREAKS)


def first_line(error: BaseException) -> str:
    """The first line of an error's message, cut to 300 characters (for one warning line)."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= 300 else line[:297] + "..."


_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def print_error(message: object) -> None:
    """Prints ``error: <message>`` on stderr, on a line of its own (after a progress line that
    a terminal shows in place)."""
    sys.stdout.flush()
    start = "\n" if sys.stderr.isatty() else ""
    print(f"{start}error: {one_line(message)}", file=sys.stderr)


def exit_with_error(message: object) -> NoReturn:
    """Prints ``error: <message>`` and exits with status 2."""
    print_error(message)
    sys.exit(EXIT_USER_ERROR)


def command_line(main: Callable[P, int | None]) -> Callable[P, int | None]:
    """Wraps a command line's ``main``: a :class:`UserError` prints its one paragraph as
    ``error: ...`` and makes ``main`` return 2, an :class:`Interrupted` run prints its paragraph
    as ``stopped: ...`` and returns its status (143 or 130), an unhandled Ctrl-C returns 130, all
    without a traceback.

    ``main``'s own return value passes through; :func:`lnexp.cli.run` (``absl.app.run`` with
    lnexp's flag parsing, which reports a usage error the same way) turns it into the exit
    status::

        @command_line
        def main(argv):
            ...
    """

    @functools.wraps(main)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> int | None:
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print_error(e)
            return EXIT_USER_ERROR
        except Interrupted as e:
            sys.stdout.flush()
            start = "\n" if sys.stderr.isatty() else ""
            print(f"{start}stopped: {one_line(e)}", file=sys.stderr)
            return e.exit_status
        except KeyboardInterrupt:
            print("\nInterrupted.", file=sys.stderr)
            return EXIT_INTERRUPTED

    return wrapper


@contextlib.contextmanager
def config_key(key: str) -> Iterator[None]:
    """Turns the layers' unknown-name errors inside the block into a :class:`UserError` that
    names the config field the value came from.

    The reusable layers (:mod:`lnexp.norms`, :mod:`lnexp.cells`) import nothing from the
    application: they raise :class:`lnexp.norms.UnknownNormError` (a ``ValueError`` listing the
    valid names), and an experiment building its model from ``config.model.norm`` adds where the
    name was set::

        with config_key("config.model.norm"):
            model = MLP(sizes, norm=config.model.norm, rngs=rngs)
    """
    from lnexp.norms import UnknownNormError  # Here: this module stays free of jax imports.

    try:
        yield
    except UnknownNormError as e:
        raise UserError(e.describe(key)) from None
