"""A fuzzer for every command line (issue 28): hypothesis draws bad values for every flag of every
command and for every field of every config, and each must be refused alike: exit status 2, one
``error:`` paragraph that names the flag or the field, no traceback, and the command never
starts: its ``main`` is replaced by a stand-in that fails the test if it is reached, so a value
that passes the checks of the flag parsing (:mod:`lnexp.flag_kinds`, and for a config every
field, :func:`lnexp.studies.check_config`) is a finding, and nothing is created on disk.

The bad values are drawn from what a value of each kind cannot be (for a number: not a number,
NaN, +-inf, beyond float32 or int32, below or above its declared bounds; for a name: a mangled or
random one; for a path: empty, missing, or a file where a directory goes; for a config's tuple:
malformed, or holding a string), so a check that is missing or in the wrong place fails here.
The number of examples per test is ``LNEXP_FUZZ_EXAMPLES`` (default 25, derandomized: the same
examples every run); ``scripts/fuzz.sh`` runs the same tests with thousands, before a release.

In this process, through :func:`lnexp.cli.call` (each command's flags defined only for the call).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_collections
import pytest
from absl import flags
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ml_collections import config_flags

from lnexp import cli, config_ranges, flag_kinds
from lnexp.config import import_file, load_config

EXAMPLES = int(os.environ.get("LNEXP_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
CONFIGS = ["pimnist", "seqmnist", "skipthought", "transformer", "draw"]


@dataclass(frozen=True)
class Command:
    """A command line: its module (``scripts/x.py`` by path), the flags it needs to get as far
    as a drawn value (``{}`` is the fuzzer's scratch directory), and whether it takes arguments."""

    module: str
    required: tuple[str, ...] = ()
    takes_arguments: bool = False

    def load(self) -> Any:
        if self.module.endswith(".py"):
            return import_file(REPO / self.module)
        return importlib.import_module(self.module)


COMMANDS = {
    "lnexp.main": Command(
        "lnexp.main", (f"--config={REPO}/configs/pimnist.py", "--workdir={}/run")
    ),
    "scripts/compare.py": Command(
        "scripts/compare.py", (f"--config={REPO}/configs/pimnist.py", "--workdir={}/grid")
    ),
    "scripts/bench.py": Command("scripts/bench.py"),
    "scripts/compare_senteval.py": Command(
        "scripts/compare_senteval.py", ("--run=a={}/dir", "--data_dir={}/dir", "--out={}/out")
    ),
    "lnexp.data.download": Command("lnexp.data.download", ("mnist",), takes_arguments=True),
    "lnexp.reporting.tuning": Command("lnexp.reporting.tuning", ("--workdir={}/dir",)),
    "lnexp.studies.pimnist.ablation": Command(
        "lnexp.studies.pimnist.ablation",
        ("--workdir={}/dir", f"--config={REPO}/configs/pimnist.py"),
    ),
    "lnexp.studies.skipthought.encode": Command(
        "lnexp.studies.skipthought.encode",
        ("--workdir={}/dir", "--input={}/file.txt", "--output={}/out.npy"),
    ),
    "lnexp.studies.skipthought.evaluate": Command(
        "lnexp.studies.skipthought.evaluate", ("--workdir={}/dir", "--data_dir={}/dir")
    ),
    "lnexp.studies.transformer.sample": Command(
        "lnexp.studies.transformer.sample", ("--workdir={}/dir",)
    ),
    "lnexp.studies.transformer.gradients": Command(
        "lnexp.studies.transformer.gradients",
        ("--out={}/out", f"--config={REPO}/configs/transformer.py:tiny"),
    ),
    "lnexp.studies.transformer.report": Command(
        "lnexp.studies.transformer.report", ("--out={}/out", "--norms={}/dir")
    ),
    "lnexp.studies.draw.report": Command(
        "lnexp.studies.draw.report", ("--workdir={}/dir", "--out={}/out")
    ),
    "lnexp.studies.draw.pictures": Command("lnexp.studies.draw.pictures", ("--workdir={}/dir",)),
}
"""Every Python command of the README's table (tests/test_docs.py lists them)."""


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """An existing directory (``dir``) and file (``file.txt``) for the required flags."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "dir").mkdir()
    (root / "file.txt").write_text("a sentence .\n")
    return root


class Reached(AssertionError):
    """The command's main was reached: the drawn value passed every check of the parsing."""


def never(argv: list[str]) -> int:
    raise Reached(f"the command started with {argv}")


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def refused(command: Command, scratch: Path, extra: list[str], names: str) -> str:
    """Runs ``command`` with ``extra`` after its required flags; checks that it exits 2 with one
    ``error:`` paragraph naming ``names`` (a regular expression), creates nothing, and never
    reaches its main. Returns the paragraph."""
    module = command.load()
    argv = [command.module, *(a.format(scratch) for a in command.required), *extra]
    before = tree(scratch)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.call(never, argv, module.define_flags, takes_arguments=command.takes_arguments)
    text = err.getvalue()
    lines = [line for line in text.splitlines() if line.strip()]
    assert status == 2, f"{argv}: exit status {status}\n{text}"
    assert "Traceback" not in text, f"{argv}:\n{text}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{argv}: not one paragraph\n{text}"
    assert re.search(names, lines[0]), f"{argv}: the paragraph does not name {names}\n{text}"
    assert tree(scratch) == before, f"{argv}: created {set(tree(scratch)) - set(before)}"
    return lines[0]


# ------------------------------------------------------------------------ the commands' flags


def defined_flags(command: Command) -> dict[str, flags.Flag]:
    """The flags ``command`` defines (absl's help flags left out)."""
    module = command.load()
    found: dict[str, flags.Flag] = {}

    def define() -> None:
        before = set(flags.FLAGS)
        module.define_flags()
        for name in set(flags.FLAGS) - before:
            if flags.FLAGS[name].name == name:  # Not a short name.
                found[name] = flags.FLAGS[name]

    with contextlib.redirect_stderr(io.StringIO()):
        cli.call(lambda argv: 0, ["prog"], define, takes_arguments=True)
    return found


def not_a(convert: Callable[[str], Any]) -> Callable[[str], bool]:
    def invalid(text: str) -> bool:
        try:
            convert(text)
        except (TypeError, ValueError, OverflowError):
            return True
        return False

    return invalid


NOT_NUMBERS = st.sampled_from(["", " ", "abc", "1,5", "0x", "--1"]) | st.text(max_size=6).filter(
    not_a(float)
)
NON_FINITE = st.sampled_from(["nan", "inf", "-inf", "NaN", "Infinity", "1e400", "-1e400", "1e39"])


def bad_integers(parser: flags.IntegerParser) -> st.SearchStrategy[str]:
    low, high = parser.lower_bound, parser.upper_bound
    assert low is not None and high is not None, "an integer flag declares its range"
    return (
        NOT_NUMBERS
        | NON_FINITE
        | st.sampled_from(["1.5", "2e3"])
        | st.integers(max_value=low - 1).map(str)
        | st.integers(min_value=high + 1).map(str)
    )


def bad_numbers(parser: flag_kinds.NumberParser) -> st.SearchStrategy[str]:
    strategies = [NOT_NUMBERS, NON_FINITE]
    if math.isfinite(parser.low):
        below = st.floats(max_value=parser.low, exclude_max=not parser.open_low, allow_nan=False)
        strategies.append(below.filter(math.isfinite).map(repr))
    if math.isfinite(parser.high):
        above = st.floats(min_value=parser.high, exclude_min=True, allow_nan=False)
        strategies.append(above.filter(math.isfinite).map(repr))
    return st.one_of(strategies)


def unknown_names(valid: set[str]) -> st.SearchStrategy[str]:
    """Names a set of names does not hold: mangled ones of its own, and random ones."""
    mangled = st.sampled_from(sorted(valid)).flatmap(
        lambda v: st.sampled_from([v.upper(), v + "#", "_" + v, v[:-1] or "x", v + " x"])
    )
    return (mangled | st.text(min_size=1, max_size=8)).filter(
        lambda t: t not in valid and t.strip() not in valid
    )


def bad_values(flag: flags.Flag, scratch: Path) -> st.SearchStrategy[str]:
    """Values ``flag`` must refuse, by the kind it is (one of :mod:`lnexp.flag_kinds`)."""
    p = flag.parser
    missing = str(scratch / "missing")
    if isinstance(p, flags.BooleanParser):
        return st.sampled_from(["maybe", "2", "yes please", "", "-1"])
    if isinstance(p, flags.IntegerParser):
        return bad_integers(p)
    if isinstance(p, flag_kinds.NumberParser):
        return bad_numbers(p)
    if isinstance(p, flags.EnumParser):
        return unknown_names(set(p.enum_values))
    if isinstance(p, flag_kinds.NamesParser):
        bad = unknown_names({*p.values, *p.extra}).filter(lambda t: "," not in t and "\n" not in t)
        first = p.values[0]
        return (
            st.sampled_from(["", ",", f"{first},,{first}"]) | bad | bad.map(f"{first},{{}}".format)
        )
    if isinstance(p, flag_kinds.CountsParser):
        return st.sampled_from(["", ",", "a,b", "1.5", "1,,2", f"{p.high + 1}", f"{p.low - 1}"])
    if isinstance(p, flag_kinds.TextsParser):
        mismatched = st.text(min_size=1, max_size=8).filter(
            lambda t: "," not in t and "\n" not in t and not p.pattern.fullmatch(t.strip())
        )
        return st.sampled_from(["", ","]) | mismatched
    if isinstance(p, flag_kinds.PathParser):
        other = scratch / ("file.txt" if p.kind == "dir" else "dir")
        values = ["", "   ", str(other), *([missing, missing + "/x"] if p.must_exist else [])]
        return st.sampled_from(values)
    if isinstance(p, flag_kinds.TextParser):
        values = [] if p.allow_empty else ["", "  "]
        strategy = st.sampled_from(values) if values else st.nothing()
        if p.pattern is not None:
            pattern = p.pattern
            strategy |= st.text(min_size=1, max_size=8).filter(lambda t: not pattern.fullmatch(t))
        return strategy
    if isinstance(p, flag_kinds.AssignmentParser):
        values = ["", "novalue", "=x", "key=", " = "]
        return st.sampled_from([*values, *(["a=" + missing] if p.value_is_dir else [])])
    raise AssertionError(f"--{flag.name}: declare it as one of lnexp.flag_kinds ({type(p)})")


def fuzzed_flags(command: Command) -> list[str]:
    """The flags of ``command`` with values to refuse (the config flag has its own tests)."""
    return [
        name
        for name, flag in defined_flags(command).items()
        if name != cli.CONFIG_FLAG
        and not (isinstance(flag.parser, flag_kinds.TextParser) and flag.parser.allow_empty
                 and flag.parser.pattern is None)
    ]  # fmt: skip


def test_every_readme_command_is_fuzzed():
    from test_docs import help_argv, readme_table_commands

    programs = {help_argv(c)[0] for c in readme_table_commands()}
    python = {
        p[1] if p[0] == "-m" else p[0] for p in programs if p[0] == "-m" or p[0].endswith(".py")
    }
    python -= {"pytest", "mkdocs"}
    assert python == set(COMMANDS), f"fuzz these too: {python - set(COMMANDS)}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_flag_is_of_a_declared_kind(name, scratch):
    """Each flag's parser is one of lnexp.flag_kinds' (or absl's bool, enum, bounded integer):
    a plain string, list or float flag cannot say what its values may be."""
    for flag_name, flag in defined_flags(COMMANDS[name]).items():
        if flag_name != cli.CONFIG_FLAG:
            bad_values(flag, scratch)  # Raises for a flag of no declared kind.


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_bad_flag_values_are_refused_before_the_command_starts(name, scratch):
    command = COMMANDS[name]
    names = fuzzed_flags(command)
    every = defined_flags(command)

    @FUZZ
    @given(data=st.data())
    def check(data):
        flag_name = data.draw(st.sampled_from(names), label="flag")
        value = data.draw(bad_values(every[flag_name], scratch), label="value")
        refused(command, scratch, [f"--{flag_name}={value}"], re.escape(f"--{flag_name}"))

    check()


# ---------------------------------------------------------------------------- config fields


def fields(config: ml_collections.ConfigDict) -> dict[str, tuple[type, Any]]:
    """Every leaf of ``config``: dotted key -> (the field's type, its value)."""
    out = {}
    for key, value in config_ranges.flat_items(config):
        node: Any = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        out[key] = (node.get_type(leaf), value)
    return out


def bad_field_values(
    key: str, kind: type, value: Any, config: ml_collections.ConfigDict
) -> st.SearchStrategy[str]:
    """Texts ``--config.KEY=TEXT`` must refuse, by the field's type and declaration."""
    if kind is bool:
        return st.sampled_from(["maybe", "2", "", "yes please"])
    if kind in (tuple, list):
        return st.sampled_from(
            ["(a,b)", "(1,", "(nan,)", "(inf,)", "(-5,)", "(1e400,)", "('x',)", "((1,2),)"]
        )
    if kind in (int, float):
        strategies = [NOT_NUMBERS.filter(lambda t: t.strip() not in ("None",)), NON_FINITE]
        allowed = config_ranges.RANGES[key]
        if kind is int:
            strategies += [st.sampled_from([str(2**31), str(-(2**31) - 1), "1.5"])]
            if allowed.low > -math.inf:
                strategies.append(st.integers(max_value=math.ceil(allowed.low) - 1).map(str))
        else:
            if allowed.low > -math.inf:
                below = st.floats(
                    max_value=allowed.low, exclude_max=not allowed.open_low, allow_nan=False
                )
                strategies.append(below.filter(math.isfinite).map(repr))
            if allowed.high < math.inf:
                above = st.floats(
                    min_value=allowed.high, exclude_min=not allowed.open_high, allow_nan=False
                )
                strategies.append(above.filter(math.isfinite).map(repr))
        return st.one_of(strategies)
    choices = {**config_ranges.CHOICES, **config_ranges.study_choices(config.experiment)}
    if key in choices:
        return unknown_names(set(choices[key].values)) | st.just("")
    text = config_ranges.TEXTS[key]
    return st.sampled_from(["", "   ", *(["ftp://x", "no-scheme"] if text.url else [])])


def fuzz_fields(command: Command, scratch: Path, examples: int = EXAMPLES) -> None:
    """``command`` (whose required flags name a ``--config``) with each field of that config
    given a value it cannot take."""
    config_file = next(a for a in command.required if a.startswith("--config="))
    config = load_config(config_file.split("=", 1)[1])
    leaves = fields(config)

    @settings(FUZZ, max_examples=examples)
    @given(data=st.data())
    def check(data):
        key = data.draw(st.sampled_from(sorted(leaves)), label="key")
        kind, value = leaves[key]
        text = data.draw(bad_field_values(key, kind, value, config), label="value")
        refused(command, scratch, [f"--config.{key}={text}"], re.escape(key))

    check()


@pytest.mark.parametrize("config_name", CONFIGS)
def test_bad_config_values_are_refused_before_any_run_directory(config_name, scratch):
    """``python -m lnexp.main`` with every config: each field given a value it cannot take."""
    path = f"{REPO}/configs/{config_name}.py"
    fuzz_fields(Command("lnexp.main", (f"--config={path}", "--workdir={}/run")), scratch)


@pytest.mark.parametrize(
    "name",
    ["scripts/compare.py", "lnexp.studies.pimnist.ablation", "lnexp.studies.transformer.gradients"],
)
def test_every_command_with_a_config_refuses_bad_fields_alike(name, scratch):
    fuzz_fields(COMMANDS[name], scratch, examples=max(5, EXAMPLES // 3))


KEY = st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)


@FUZZ
@given(block=st.sampled_from(["", "model.", "optimizer.", "data.", "checkpoint."]), leaf=KEY)
def test_unknown_keys_are_refused(scratch, block, leaf):
    key = block + leaf
    config = load_config(f"{REPO}/configs/pimnist.py")
    if key in fields(config) or key in config:
        return
    refused(COMMANDS["lnexp.main"], scratch, [f"--config.{key}=1"], r"no key")


@pytest.mark.parametrize(
    "value",
    ["", "missing.py", "README.md", "configs/pimnist.py:nosuchvariant", "configs"],
)
def test_a_bad_config_file_is_refused(value, scratch):
    command = Command("lnexp.main", ("--workdir={}/run",))
    refused(command, scratch, [f"--config={value}"], r"config")


def test_the_config_flag_is_config_flags():
    flag = defined_flags(COMMANDS["lnexp.main"])[cli.CONFIG_FLAG]
    assert config_flags.config_flags.is_config_flag(flag)


# ------------------------------------------------- the cases found by hand, through the command


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ("--config.model.hidden_sizes=(a,b)", "model.hidden_sizes"),
        ("--config.optimizer.learning_rate=inf", "optimizer.learning_rate"),
        ("--config.model.norm=Layer", "model.norm"),
    ],
)
def test_the_reported_cases_fail_before_the_run_directory(override, names, tmp_path):
    """The issue's cases, as a user meets them: a subprocess, the real command."""
    import subprocess
    import sys

    workdir = tmp_path / "run"
    argv = [sys.executable, "-m", "lnexp.main", f"--config={REPO}/configs/pimnist.py:tiny"]
    result = subprocess.run(
        [*argv, f"--workdir={workdir}", override], capture_output=True, text=True, cwd=REPO
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], lines
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("config", "override", "names"),
    [
        ("transformer", "--config.model.num_heads=7", "num_heads=7 does not divide"),
        ("seqmnist", "--config.model.norm=cell", "for GRUCell"),
        ("pimnist", "--config.data.dir={}/missing", "does not exist"),
        ("pimnist", "--config.batch_size=100000", "fewer than one batch"),
    ],
)
def test_what_needs_the_model_or_the_data_is_refused_before_the_run_directory(
    config, override, names, tiny_mnist_dir, tmp_path
):
    """The real ``main``: the model built abstractly at parse time, the data read before the run
    directory is created."""
    from lnexp import main as command

    workdir = tmp_path / "run"
    argv = ["lnexp.main", f"--config={REPO}/configs/{config}.py", f"--workdir={workdir}"]
    if config == "pimnist" and "data.dir" not in override:
        argv.append(f"--config.data.dir={tiny_mnist_dir}")
    argv.append(override.format(tmp_path))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.call(command.main, argv, command.define_flags)
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1 and names in lines[0], err.getvalue()
    assert not workdir.exists()


# ------------------------------------------------ what needs the runs a command reads, refused


@pytest.mark.parametrize(
    ("name", "args", "names"),
    [
        ("scripts/compare.py", ["--workdir={grid}", "--report", "--metric=nope"], "--metric"),
        ("scripts/compare.py", ["--workdir={grid}", "--report", "--lines=nope"], "--lines"),
        ("scripts/compare.py", ["--workdir={mixed}", "--report"], "--metric=NAME --metrics="),
        ("scripts/compare.py", ["--workdir={grid}", "--report", "--at_epoch=999"], "--at_epoch"),
        ("lnexp.reporting.tuning", ["--workdir={grid}", "--key=nope"], "--key"),
        ("lnexp.reporting.tuning", ["--workdir={grid}", "--by=nope"], "--by"),
        ("lnexp.studies.transformer.report", ["--norms={grid}", "--out={tmp}/out"], "Transformer"),
        (
            "scripts/bench.py",
            ["--sections=norms,transformer", "--transformer_config=configs/transformer.py:xyz"],
            "--transformer_config",
        ),
        ("lnexp.data.download", ["mnist", ""], "DIR"),
        (
            "lnexp.main",
            [
                f"--config={REPO}/configs/pimnist.py",
                "--workdir={tmp}/run",
                "--config.model.norm.x=1",
            ],
            "--config.model.norm.x=1",
        ),  # fmt: skip
        (
            "lnexp.main",
            [f"--config={REPO}/configs/pimnist.py", "--workdir={tmp}/run", "--config.or=1"],
            "no key 'or'",
        ),
        (
            "lnexp.main",
            [
                f"--config={REPO}/configs/pimnist.py",
                "--workdir={tmp}/run",
                "--coordinator_address=garbage",
                "--num_processes=2",
                "--process_id=0",
            ],
            "HOST:PORT",
        ),  # fmt: skip
    ],
)
def test_what_the_runs_or_the_settings_cannot_take_is_one_error(name, args, names, tmp_path):
    """Checks that need more than a flag's kind (the runs a report reads, a config a bench
    section loads), found by the fuzzer's first run: one paragraph, exit 2, nothing written."""
    import shutil

    grid = shutil.copytree(REPO / "results" / "fig6_ablation", tmp_path / "grid")
    # Runs of two studies (PI-MNIST's and skip-thoughts'): no default metric fits both.
    mixed = shutil.copytree(REPO / "results" / "skipthought_30k", tmp_path / "mixed")
    cell = next(grid.glob("model.norm=*"))
    shutil.copytree(cell, mixed / cell.name)
    command = COMMANDS[name]
    module = command.load()
    argv = [name, *(a.format(grid=grid, mixed=mixed, tmp=tmp_path) for a in args)]
    before = tree(tmp_path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.chdir(REPO):
        status = cli.call(
            module.main, argv, module.define_flags, takes_arguments=command.takes_arguments
        )
    lines = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
    assert status == 2 and len(lines) == 1 and names in lines[0], err.getvalue()
    assert "Traceback" not in err.getvalue()
    assert tree(tmp_path) == before
