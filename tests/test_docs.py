"""The documentation: README.md's shape, the docs site's strict build, every relative link, every
command line (the program exists and defines every flag the command passes) and the README's
example of the modules.

Commands are read from the fenced ``bash``/``sh``/``shell``/``console`` (and unlabeled) blocks of
README.md and docs/**/*.md, from commands indented as code outside them, and from inline code
spans that start with ``python``, ``bash scripts/`` or ``scripts/``; backslash-continued lines
are joined. A program's flags are what its absl ``--help`` lists (one subprocess for all the
programs, cached); ``--config.KEY=VALUE`` overrides and the ``KEY=...`` of ``--grid`` must be
keys of the config file the command names (``--config``). Placeholders (``PATH_TO_MNIST``,
``DIR``, ``KEY``) are fine as values. Every command of the README's table answers ``--help``
with exit status 0 and lists the flags the documentation passes it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
OWN_PROJECT_HEADING = "## Use the modules in your own Flax project"
MAX_README_LINES = 200
OWN_PROJECT_BEFORE_LINE = 80

COMMAND_LANGS = {"", "bash", "sh", "shell", "console"}
# The config a program reads when a command names none (``--config.KEY`` overrides apply to it).
DEFAULT_CONFIGS = {("-m", "lnexp.studies.transformer.gradients"): "configs/transformer.py"}
# Flags whose values are KEY=VALUE overrides of the command's config.
OVERRIDE_FLAGS = ("grid",)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ------------------------------------------------------------------------------- Markdown


@dataclass
class Markdown:
    blocks: list[tuple[str, int, list[str]]]  # (language, line number of the first line, lines)
    prose: list[tuple[int, str]]  # (line number, line) outside fenced blocks


_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


@functools.cache
def parse_markdown(path: Path) -> Markdown:
    blocks, prose = [], []
    fence, lang, start, body = None, "", 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if fence is None:
            match = _FENCE.match(line)
            if match:
                fence, lang, start, body = match.group(1), match.group(2).lower(), number + 1, []
            else:
                prose.append((number, line))
        elif line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append((lang, start, body))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{_rel(path)}: a code block opened at line {start - 1} never closes"
    return Markdown(blocks, prose)


def paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Prose lines joined into paragraphs: (first line number, text with newlines)."""
    out, start, lines = [], None, []
    for number, line in [*prose, (None, "")]:
        if line.strip():
            start = number if start is None else start
            lines.append(line)
        elif lines:
            out.append((start, "\n".join(lines)))
            start, lines = None, []
    return out


def join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    out, pending, start = [], "", None
    for number, line in lines:
        start = number if start is None else start
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending, start = "", None
    if pending:
        out.append((start, pending))
    return out


_COMMAND_START = re.compile(r"^(python3? |bash scripts/|sh scripts/|scripts/)")


def commands(path: Path) -> list[tuple[int, str]]:
    """Every command line of a Markdown file: (line number, command)."""
    md = parse_markdown(path)
    found = []
    for lang, start, body in md.blocks:
        if lang not in COMMAND_LANGS:
            continue
        lines = list(enumerate(body, start))
        if lang == "console":
            lines = [(n, line.strip()[2:]) for n, line in lines if line.strip().startswith("$ ")]
        found += [(n, c.strip()) for n, c in join_continuations(lines) if c.strip()]
    # Commands indented as code (4 spaces) outside the fenced blocks.
    indented = [(n, line) for n, line in md.prose if line.startswith("    ")]
    for number, line in join_continuations(indented):
        if _COMMAND_START.match(line.strip()):
            found.append((number, line.strip()))
    # Inline code spans that are commands.
    for number, text in paragraphs(md.prose):
        for match in re.finditer(r"`([^`]+)`", text):
            span = " ".join(match.group(1).split())
            if _COMMAND_START.match(span):
                found.append((number + text.count("\n", 0, match.start()), span))
    return found


def slugify(heading: str) -> str:
    """A heading's anchor, as GitHub and mkdocs' toc make it (for the headings used here)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # Links: their text.
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"\s+", "-", text)


def anchors(path: Path) -> set[str]:
    return {
        slugify(line.lstrip("#"))
        for _, line in parse_markdown(path).prose
        if re.match(r"^#{1,6} ", line)
    }


# ---------------------------------------------------------------------------- (a) README


def test_readme_fits_a_screen_and_starts_the_modules_section_early():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; at most {MAX_README_LINES}: move the rest to docs/"
    )
    starts = [n for n, line in enumerate(lines, 1) if line.strip() == OWN_PROJECT_HEADING]
    assert starts, f"README.md has no section {OWN_PROJECT_HEADING!r}"
    assert starts[0] < OWN_PROJECT_BEFORE_LINE, (
        f"README.md's {OWN_PROJECT_HEADING!r} starts at line {starts[0]}; it must start before "
        f"line {OWN_PROJECT_BEFORE_LINE}"
    )


def test_readme_example_runs(tmp_path):
    """The README's example of the modules is correct Python and prints what it says."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(OWN_PROJECT_HEADING) :]
    match = re.search(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README.md: no ```python block under {OWN_PROJECT_HEADING!r}"
    code = match.group(1)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert result.returncode == 0, f"README.md's example failed:\n{result.stderr[-3000:]}"
    expected = re.findall(r"^print\(.*\)\s*#\s*(.+)$", code, flags=re.MULTILINE)
    assert result.stdout.split("\n")[: len(expected)] == expected, (
        f"README.md's example printed {result.stdout!r}; its comments say {expected}"
    )


# -------------------------------------------------------------------------- (b) the site


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs (requirements.txt) builds the docs site")
    pytest.importorskip("mkdocstrings")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-6000:]}"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    assert "lnexp.norms.LayerNorm" in api, "the API page has no lnexp.norms.LayerNorm"
    # A figure linked from a study page by its path in the repository is in the site.
    assert (site / "_repo" / "results" / "fig6" / "figure.png").is_file()


# -------------------------------------------------------------------------- (c) links

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def test_relative_links_point_to_existing_files():
    problems = []
    for path in markdown_files():
        for number, text in paragraphs(parse_markdown(path).prose):
            text = re.sub(r"`[^`]*`", lambda m: re.sub(r"[^\n]", " ", m.group()), text)  # Not code.
            for match in _LINK.finditer(text):
                target = match.group(1)
                line = number + text.count("\n", 0, match.start())
                if "://" in target or target.startswith("mailto:"):
                    continue
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                where = f"{_rel(path)}:{line}: link {target!r}"
                if not linked.is_file():
                    kind = "a directory" if linked.is_dir() else "missing"
                    problems.append(f"{where}: the target is {kind} (link a file)")
                elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                    problems.append(f"{where}: {linked.name} has no heading #{anchor}")
    assert not problems, "broken links:\n" + "\n".join(problems)


# ------------------------------------------------------------------------ (d) commands


@dataclass(frozen=True)
class Program:
    """A program's command-line interface, read from its ``--help``."""

    flags: frozenset[str]
    subcommands: tuple[str, ...]


def _option_names(help_text: str) -> set[str]:
    names = set()
    for line in help_text.splitlines():
        absl = re.match(r"^\s+--(\[no\])?([\w.-]+):", line)
        if absl:  # absl: "  --[no]claims: help".
            names.add(absl.group(2))
            if absl.group(1):
                names.add("no" + absl.group(2))
    return names


# Runs each program's --help in turn in one process (the imports, JAX's above all, once): absl's
# flags each program defines are removed again after it, so the next one defines its own.
_HELP_RUNNER = r"""
import contextlib, io, json, runpy, sys
from absl import app, flags, logging

app.define_help_flags()  # absl defines --help once per process: before the snapshot below.

results = []
for argv in json.load(sys.stdin):
    before, buf, code, saved_argv = set(flags.FLAGS), io.StringIO(), 0, sys.argv[:]
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:], "--help"]
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = [argv[0], *argv[1:], "--help"]
                runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except BaseException as e:  # Reported; the program is then run alone.
        code = -1
        buf.write(repr(e))
    finally:
        sys.argv = saved_argv
        for name in set(flags.FLAGS) - before:
            delattr(flags.FLAGS, name)
        flags.FLAGS.unparse_flags()
    results.append({"argv": argv, "code": code, "text": buf.getvalue()})
sys.stdout.write(json.dumps(results))
"""

_help_texts: dict[tuple[str, ...], tuple[int, str]] = {}


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu"}


def read_help(argvs: list[tuple[str, ...]]) -> None:
    """Reads the ``--help`` of every program in ``argvs`` into the cache, in one process."""
    todo = [list(a) for a in argvs if a not in _help_texts]
    if not todo:
        return
    result = subprocess.run(
        [sys.executable, "-c", _HELP_RUNNER],
        input=json.dumps(todo),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    if result.returncode == 0:
        for entry in json.loads(result.stdout):
            _help_texts[tuple(entry["argv"])] = (entry["code"], entry["text"])


def _help_alone(argv: tuple[str, ...]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, *argv, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )
    return result.returncode, result.stdout + result.stderr


def _parse_program(code: int, text: str) -> Program | None:
    flags = _option_names(text)
    if code not in (0, 1) or not flags:
        return None
    usage = next((line for line in text.splitlines() if line.startswith("usage:")), "")
    choices = re.search(r"\{([\w,-]+)\}", usage)
    return Program(frozenset(flags), tuple(choices.group(1).split(",")) if choices else ())


@functools.cache
def program(argv: tuple[str, ...]) -> Program:
    """``argv`` (``("-m", "lnexp.main")``, ``("scripts/compare.py",)``, with a subcommand):
    from the shared run of :func:`read_help`, else from its own ``python ARGV --help``."""
    if argv in _help_texts:
        parsed = _parse_program(*_help_texts[argv])
        if parsed is not None:
            return parsed
    code, text = _help_alone(argv)
    parsed = _parse_program(code, text)
    if parsed is None:
        raise AssertionError(
            f"could not read the flags of `python {' '.join(argv)} --help` "
            f"(exit status {code}):\n{text[-2000:]}"
        )
    return parsed


@functools.cache
def config_keys(spec: str):
    from lnexp.config import load_config

    path, sep, arg = spec.partition(":")
    return load_config(str(REPO / path) + sep + arg)


def _is_placeholder(text: str) -> bool:
    """``PATH_TO_MNIST``, ``DIR``, ``KEY``, ``...``: not a real value."""
    return not re.search(r"[a-z]", text)


def _has_key(config, key: str) -> bool:
    import ml_collections

    node = config
    for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            return False
        node = node[part]
    return True


@dataclass
class Command:
    where: str  # file:line
    text: str
    argv: tuple[str, ...]  # the program: ("-m", module) or (script,)
    args: list[str]
    kind: str  # "python" or "shell"


_SEPARATORS = {"&&", "||", ";", "|"}


def split_commands(where: str, text: str, problems: list[str]) -> list[Command]:
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as e:
        problems.append(f"{where}: `{text}`: cannot split it as a shell line ({e})")
        return []
    tokens = [t.removeprefix("[").removesuffix("]") for t in tokens]  # usage's [--url URL]
    text = " ".join(text.split())  # As shown in messages.
    out, current = [], []
    for token in [*tokens, ";"]:
        if token not in _SEPARATORS:
            current.append(token)
            continue
        while current and re.match(r"^[A-Z_][A-Z0-9_]*=", current[0]):  # VAR=value cmd
            current.pop(0)
        if len(current) >= 2 and current[0] in ("python", "python3"):
            if current[1] == "-m" and len(current) >= 3:
                out.append(Command(where, text, ("-m", current[2]), current[3:], "python"))
            elif current[1].endswith(".py"):
                out.append(Command(where, text, (current[1],), current[2:], "python"))
        elif len(current) >= 2 and current[0] in ("bash", "sh") and current[1].endswith(".sh"):
            out.append(Command(where, text, (current[1],), current[2:], "shell"))
        elif current and current[0].endswith(".sh"):
            out.append(Command(where, text, (current[0],), current[1:], "shell"))
        current = []
    return out


def _program_exists(argv: tuple[str, ...]) -> bool:
    if argv[0] != "-m":
        return (REPO / argv[0]).is_file()
    module = argv[1]
    if not module.startswith("lnexp"):
        import importlib.util

        return importlib.util.find_spec(module.split(".")[0]) is not None
    base = REPO / module.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


def _checked(command: Command) -> bool:
    """Whether the command's flags are ours to check (lnexp's modules and the scripts)."""
    return command.argv[0] != "-m" or command.argv[1].startswith("lnexp")


def all_commands(problems: list[str]) -> list[Command]:
    found = []
    for path in markdown_files():
        for number, text in commands(path):
            found += split_commands(f"{_rel(path)}:{number}", text, problems)
    return found


def _flag_tokens(args: list[str]) -> list[tuple[str, str | None]]:
    """(name, value) for every ``--name[=value]``; a value in the next token is taken when that
    token is not a flag (it may be a positional: only --config and --grid use it)."""
    out = []
    for i, token in enumerate(args):
        if not token.startswith("--") or len(token) == 2:
            continue
        name, sep, value = token[2:].partition("=")
        if not sep and i + 1 < len(args) and not args[i + 1].startswith("-"):
            value = args[i + 1]
        out.append((name, value if (sep or value) else None))
    return out


def check_python_command(command: Command, problems: list[str]) -> None:
    show = f"{command.where}: `{command.text}`"
    argv = command.argv
    sub = None
    top = program(argv)
    if top.subcommands:
        positionals = [a for a in command.args if not a.startswith("-")]
        if not positionals or positionals[0] not in top.subcommands:
            got = positionals[0] if positionals else "nothing"
            problems.append(
                f"{show}: python {' '.join(argv)} takes a subcommand "
                f"({', '.join(top.subcommands)}), not {got}"
            )
            return
        sub = positionals[0]
    interface = program((*argv, sub)) if sub else top
    name_of = f"python {' '.join(argv)}{' ' + sub if sub else ''}"
    tokens = _flag_tokens(command.args)
    config_spec = next((v for n, v in tokens if n == "config"), None)
    config_spec = config_spec or DEFAULT_CONFIGS.get(argv)
    overrides = []
    for name, value in tokens:
        head = name.split(".", 1)[0]
        if "." in name and head in interface.flags:  # --config.model.norm=batch
            flag = f"--{name}={value}" if value is not None else f"--{name}"
            overrides.append((flag, name.split(".", 1)[1]))
        elif name not in interface.flags:
            problems.append(
                f"{show}: --{name} is not a flag of {name_of} "
                f"(its flags: {', '.join(sorted(interface.flags))})"
            )
        elif name in OVERRIDE_FLAGS and value is not None:
            overrides.append((f"--{name} {value}", value.partition("=")[0]))
    overrides = [(flag, key) for flag, key in overrides if not _is_placeholder(key)]
    if not overrides or config_spec is None or _is_placeholder(config_spec):
        return
    if not (REPO / config_spec.partition(":")[0]).is_file():
        problems.append(f"{show}: the config file {config_spec} does not exist")
        return
    config = config_keys(config_spec)
    for flag, key in overrides:
        if not _has_key(config, key):
            problems.append(f"{show}: {flag}: {config_spec} has no key {key!r}")


def check_shell_command(command: Command, problems: list[str]) -> None:
    script = (REPO / command.argv[0]).read_text(encoding="utf-8")
    for name, _ in _flag_tokens(command.args):
        if not re.search(rf"(?<![\w-])--{re.escape(name)}(?![\w-])", script):
            problems.append(
                f"{command.where}: `{command.text}`: --{name} is not an option of "
                f"{command.argv[0]} (not in the script)"
            )


def check_commands(found: list[Command], problems: list[str]) -> None:
    runnable = []
    for command in found:
        if not _program_exists(command.argv):
            what = " ".join(command.argv)
            problems.append(f"{command.where}: `{command.text}`: {what} does not exist")
        elif command.kind == "shell":
            check_shell_command(command, problems)
        elif _checked(command):
            runnable.append(command)
    # Every program's --help in one process first (each would import JAX: seconds), then the
    # subcommands of those that have them.
    read_help(sorted({c.argv for c in runnable}))
    subcommands = set()
    for command in runnable:
        parsed = _parse_program(*_help_texts.get(command.argv, (2, "")))
        positionals = [a for a in command.args if not a.startswith("-")]
        if parsed and parsed.subcommands and positionals and positionals[0] in parsed.subcommands:
            subcommands.add((*command.argv, positionals[0]))
    read_help(sorted(subcommands))
    for command in runnable:
        try:
            check_python_command(command, problems)
        except AssertionError as e:
            problems.append(f"{command.where}: `{command.text}`: {e}")


@pytest.mark.slow
def test_commands_name_existing_programs_and_flags():
    problems: list[str] = []
    found = all_commands(problems)
    assert len(found) >= 20, f"only {len(found)} commands found in README.md and docs/"
    names = {" ".join(c.argv) for c in found}
    for expected in ("-m lnexp.main", "scripts/compare.py", "scripts/bench.py"):
        assert expected in names, f"no command runs {expected}"
    check_commands(found, problems)
    assert not problems, "commands in the docs that would not run:\n" + "\n".join(problems)


def test_a_broken_command_is_reported(tmp_path):
    """The checker itself: a misspelled flag, a config key the config lacks, a missing script."""
    page = tmp_path / "page.md"
    page.write_text(
        "```bash\n"
        "python -m lnexp.main --config=configs/pimnist.py --workdir=runs/x \\\n"
        "    --config.model.nrom=batch --wrokdir=runs/y\n"
        "python scripts/no_such_script.py --flag\n"
        "python scripts/compare.py --config configs/seqmnist.py --grid model.cel=gru,lstm\n"
        "```\n"
    )
    problems: list[str] = []
    found = []
    for number, text in commands(page):
        found += split_commands(f"page.md:{number}", text, problems)
    assert [c.argv for c in found] == [
        ("-m", "lnexp.main"),
        ("scripts/no_such_script.py",),
        ("scripts/compare.py",),
    ]
    check_commands(found, problems)
    text = "\n".join(problems)
    assert "page.md:2:" in text and "--wrokdir is not a flag of python -m lnexp.main" in text
    assert "--config.model.nrom=batch: configs/pimnist.py has no key 'model.nrom'" in text
    assert "--workdir=runs/x --config.model.nrom=batch --wrokdir=runs/y`" in text  # Joined.
    assert "scripts/no_such_script.py does not exist" in text
    assert "configs/seqmnist.py has no key 'model.cel'" in text
    assert len(problems) == 4, text


# ------------------------------------------------------------- (e) the README's commands


def readme_table_commands() -> list[str]:
    """The commands of the README's "Commands" table (its first column), as written."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Commands\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def help_argv(command: str) -> tuple[tuple[str, ...], list[str]]:
    """The program part of a documented command (the words before its first flag or
    placeholder: ``('-m', 'lnexp.data.download', 'mnist')``, ``('scripts/compare.py',)``,
    ``('bash', 'scripts/fig6_ablation.sh')``) and the command line that asks it for --help."""
    words = shlex.split(command)
    program = []
    for word in words[1:] if words[0] in ("python", "python3") else words:
        if (word.startswith("-") and word != "-m") or _is_placeholder(word):
            break
        program.append(word)
    if words[0] in ("python", "python3"):
        argv = [sys.executable, *program, "--help"]
    elif words[0] == "mkdocs":
        argv = [sys.executable, "-m", "mkdocs", *program[1:], "--help"]
    else:
        argv = [*program, "--help"]
    return tuple(program), argv


@pytest.mark.slow
def test_every_readme_command_answers_help_with_the_flags_the_docs_use():
    """Each command of the README's table, with --help, in a subprocess (all at once): exit
    status 0, and every flag that a command of the README or docs/ passes that program is in
    its help text."""
    import concurrent.futures

    table = readme_table_commands()
    assert len(table) >= 15, f"only {len(table)} commands in the README's table"
    used: dict[tuple[str, ...], set[str]] = {}
    for command in all_commands([]):
        key = command.argv if command.kind == "python" else ("bash", command.argv[0])
        used.setdefault(key, set()).update(name for name, _ in _flag_tokens(command.args))
    jobs = {}
    for command in table:
        program, argv = help_argv(command)
        if program[:2] == ("-m", "mkdocs") or program[:1] == ("mkdocs",):
            pytest.importorskip("mkdocs", reason="mkdocs (requirements.txt) builds the docs site")
        jobs[command] = (program, argv)

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=300, env=_env()
        )

    workers = max(2, os.cpu_count() or 2)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = {c: pool.submit(run, argv) for c, (_, argv) in jobs.items()}
        results = {c: future.result() for c, future in results.items()}

    problems = []
    for command, (program, argv) in jobs.items():
        result = results[command]
        text = result.stdout + result.stderr
        shown = f"`{' '.join(argv[1:] if argv[0] == sys.executable else argv)}`"
        if result.returncode != 0:
            problems.append(f"{shown}: exit status {result.returncode}, not 0:\n{text}")
            continue
        key = program[:2] if program[:1] == ("-m",) else program[:1]
        if program[:1] == ("bash",):
            key = program[:2]
        names = set(used.get(key, set()))
        names |= {w.lstrip("-").partition("=")[0] for w in shlex.split(command) if w[:1] == "-"}
        names -= {"m"}
        for name in sorted(names):
            name = name.split(".", 1)[0]  # --config.model.norm: --config
            dashes = "-" if len(name) == 1 else "--"
            if not re.search(rf"{dashes}(\[no\])?{re.escape(name)}(?![\w-])", text):
                problems.append(f"{shown}: its help does not list {dashes}{name}")
    assert not problems, "\n".join(problems)


def test_the_readme_table_lists_every_program_the_docs_use():
    """ "The commands in the README table are all of them": every program a command of the
    README or docs/ runs (but Python's own venv) has a row, so the --help test above runs it."""
    programs = {help_argv(command)[0] for command in readme_table_commands()}

    def listed(used: tuple[str, ...]) -> bool:
        return any(tuple(p[: len(used)]) == used or used[: len(p)] == tuple(p) for p in programs)

    used = {c.argv if c.kind == "python" else ("bash", c.argv[0]) for c in all_commands([])}
    assert sorted(u for u in used if not listed(tuple(u)) and tuple(u) != ("-m", "venv")) == []


def _workdir_in_results(args: list[str]) -> str | None:
    for i, token in enumerate(args):
        value = token.partition("=")[2] if token.startswith("--workdir=") else None
        if token == "--workdir" and i + 1 < len(args):
            value = args[i + 1]
        if value and value.startswith("results/"):
            return value
    return None


def test_documented_reports_on_committed_results_run_as_written(tmp_path):
    """The quick commands of the README and docs/, as written: every report they run on a
    folder of results/ (``scripts/compare.py --report``, the ablation's report), each on a copy
    of that folder. Each exits 0 and, unless it asks for another epoch, rewrites the committed
    markdown reports unchanged: the reports regenerate from the committed runs."""
    import concurrent.futures
    import shutil

    reports = {("scripts/compare.py",), ("-m", "lnexp.studies.pimnist.ablation")}
    jobs = {}
    for command in all_commands([]):
        workdir = _workdir_in_results(command.args)
        if command.argv not in reports or workdir is None or "--export" in command.args:
            continue
        if command.argv == ("scripts/compare.py",) and "--report" not in command.args:
            continue
        jobs.setdefault(command.text, (command, workdir))
    assert len(jobs) >= 3, sorted(jobs)

    def run(index: int, command: Command, workdir: str):
        root = tmp_path / str(index)
        shutil.copytree(REPO / workdir, root / workdir)
        for name in ("configs", "scripts"):
            (root / name).symlink_to(REPO / name)
        done = subprocess.run(
            [sys.executable, *command.argv, *command.args],
            cwd=root, capture_output=True, text=True, timeout=300, env=_env(),
        )  # fmt: skip
        return root, done

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            text: pool.submit(run, i, command, workdir)
            for i, (text, (command, workdir)) in enumerate(sorted(jobs.items()))
        }
    problems = []
    for text, future in futures.items():
        command, workdir = jobs[text]
        root, done = future.result()
        if done.returncode != 0:
            problems.append(f"{command.where}: `{text}` exited {done.returncode}:\n{done.stderr}")
            continue
        if any(a.startswith("--at_epoch") for a in command.args):
            continue
        for report in sorted((REPO / workdir).glob("*.md")):
            written = root / workdir / report.name
            if written.read_text(encoding="utf-8") != report.read_text(encoding="utf-8"):
                problems.append(f"{command.where}: `{text}` rewrote {workdir}/{report.name}")
    assert not problems, "\n\n".join(problems)
