"""The one command-line style of every lnexp command: absl flags, ``--config.KEY=VALUE``
overrides, and one ``error:`` paragraph for a mistake.

Every command (``python -m lnexp.main``, ``scripts/compare.py``, the downloads, each study's
reports) defines absl flags (``--flag value`` and ``--flag=value`` alike) and ends with
:func:`run`, whose flag parsing (:func:`parse_flags`) makes them behave alike:

* ``--help`` prints the command's docstring and its flags and exits 0 (absl's own exits 1);
* a usage error (an unknown flag, a value of the wrong type, a required flag left out, an
  argument the command does not take) prints one ``error:`` paragraph and exits 2, like a
  :class:`~lnexp.errors.UserError` raised by a ``main`` wrapped in
  :func:`lnexp.errors.command_line`;
* a command that takes a config defines it with :func:`define_config`: ``--config=FILE[:ARG]``
  (ml_collections' ``config_flags``, the config locked), then ``--config.a.b=VALUE`` overrides
  of any field, each value read as the field's type (:func:`lnexp.config.parse_value`: the one
  rule of every override, the values of ``scripts/compare.py --grid`` included). A key the
  config does not have, a value of the wrong type and a config file that cannot be loaded are
  each one ``error:`` paragraph.

A command's module that is also imported for its functions (a study's report, say) defines its
flags in a ``define_flags()`` called only when it runs as a program, so importing it defines none
(absl's flags are global: two modules may not define the same name)::

    def define_flags() -> None:
        flags.DEFINE_string("workdir", None, "The grid directory.")


    @command_line
    def main(argv: list[str]) -> None:
        workdir = flags.FLAGS.workdir
        ...


    if __name__ == "__main__":
        define_flags()
        cli.run(main)

:func:`call` runs such a command in the calling process (the tests do).
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from lnexp.errors import UserError, exit_with_error, first_line

# The flags that define_config() defines belong to the command that calls it (its --help lists
# them), not to this module; this module defines no flags of its own.
flags.disclaim_key_flags()

CONFIG_FLAG = "config"
"""The name of every command's config flag (``--config=FILE``, ``--config.KEY=VALUE``)."""


def define_config(default: str | None = None, help_string: str | None = None) -> flags.FlagHolder:
    """Defines ``--config=FILE[:ARG]`` (a file with ``get_config(arg)``) and its
    ``--config.KEY=VALUE`` overrides, the config locked: an override of a key the config lacks
    is an error instead of a new field. The flag's value is the config, overrides applied."""
    text = help_string or "Config file, e.g. configs/pimnist.py or configs/pimnist.py:tuned."
    text += " Any field is overridden by --config.KEY=VALUE, e.g. --config.model.norm=batch."
    # With a default and no --config on the command line, config_flags loads the default and
    # reads the command line's overrides here, already: their mistakes are reported alike.
    with _reported(sys.argv):
        return config_flags.DEFINE_config_file(CONFIG_FLAG, default, text, lock_config=True)


def config_source(holder: flags.FlagHolder) -> tuple[str, list[tuple[str, Any]]]:
    """The config file a parsed config flag loaded (``'configs/pimnist.py:tuned'``) and its
    overrides, in order, as ``(key, value)`` pairs of parsed values: what
    :func:`lnexp.config.load_config` takes to make the same config again."""
    flag = flags.FLAGS[holder.name]
    return flag.config_filename, list(flag.override_values.items())


def unloadable(error: BaseException) -> str:
    """The paragraph of a config file that failed to load: the last line of config_flags'
    report (which ends with the cause)."""
    lines = [line.strip().strip('"') for line in str(error).splitlines() if line.strip()]
    return f"the config file cannot be loaded: {lines[-1] if lines else error!r}"


def _overrides_in(argv: Sequence[str]) -> list[str]:
    return [a for a in argv if a.startswith((f"--{CONFIG_FLAG}.", f"-{CONFIG_FLAG}."))]


def _missing_key(error: BaseException, argv: Sequence[str]) -> str:
    """The paragraph of an override naming a key the config does not have (config_flags raises
    KeyError or AttributeError, with the missing part and maybe a suggestion)."""
    while error.args and isinstance(error.args[0], BaseException):  # AttributeError(KeyError())
        error = error.args[0]
    text = str(error.args[0]) if error.args else str(error)
    names = re.findall(r"'([^'\s]+)'", text)
    name = names[0] if names else text.strip("\"'")
    suggestion = re.search(r'Did you mean "([^"]+)"', text)
    culprits = [a for a in _overrides_in(argv) if name in a.split("=", 1)[0].split(".")[1:]]
    key = culprits[0].split("=", 1)[0].split(".", 1)[1] if culprits else name
    hint = f" (did you mean {suggestion.group(1)!r} for {name!r}?)" if suggestion else ""
    return (
        f"{' '.join(culprits) or 'a --config override'}: the config has no key {key!r}{hint}. "
        "Configs are locked so that a misspelled override fails instead of being ignored; "
        "check the spelling against the config file (every run's config.json lists its keys)."
    )


def _not_applied(error: BaseException, argv: Sequence[str]) -> str:
    """The paragraph of a config file, or an override, that config_flags failed on."""
    overrides = _overrides_in(argv)
    if not overrides or isinstance(error, SyntaxError | ImportError | NameError):
        return unloadable(error)
    keys = [o.split("=", 1)[0].split(".", 1)[1] for o in overrides]
    return (
        f"{' '.join(overrides)}: the config has no key {keys[0]!r} that an override can set "
        f"({first_line(error)}). An override names one field by its dotted key, "
        "--config.KEY=VALUE (e.g. --config.model.norm=batch); check the key against the "
        "config file (every run's config.json lists its keys)."
    )


def _flag_error(error: flags.Error) -> str:
    """The paragraph of a flag absl could not parse."""
    text = str(error)
    if "Error whilst parsing config file" in text:  # get_config raised (e.g. a bad variant).
        return unloadable(error)
    if f"before a value for --{CONFIG_FLAG} was specified" in text:
        return f"{text}: --config=FILE comes first, then its --config.KEY=VALUE overrides."
    bad_override = re.match(rf"flag (--{CONFIG_FLAG}\.[\w.]+=.*?): (.*)", text, flags=re.DOTALL)
    if bad_override:
        return (
            f"{bad_override.group(1)}: {bad_override.group(2).strip()}. An override's value is "
            "read as the type of the config's field (an int, a float, a bool, a string or a "
            "tuple such as '(16, 8)'); see the config file or a run's config.json."
        )
    return f"{text.rstrip('.')}. See --help for the flags."


@contextlib.contextmanager
def _reported(argv: Sequence[str]) -> Iterator[None]:
    """Flag parsing's mistakes inside the block: one ``error:`` paragraph, exit status 2."""
    try:
        yield
    except flags.Error as e:
        exit_with_error(_flag_error(e))
    except OSError as e:  # An override of a config file that cannot be read.
        exit_with_error(unloadable(e))
    except (AttributeError, KeyError) as e:  # An override of a key the config does not have.
        exit_with_error(_missing_key(e, argv))
    except Exception as e:  # A config file that is no Python, or an override of no field.
        exit_with_error(_not_applied(e, argv))


def _check_configs() -> None:
    """The parsed config checked before the command starts any work: a config file that cannot
    be read (config_flags defers reading it to the first use), and every field of an
    experiment's config (:func:`lnexp.config_ranges.check_ranges`: ranges and names)."""
    if CONFIG_FLAG not in flags.FLAGS:
        return
    flag = flags.FLAGS[CONFIG_FLAG]
    if not config_flags.config_flags.is_config_flag(flag):  # Another module's --config string.
        return
    config = flag.value
    if config is not None and not isinstance(config, ml_collections.ConfigDict):
        try:
            config.to_dict()
        except Exception as e:  # noqa: BLE001 (whatever the file raises: it cannot be loaded)
            exit_with_error(unloadable(e))
    if isinstance(config, ml_collections.ConfigDict) and "experiment" in config:
        # Every field on its own; the model (fields together) is built by the training loop
        # and by the grid, per cell, before any run directory exists: a grid's cells may make
        # a base config whole that alone is not (--config.model.norm=cell --grid model.cell=lstm).
        from lnexp.config_ranges import check_ranges

        try:
            check_ranges(config)
        except UserError as e:
            exit_with_error(e)


def parse_flags(argv: Sequence[str], *, takes_arguments: bool = False) -> list[str]:
    """absl's flag parsing with lnexp's rules: ``--help`` exits 0, and every mistake (see the
    module's docstring) is one ``error:`` paragraph and exit status 2. Returns ``argv`` without
    its flags; with ``takes_arguments=False`` any argument left over is a usage error.

    Pass it as ``absl.app.run``'s ``flags_parser`` (:func:`run` does)."""
    argv = list(argv)
    try:
        with _reported(argv):
            rest = flags.FLAGS(argv)
    except SystemExit as e:
        # --help, --helpshort, --helpfull and --helpxml print what was asked for and exit with
        # status 1; asking for help is no failure. (A mistake exits 2.)
        raise SystemExit(0 if e.code == 1 else e.code) from None
    _check_configs()
    if len(rest) > 1 and not takes_arguments:
        exit_with_error(
            f"unexpected arguments: {' '.join(rest[1:])}. This command takes only flags "
            "(--name=value); see --help."
        )
    return rest


def run(main: Callable[[list[str]], int | None], *, takes_arguments: bool = False) -> None:
    """``absl.app.run(main)`` with :func:`parse_flags`: what every command's
    ``if __name__ == "__main__":`` ends with. ``main`` gets the arguments that are not flags
    (its program name first), and its return value is the exit status."""
    app.run(main, flags_parser=functools.partial(parse_flags, takes_arguments=takes_arguments))


@contextlib.contextmanager
def _defined(argv: Sequence[str], define_flags: Callable[[], None] | None) -> Iterator[None]:
    """The command's flags defined for the block, alone: the flags other modules of this process
    defined (one imported for its functions may define some at import) are set aside, and
    put back after, so that the command can define its own of the same names."""
    app.define_help_flags()  # What app.run defines (once per process: they stay).
    aside = [
        (module, flag)
        for module, module_flags in flags.FLAGS.flags_by_module_dict().items()
        if not module.startswith("absl.")
        for flag in module_flags
    ]
    for _, flag in aside:
        if flag.name in flags.FLAGS:
            delattr(flags.FLAGS, flag.name)
    before, saved_argv = set(flags.FLAGS), sys.argv
    sys.argv = list(argv)  # What define_config reads a default config's overrides from.
    try:
        if define_flags is not None:
            define_flags()
        yield
    finally:
        sys.argv = saved_argv
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
        for module, flag in aside:
            if flag.name not in flags.FLAGS:
                flags.DEFINE_flag(flag, flags.FLAGS, module_name=module)


def call(
    main: Callable[[list[str]], int | None],
    argv: Sequence[str],
    define_flags: Callable[[], None] | None = None,
    *,
    takes_arguments: bool = False,
) -> int:
    """Runs a command in this process as its command line would: defines its flags
    (``define_flags``), parses ``argv`` (the program name first) like :func:`run`, calls
    ``main`` and returns the exit status; the flags it defined are removed again, so the
    next call (of this command or another) starts afresh."""
    try:
        with _defined(argv, define_flags):
            rest = parse_flags(argv, takes_arguments=takes_arguments)
            status = main(rest)
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    return int(status or 0)
