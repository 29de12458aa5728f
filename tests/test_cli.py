"""lnexp.cli, the command lines' one style: absl flags, --help exits 0, every usage mistake one
``error:`` paragraph and exit status 2, ``--config=FILE`` with ``--config.KEY=VALUE`` overrides.

In this process, through :func:`lnexp.cli.call` (the subprocess runs of each command are in
tests/test_docs.py, tests/test_compare.py and each command's own tests)."""

from __future__ import annotations

import importlib

import pytest
from absl import app, flags
from conftest import REPO

from lnexp import cli
from lnexp.errors import UserError, command_line

PIMNIST = str(REPO / "configs" / "pimnist.py")
seen: dict = {}


def define_flags() -> None:
    cli.define_config()
    flags.DEFINE_string("workdir", None, "A directory.")
    flags.DEFINE_integer("count", 1, "A number.")
    flags.mark_flag_as_required("workdir")


@command_line
def main(argv: list[str]) -> int:
    seen.update(argv=argv, workdir=flags.FLAGS.workdir, count=flags.FLAGS.count)
    seen["config"] = flags.FLAGS.config
    if flags.FLAGS.count < 0:
        raise UserError("--count must be at least 0.")
    return 0


def call(*args: str, takes_arguments: bool = False) -> int:
    seen.clear()
    return cli.call(main, ["prog", *args], define_flags, takes_arguments=takes_arguments)


def error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("error: ") == 1, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
def test_flags_and_overrides_are_parsed_in_both_forms(capsys):
    app.define_help_flags()  # Defined by the first call, and kept (as app.run does).
    before = set(flags.FLAGS)
    args = [f"--config={PIMNIST}", "--workdir", "runs/x", "--count=3"]
    overrides = ["--config.model.norm", "batch", "--config.model.hidden_sizes=(16,)"]
    assert call(*args, *overrides) == 0
    assert (seen["workdir"], seen["count"], seen["argv"]) == ("runs/x", 3, ["prog"])
    config = seen["config"]
    assert config.model.norm == "batch" and tuple(config.model.hidden_sizes) == (16,)
    assert config.is_locked
    # The next call starts afresh: no flag keeps the value of the one before.
    assert call(f"--config={PIMNIST}", "--workdir=y") == 0
    assert seen["count"] == 1 and seen["config"].model.norm == "layer"
    assert set(flags.FLAGS) == before  # The flags it defined are gone again.


def test_help_exits_0(capsys):
    """(absl's own --help exits 1.) That it lists the command's flags: tests/test_docs.py, on
    each command in a process of its own, where the command is the main module."""
    assert call("--workdir=x", "--help") == 0
    assert "Try --helpfull" in capsys.readouterr().out and not seen


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
@pytest.mark.parametrize(
    "args, words",
    [
        (["--workdir=x", "--cuont=2"], ["Unknown command line flag 'cuont'", "See --help"]),
        (["--workdir=x", "--count=two"], ["flag --count=two: invalid literal for int()"]),
        ([f"--config={PIMNIST}"], ["Flag --workdir must have a value other than None"]),
        (["--workdir=x", "stray"], ["unexpected arguments: stray", "see --help"]),
        (["--workdir=x", "--count=-1"], ["--count must be at least 0."]),  # main's UserError
        (
            [f"--config={PIMNIST}", "--workdir=x", "--config.model.nrom=batch"],
            ["--config.model.nrom=batch: the config has no key 'model.nrom'", "'norm'"],
        ),
        (
            [f"--config={PIMNIST}", "--workdir=x", "--config.num_epochs=1.5"],
            ["--config.num_epochs=1.5: invalid literal for int()", "type of the config's field"],
        ),
        (
            ["--config.num_epochs=2", f"--config={PIMNIST}", "--workdir=x"],
            ["--config=FILE comes first"],
        ),
        (["--config=configs/no_such.py", "--workdir=x"], ["the config file cannot be loaded"]),
        (
            [f"--config={PIMNIST}:huge", "--workdir=x"],
            ["the config file cannot be loaded", "Unknown variant 'huge'"],
        ),
    ],
)
def test_every_mistake_is_one_paragraph_and_status_2(capsys, args, words):
    assert call(*args) == 2
    message = error(capsys)
    for word in words:
        assert word in message, (word, message)


def test_flags_other_modules_defined_are_set_aside_for_the_call(capsys):
    """A module imported for its functions may define flags at import (some still do): the
    command defines its own of the same names for the call, and theirs come back after."""
    flags.DEFINE_integer("count", 7, "Another module's flag of the same name.")
    try:
        assert call("--workdir=x", "--count=2") == 0 and seen["count"] == 2
        assert flags.FLAGS["count"].help == "Another module's flag of the same name."
        assert flags.FLAGS["count"].value == 7
    finally:
        delattr(flags.FLAGS, "count")


def test_arguments_only_where_the_command_takes_them(capsys):
    assert call("--workdir=x", "a", "b", takes_arguments=True) == 0
    assert seen["argv"] == ["prog", "a", "b"]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_a_default_config_takes_overrides_and_reports_their_mistakes(capsys):
    def define() -> None:
        cli.define_config(PIMNIST)

    @command_line
    def show(argv):
        seen["config"] = flags.FLAGS.config
        seen["source"] = cli.config_source(flags.FLAGS["config"])

    assert cli.call(show, ["prog", "--config.batch_size=4"], define) == 0
    assert seen["config"].batch_size == 4
    assert seen["source"] == (PIMNIST, [("batch_size", 4)])
    assert cli.call(show, ["prog", "--config.bacth_size=4"], define) == 2
    assert "no key 'bacth_size'" in error(capsys)


COMMANDS = [
    "lnexp.data.download",
    "lnexp.reporting.tuning",
    "lnexp.studies.draw.pictures",
    "lnexp.studies.draw.report",
    "lnexp.studies.transformer.gradients",
    "lnexp.studies.transformer.report",
]


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
@pytest.mark.parametrize("name", COMMANDS)
def test_converted_commands_refuse_an_unknown_flag_in_one_paragraph(name, capsys):
    """The commands that were on argparse: absl flags, defined only when they run."""
    module = importlib.import_module(name)
    before = set(flags.FLAGS)
    argv = [name, "--no_such_flag=1"]
    takes = name == "lnexp.data.download"
    assert cli.call(module.main, argv, module.define_flags, takes_arguments=takes) == 2
    assert "Unknown command line flag 'no_such_flag'" in error(capsys)
    assert set(flags.FLAGS) == before
