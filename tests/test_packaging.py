"""Tests of the package others install: the wheel's dependencies, extras, files and version.

The wheel is built once per run from a copy of the sources (pyproject.toml, README.md, lnexp/)
with the installed setuptools (``pip wheel --no-build-isolation``; the ``test`` extra installs
it), so nothing is downloaded and the checkout gets no build/ or egg-info. It is then imported
in a fresh interpreter that cannot see the checkout and that refuses every module outside the
dependencies of JAX, Flax and NumPy: the layers, cells and models need no more.
"""

from __future__ import annotations

import ast
import email.message
import email.parser
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

import lnexp

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
CORE = {"jax", "flax", "numpy"}
# What the experiments, data, reports and command lines import beyond the core.
EXPERIMENTS = {
    "optax",
    "orbax-checkpoint",
    "ml-collections",
    "absl-py",
    "tensorflow-datasets",
    "importlib-resources",
    "tensorboardx",
    "matplotlib",
    "sentencex",
    "tqdm",
    "scikit-learn",
    "scipy",
}
TEST = {"pytest", "pytest-xdist", "hypothesis", "ruff", "setuptools"}
# requirements.txt may end with the docs site's toolchain, which is not the package's.
DOCS_BLOCK = re.compile(r"#\s*Docs site", re.IGNORECASE)
# The modules a user of the library imports (the models without their experiments): every
# module of lnexp.models, and the layers and cells they are built from.
CORE_MODULES = [
    "lnexp",
    "lnexp.norms",
    "lnexp.cells",
    "lnexp.models",
    *sorted(f"lnexp.models.{p.stem}" for p in (REPO / "lnexp" / "models").glob("[!_]*.py")),
]
# What those modules may import by name: the core, the standard library and lnexp itself. The
# fresh interpreter below cannot tell an import of optax (or orbax) from Flax's own, since Flax
# depends on both; this list can.
CORE_IMPORTS = {"jax", "flax", "numpy", "lnexp", "__future__", *sys.stdlib_module_names}
_REQUIREMENT = re.compile(
    r"\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?"
    r"\s*(?P<spec>[^;]*?)\s*(?:;\s*(?P<marker>.*))?"
)


def module_file(module: str) -> Path:
    """The source file of an ``lnexp`` module in the checkout."""
    base = REPO.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def imported_at_load(module: str) -> set[str]:
    """The modules that ``module``'s source imports when it is loaded: its top-level statements
    (a function's own imports run only when it is called; ``if TYPE_CHECKING:`` blocks never)."""
    tree = ast.parse(module_file(module).read_text())
    found = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            # `from lnexp import cells` loads lnexp.cells.
            if node.module == "lnexp" or node.module.startswith("lnexp."):
                found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            todo += node.body + node.orelse
        elif isinstance(node, ast.Try):
            todo += node.body + node.orelse + node.finalbody
    return found


def canonical(name: str) -> str:
    """A distribution's name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(requirement: str) -> tuple[str, str, str, str]:
    """(name, extras, specifiers, marker) of a requirement, spelled one way."""
    m = _REQUIREMENT.fullmatch(requirement)
    assert m, f"not a requirement: {requirement!r}"
    extras = sorted(canonical(e.strip()) for e in (m["extras"] or "").split(",") if e.strip())
    spec = sorted(s.replace(" ", "") for s in m["spec"].split(",") if s.strip())
    return canonical(m["name"]), ",".join(extras), ",".join(spec), (m["marker"] or "").strip()


def requirement_set(requirements: list[str]) -> set[tuple[str, str, str]]:
    return {parse(r)[:3] for r in requirements}


def names(requirements: list[str]) -> set[str]:
    return {parse(r)[0] for r in requirements}


def extra_of(marker: str) -> str | None:
    m = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", marker)
    return canonical(m[1]) if m else None


def package_files() -> set[str]:
    """The files under lnexp/ that belong in the wheel: git's, else the tree's (no caches)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "lnexp"], cwd=REPO, capture_output=True, check=True
        ).stdout.decode()
        files = {f for f in listed.split("\0") if f and (REPO / f).is_file()}
    except (OSError, subprocess.CalledProcessError):
        files = set()
    if not files:
        files = {p.relative_to(REPO).as_posix() for p in (REPO / "lnexp").rglob("*") if p.is_file()}
    return {f for f in files if "__pycache__" not in f and not f.endswith(".pyc")}


def files_the_code_opens() -> set[str]:
    """Package files named in the code: ``resources.files("lnexp").joinpath("X")`` and
    ``Path(__file__).with_name("X")``."""
    found = set()
    for path in (REPO / "lnexp").rglob("*.py"):
        text = path.read_text()
        for m in re.finditer(r"""resources\.files\(\s*["']lnexp["']\s*\)\s*""", text):
            joined = re.match(r"""\.joinpath\(\s*["']([^"']+)["']""", text[m.end() :])
            assert joined, f"{path}: resources.files('lnexp') without a literal joinpath"
            found.add(f"lnexp/{joined[1]}")
        for m in re.finditer(r"""Path\(__file__\)\.with_name\(\s*["']([^"']+)["']""", text):
            found.add((path.parent / m[1]).relative_to(REPO).as_posix())
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(
        REPO / "lnexp", src / "lnexp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for name in ["pyproject.toml", "README.md", *(p.name for p in REPO.glob("LICEN[CS]E*"))]:
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index"]
    cmd += ["--no-build-isolation", "--check-build-dependencies", "-q", "-w", str(out), str(src)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=src, timeout=300)
    assert done.returncode == 0, (
        f"{' '.join(cmd)} failed (the build backend comes from the test extra: "
        f"pip install -r requirements.txt):\n{done.stdout}\n{done.stderr}"
    )
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        return email.parser.Parser().parsestr(z.read(name).decode())


def wheel_requirements(metadata: email.message.Message) -> dict[str | None, list[str]]:
    """The wheel's Requires-Dist by extra (None: the dependencies), markers of extras dropped."""
    by_extra: dict[str | None, list[str]] = {}
    for requirement in metadata.get_all("Requires-Dist") or []:
        name, extras, spec, marker = parse(requirement)
        line = f"{name}[{extras}]{spec}" if extras else f"{name}{spec}"
        by_extra.setdefault(extra_of(marker), []).append(line)
    return by_extra


def test_dependencies_are_jax_flax_numpy(metadata):
    requirements = wheel_requirements(metadata)
    assert names(requirements[None]) == CORE, requirements[None]
    assert requirement_set(requirements[None]) == requirement_set(
        PYPROJECT["project"]["dependencies"]
    )


def test_extras(metadata):
    extras = {canonical(e) for e in metadata.get_all("Provides-Extra") or []}
    assert {"experiments", "test", "tfds", "cuda12", "cuda13"} <= extras, extras
    requirements = wheel_requirements(metadata)
    assert EXPERIMENTS <= names(requirements["experiments"]), requirements["experiments"]
    assert TEST <= names(requirements["test"]), requirements["test"]
    assert not names(requirements["experiments"]) & CORE
    declared = PYPROJECT["project"]["optional-dependencies"]
    for extra, lines in declared.items():
        assert requirement_set(requirements[canonical(extra)]) == requirement_set(lines), extra
    # [tfds] is the fallback MNIST source alone, pinned as in [experiments].
    assert requirement_set(declared["tfds"]) <= requirement_set(declared["experiments"])


def test_requirements_txt_is_the_package_and_its_experiments_and_test_extras():
    lines = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if DOCS_BLOCK.match(line.strip()):
            break
        line = line.split("#", 1)[0].strip()
        if line:
            lines.append(line)
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    expected = [*project["dependencies"], *extras["experiments"], *extras["test"]]
    assert len(lines) == len(set(lines)), "a requirement listed twice in requirements.txt"
    assert requirement_set(lines) == requirement_set(expected), (
        f"requirements.txt only: {sorted(requirement_set(lines) - requirement_set(expected))}; "
        f"pyproject.toml only: {sorted(requirement_set(expected) - requirement_set(lines))}"
    )


def test_wheel_holds_the_package_and_its_data(wheel):
    with zipfile.ZipFile(wheel) as z:
        listed = [n for n in z.namelist() if not n.endswith("/")]
    top = {n.split("/", 1)[0] for n in listed}
    assert top == {"lnexp", f"lnexp-{lnexp.__version__}.dist-info"}, top
    in_wheel = {n for n in listed if n.startswith("lnexp/")}
    expected = package_files()
    data = {f for f in expected if not f.endswith(".py")}
    assert "lnexp/data/gutenberg_books.csv" in data
    assert len({f for f in data if re.fullmatch(r"lnexp/reference/[^/]+\.csv", f)}) >= 3
    opened = files_the_code_opens()
    assert len(opened) >= 4 and opened <= expected, sorted(opened - expected)
    assert in_wheel == expected, (
        f"missing from the wheel: {sorted(expected - in_wheel)}; "
        f"in the wheel only: {sorted(in_wheel - expected)}"
    )


def test_core_modules_import_only_jax_flax_numpy_and_the_standard_library():
    """Every module that the core modules load (lnexp's own followed) names only the core."""
    assert {"lnexp.models.draw", "lnexp.models.skipthought"} <= set(CORE_MODULES)
    seen, todo, outside = set(), list(CORE_MODULES), {}
    while todo:
        module = todo.pop()
        if module in seen or not module_file(module).is_file():
            continue  # `from lnexp.models import x` names x, which may be no module.
        seen.add(module)
        for name in imported_at_load(module):
            if name == "lnexp" or name.startswith("lnexp."):
                todo.append(name)
            elif name.partition(".")[0] not in CORE_IMPORTS:
                outside.setdefault(module, set()).add(name)
    assert not outside, f"imports beyond jax, flax and numpy: {outside}"


# Runs in `python -I` from an empty directory: the unpacked wheel first on sys.path, every
# module outside the dependencies of JAX, Flax and NumPy refused, as if they alone were there.
FRESH = textwrap.dedent(
    r"""
    import importlib, importlib.abc, importlib.metadata as md, json, re, sys
    from importlib import resources

    wheel_dir = sys.argv[1]
    sys.path.insert(0, wheel_dir)

    def canonical(name):
        return re.sub(r"[-_.]+", "-", name).lower()

    # What JAX, Flax and NumPy need, with the extras asked for; JAX with all of its extras (its
    # builds for accelerators: a CUDA machine's JAX loads its plugin).
    allowed, seen, todo = set(), set(), [("jax", None), ("flax", ()), ("numpy", ())]
    while todo:
        name, extras = todo.pop()
        if (canonical(name), extras) in seen:
            continue
        seen.add((canonical(name), extras))
        allowed.add(canonical(name))
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for requirement in requires:
            line, _, marker = requirement.partition(";")
            extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
            if extra and extras is not None and canonical(extra[1]) not in extras:
                continue
            req = re.match(r"\s*([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", line)
            wanted = (canonical(e.strip()) for e in (req[2] or "").split(",") if e.strip())
            todo.append((req[1], tuple(sorted(wanted))))
    refused = {
        module
        for module, dists in md.packages_distributions().items()
        if module != "lnexp" and not {canonical(d) for d in dists} & allowed
    }

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in refused:
                raise ModuleNotFoundError(f"{name}: not a dependency of jax, flax or numpy")
            return None

    sys.meta_path.insert(0, Refuse())
    for module in json.loads(sys.argv[2]):
        importlib.import_module(module)

    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import lnexp

    x = np.arange(12.0, dtype=np.float32).reshape(3, 4) ** 2
    y = np.asarray(lnexp.LayerNorm(4, rngs=nnx.Rngs(0))(jnp.asarray(x)))
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    files = resources.files("lnexp")
    unreadable = [f for f in json.loads(sys.argv[3]) if not files.joinpath(f).is_file()]
    dist = md.distribution("lnexp")
    print(json.dumps({
        "file": lnexp.__file__,
        "version": lnexp.__version__,
        "metadata_version": dist.version,
        "dist_at": str(dist.locate_file("")),
        "layer_norm_error": float(np.max(np.abs(y - expected))),
        "unreadable": unreadable,
    }))
    """
)


def test_wheel_imports_with_only_its_dependencies(wheel, tmp_path):
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(unpacked)
    data = sorted(f.removeprefix("lnexp/") for f in package_files() if not f.endswith(".py"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            FRESH,
            str(unpacked),
            json.dumps(CORE_MODULES),
            json.dumps(data),
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(seen["file"]).resolve().is_relative_to(unpacked.resolve()), seen["file"]
    assert Path(seen["dist_at"]).resolve() == unpacked.resolve(), seen["dist_at"]
    assert seen["version"] == seen["metadata_version"] == lnexp.__version__
    assert seen["layer_norm_error"] < 1e-4, seen
    assert seen["unreadable"] == [], seen["unreadable"]


def test_version_is_the_distributions(metadata):
    assert re.fullmatch(r"\d+\.\d+\.\d+([.-]?(a|b|rc|dev|post)\d*)*", lnexp.__version__)
    assert metadata["Version"] == lnexp.__version__
    installed = importlib.metadata.version("lnexp")
    assert installed == lnexp.__version__, (
        f"lnexp {lnexp.__version__} is installed as {installed}: pip install --no-deps -e ."
    )
