"""Grids of runs -> the paper's figures and tables (the library behind ``scripts/compare.py``).

A grid is the product of ``--grid KEY=V1,V2,...`` axes and ``--seeds N``; every cell is an
ordinary run directory ``WORKDIR/<k1=v1,k2=v2>/seed=<s>/`` trained by
:func:`lnexp.training.train_and_evaluate`, or with the other seeds of its configuration by
:func:`lnexp.training.train_seeds` (so it resumes, and finished cells are skipped).
:func:`report` reads whatever run directories exist and writes

* ``figure.png``: one column per value of the column key (default: the second grid key, e.g.
  batch size), one row per metric (default: training NLL on a log scale, test error); one line
  per value of the line key (default: the first grid key, e.g. the normalization) with the mean
  over seeds and a band from the lowest to the highest seed; the paper's curves dashed.
* ``summary.md`` and ``summary.json``: per cell the final and best test error (mean ± std over
  seeds), the epoch of the best, wall time, and the paper's value at epoch 64.

The paper's curves are the runs' experiment's (:func:`lnexp.experiments.reference_curve`); this
module knows no experiment by name.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from flax.traverse_util import flatten_dict

from lnexp import experiments
from lnexp.config import load_config, parse_assignment
from lnexp.errors import UserError
from lnexp.training.run_dir import RunDir

# --------------------------------------------------------------------------------------------
# The grid.


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of a grid: the grid values it sets and its seed."""

    values: tuple[tuple[str, str], ...]
    seed: int

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values) or "base"

    def run_dir(self, workdir: Path) -> Path:
        return workdir / self.name / f"seed={self.seed}"


def expand_grid(grid: Sequence[str], seeds: int) -> list[Cell]:
    """``['model.norm=none,layer', 'batch_size=128,4']`` x seeds -> every cell."""
    axes = []
    for text in grid:
        key, values = parse_assignment(text)
        axes.append([(key, v.strip()) for v in values.split(",") if v.strip()])
    return [
        Cell(tuple(values), seed) for values in itertools.product(*axes) for seed in range(seeds)
    ]


def _finished(run_dir: Path, num_epochs: int) -> bool:
    records = read_metrics(run_dir)
    return bool(records) and records[-1]["epoch"] >= num_epochs


def run_grid(
    config_path: str,
    workdir: Path,
    cells: Sequence[Cell],
    shared: Sequence[tuple[str, str]] = (),
    log=print,
    *,
    vectorize_seeds: bool = False,
) -> list[tuple[Cell, str]]:
    """Trains every unfinished cell, one after the other; returns the cells that failed.

    With ``vectorize_seeds``, the unfinished seeds of a configuration that resume from the same
    step are trained together in one program (:func:`lnexp.training.train_seeds`). If that fails
    (e.g. one seed diverges), they are trained one after the other, so that the other seeds
    still finish and each failure is reported for its own seed.
    """
    from lnexp.training import loop

    pending = []
    for i, cell in enumerate(cells, 1):
        config = load_config(config_path, [*shared, *cell.values, ("seed", str(cell.seed))])
        run_dir = cell.run_dir(workdir)
        if _finished(run_dir, config.num_epochs):
            log(f"[{i}/{len(cells)}] {run_dir} is finished; skipped.")
            continue
        pending.append((i, cell, config, run_dir))
    groups: dict[Any, list[tuple[int, Cell, ml_collections.ConfigDict, Path]]] = {}
    for i, cell, config, run_dir in pending:
        resume_step = max(RunDir(run_dir).checkpoint_steps(), default=0)
        key = (cell.values, resume_step) if vectorize_seeds else i
        groups.setdefault(key, []).append((i, cell, config, run_dir))

    failures = []
    for group in groups.values():
        if len(group) > 1:
            seeds = [cell.seed for _, cell, _, _ in group]
            where = f"[{group[0][0]}-{group[-1][0]}/{len(cells)}] {group[0][1].name}"
            log(f"{where}: training seeds {', '.join(map(str, seeds))} together")
            try:
                loop.train_seeds(group[0][2], seeds, [run_dir for *_, run_dir in group])
                continue
            except UserError as e:
                log(f"{where}: training the seeds together failed: {e} Training them one by one.")
        for i, cell, config, run_dir in group:
            log(f"[{i}/{len(cells)}] training {run_dir}")
            try:
                loop.train_and_evaluate(config, run_dir)
            except UserError as e:
                log(f"[{i}/{len(cells)}] {run_dir} failed: {e}")
                failures.append((cell, str(e)))
    return failures


# --------------------------------------------------------------------------------------------
# Reading and aggregating run directories.


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


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(values, np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def summarize(
    runs: Sequence[Run], metric: str = "test_error", at_epoch: int | None = None
) -> list[dict[str, Any]]:
    """Per cell: final and best ``metric`` (mean, std over seeds), epoch of the best, paper.

    With ``at_epoch``, "final" is the value at that epoch and "best" the best up to it (runs
    that have not reached it are left out).
    """
    by_cell: dict[str, list[Run]] = {}
    for run in runs:
        by_cell.setdefault(run.cell, []).append(run)
    rows = []
    for cell, cell_runs in by_cell.items():
        finals, bests, best_epochs, walls = [], [], [], []
        curves = [run.curve(metric) for run in cell_runs]
        if at_epoch is not None:
            curves = [(e[e <= at_epoch], v[e <= at_epoch]) for e, v in curves]
            keep = [len(e) and e[-1] == at_epoch for e, _ in curves]
        else:
            keep = [len(e) > 0 for e, _ in curves]
        cell_runs = [r for r, k in zip(cell_runs, keep, strict=True) if k]
        curves = [c for c, k in zip(curves, keep, strict=True) if k]
        if not cell_runs:
            continue
        for run, (epochs, values) in zip(cell_runs, curves, strict=True):
            finals.append(values[-1])
            bests.append(values.min())
            best_epochs.append(int(epochs[values.argmin()]))
            last = next(r for r in reversed(run.records) if r["epoch"] <= epochs[-1])
            walls.append(last.get("wall_s", math.nan))
        config = cell_runs[0].config
        row = {
            "cell": cell,
            "seeds": sorted(r.seed for r in cell_runs),
            "epochs": at_epoch or min(r.records[-1]["epoch"] for r in cell_runs),
            "final": _mean_std(finals),
            "best": _mean_std(bests),
            "best_epoch": float(np.mean(best_epochs)),
            "wall_s": float(np.mean(walls)),
        }
        paper = experiments.reference_curve(config)
        if paper is not None and metric in paper:
            curve, epochs = paper[metric], paper[f"{metric}_epoch"]
            row["paper_at_64"] = float(curve[-1])
            if row["epochs"] in epochs:  # For runs shorter than the paper's.
                row["paper_at_epoch"] = float(curve[list(epochs).index(row["epochs"])])
        rows.append(row)
    return rows


def export(workdir: Path, dest: Path) -> int:
    """Copies every run's ``config.json``, ``metrics.jsonl`` and ``eval/*.json`` (downstream
    evaluations; no checkpoints, no TensorBoard) from ``workdir`` to ``dest`` in the same layout,
    so results can be committed and reported with ``--report``. Returns the number of runs
    copied."""
    runs = 0
    for config_path in sorted(workdir.glob("*/seed=*/config.json")):
        run_dir = config_path.parent
        target = dest / run_dir.relative_to(workdir)
        target.mkdir(parents=True, exist_ok=True)
        names = ["config.json", "metrics.jsonl"]
        names += [str(p.relative_to(run_dir)) for p in sorted(run_dir.glob("eval/*.json"))]
        for name in names:
            if (run_dir / name).exists():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(run_dir / name, target / name)
        runs += 1
    return runs


def _is_rate(metric: str) -> bool:
    return metric.endswith("error")


def _fmt(value: float, metric: str) -> str:
    return f"{100 * value:.2f}" if _is_rate(metric) else f"{value:.4g}"


def _fmt_mean_std(mean_std: tuple[float, float], metric: str) -> str:
    return f"{_fmt(mean_std[0], metric)} ± {_fmt(mean_std[1], metric)}"


def summary_markdown(rows: Sequence[dict[str, Any]], metric: str = "test_error") -> str:
    unit = " (%)" if _is_rate(metric) else ""
    lines = [
        f"| cell | seeds | epochs | final {metric}{unit} | best {metric}{unit} | epoch of best "
        f"| paper at that epoch{unit} | paper at epoch 64{unit} | wall time per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def paper(r, key):
        return _fmt(r[key], metric) if key in r else "–"

    for r in rows:
        lines.append(
            f"| {r['cell']} | {len(r['seeds'])} | {r['epochs']} | "
            f"{_fmt_mean_std(r['final'], metric)} | {_fmt_mean_std(r['best'], metric)} | "
            f"{r['best_epoch']:.1f} | {paper(r, 'paper_at_epoch')} | "
            f"{paper(r, 'paper_at_64')} | {r['wall_s'] / 60:.1f} min |"
        )
    lines.append("")
    note = "errors in percent" if _is_rate(metric) else "lower is better"
    lines.append(f"mean ± sample standard deviation over seeds; {note}.")
    return "\n".join(lines) + "\n"


def plot_figure(
    runs: Sequence[Run],
    path: Path,
    *,
    line_key: str,
    column_key: str | None,
    metrics: Sequence[str] = ("train_nll", "test_error"),
) -> None:
    """Draws the grid like the paper's Fig. 6 (see the module docstring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = sorted({r.config.get(column_key) for r in runs}, key=_sort_key, reverse=True)
    lines = sorted({r.config.get(line_key) for r in runs}, key=_sort_key)
    fig, axes = plt.subplots(
        len(metrics), len(columns), figsize=(5 * len(columns), 3.6 * len(metrics)), squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, column in enumerate(columns):
        for i, metric in enumerate(metrics):
            ax = axes[i][j]
            for k, line in enumerate(lines):
                chosen = [
                    r
                    for r in runs
                    if r.config.get(column_key) == column and r.config.get(line_key) == line
                ]
                _draw_line(ax, chosen, metric, str(line), colors[k % len(colors)])
            if metric.endswith("nll"):
                ax.set_yscale("log")
            if metric.endswith("error"):
                ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
            ax.set_xlabel(runs[0].x_axis)
            ax.set_ylabel(metric)
            ax.set_title(f"{column_key} = {column}" if column_key else "")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_line(ax: Any, runs: Sequence[Run], metric: str, label: str, color: str) -> None:
    """One line of a panel: the mean over the runs' seeds, a band from the lowest to the highest
    seed, and the paper's curve dashed where the experiment has one."""
    curves = [r.curve(metric, r.x_axis) for r in runs]
    curves = [c for c in curves if len(c[0])]
    if curves:
        n = min(len(c[0]) for c in curves)
        epochs = curves[0][0][:n]
        values = np.stack([c[1][:n] for c in curves])
        seeds = f"{len(curves)} seed{'s' * (len(curves) > 1)}"
        ax.plot(epochs, values.mean(0), color=color, label=f"{label} ({seeds})")
        if len(curves) > 1:
            ax.fill_between(
                epochs, values.min(0), values.max(0), color=color, alpha=0.2, linewidth=0
            )
    ref = _paper_curve(runs)
    if ref is not None and metric in ref:
        ax.plot(
            ref[f"{metric}_epoch"],
            ref[metric],
            "--",
            color=color,
            linewidth=1,
            label=f"{label} (paper)",
        )


def _paper_curve(runs: Sequence[Run]) -> dict[str, np.ndarray] | None:
    """The paper's curve for the runs of one line and column, if they all share one."""
    keys = {experiments.reference_key(r.config) for r in runs}
    if len(keys) != 1 or None in keys:
        return None
    return experiments.reference_curve(runs[0].config)


def _sort_key(value: Any) -> tuple:
    return (isinstance(value, str), value if value is not None else "")


def report(
    workdir: Path,
    *,
    line_key: str | None = None,
    column_key: str | None = None,
    metrics: Sequence[str] = ("train_nll", "test_error"),
    metric: str = "test_error",
    at_epoch: int | None = None,
) -> list[dict[str, Any]]:
    """Writes ``figure.png``, ``summary.md`` and ``summary.json`` for the runs in ``workdir``.

    ``metric`` is the one tabulated (``valid_error`` to choose hyperparameters, never test);
    ``at_epoch`` tabulates it at that epoch instead of the last.
    """
    runs = find_runs(workdir)
    if not runs:
        raise UserError(
            f"No run directories with metrics under {workdir} (expected "
            f"{workdir}/<cell>/seed=<s>/metrics.jsonl)."
        )
    rows = summarize(runs, metric, at_epoch)
    (workdir / "summary.md").write_text(summary_markdown(rows, metric))
    (workdir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot_figure(
        runs,
        workdir / "figure.png",
        line_key=line_key or "model.norm",
        column_key=column_key,
        metrics=metrics,
    )
    return rows
