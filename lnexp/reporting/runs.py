"""Reading a grid's run directories ``WORKDIR/<cell>/seed=<s>/`` (config and metric records,
one :class:`Run` each), and :func:`export` to copy them, without checkpoints, for committing."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flax.traverse_util import flatten_dict

from lnexp.errors import UserError
from lnexp.training.run_dir import RunDir


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The evaluation records of a run directory."""
    return RunDir(run_dir).records()


@dataclasses.dataclass
class Run:
    cell: str
    seed: int
    config: dict[str, Any]  # flattened config.json
    records: list[dict[str, Any]]

    def curve(self, metric: str, x: str = "epoch") -> tuple[np.ndarray, np.ndarray]:
        """``(x values, metric values)`` over the run's records; ``x`` is epoch or step."""
        rows = [r for r in self.records if metric in r]
        return np.array([r[x] for r in rows]), np.array([r[metric] for r in rows])

    @property
    def x_axis(self) -> str:
        """Steps for runs whose epochs are fixed step counts (``steps_per_epoch``), else epochs."""
        return "step" if self.config.get("steps_per_epoch") else "epoch"


def find_runs(workdir: Path) -> list[Run]:
    """Every run directory ``WORKDIR/<cell>/seed=<s>/`` that has metrics."""
    runs = []
    for config_path in sorted(workdir.glob("*/seed=*/config.json")):
        run_dir = RunDir(config_path.parent)
        records = run_dir.records()
        if records:
            config = flatten_dict(run_dir.read_config(), sep=".")
            runs.append(Run(config_path.parent.parent.name, config["seed"], config, records))
    return runs


def check_names(
    runs: Sequence[Run],
    *,
    keys: Mapping[str, Sequence[str]] = {},
    metrics: Mapping[str, Sequence[str]] = {},
) -> None:
    """Refuses a config key that no run's config has, or a metric that no run's records hold,
    naming the flag it came from (``{'--by': ['model.norm'], ...}``) and what there is.

    Raises:
        UserError: for the first such name.
    """
    have_keys = set().union(*(r.config for r in runs))
    have_metrics = set().union(*(rec for r in runs for rec in r.records)) - {"epoch", "step"}
    for kind, wanted, have in (("key", keys, have_keys), ("metric", metrics, have_metrics)):
        for flag, names in wanted.items():
            unknown = [n for n in names if n not in have]
            if unknown:
                listing = ", ".join(sorted(have)[:40])
                raise UserError(
                    f"{flag}: no run has the {kind} {unknown[0]!r}. The runs have: {listing}."
                )


def export(workdir: Path, dest: Path) -> int:
    """Copies every run's ``config.json``, ``metrics.jsonl``, ``failed.txt`` (why a cell stopped,
    if it did) and ``eval/*.json`` (downstream evaluations; no checkpoints, no TensorBoard) from
    ``workdir`` to ``dest`` in the same layout, so results can be committed and reported with
    ``--report``. Returns the number of runs copied."""
    runs = 0
    for config_path in sorted(workdir.glob("*/seed=*/config.json")):
        run_dir = config_path.parent
        target = dest / run_dir.relative_to(workdir)
        target.mkdir(parents=True, exist_ok=True)
        names = ["config.json", "metrics.jsonl", "failed.txt"]
        names += [str(p.relative_to(run_dir)) for p in sorted(run_dir.glob("eval/*.json"))]
        for name in names:
            if (run_dir / name).exists():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / name, target / name)
        runs += 1
    return runs
