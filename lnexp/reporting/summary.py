"""The table of a grid (per cell: final and best metric over seeds, vs the paper) and
:func:`report`, which writes it with the figure: what ``scripts/compare.py --report`` does.

:func:`report` reads whatever run directories exist and writes ``figure.png``
(:mod:`lnexp.reporting.figure`), and ``summary.md`` and ``summary.json``: per cell the final and
best value of the tabulated metric (the study's own unless told: test error for PI-MNIST; mean
± std over seeds), the epoch of the best, wall time, and the paper's value at the last epoch of
its curve (``paper_at_64``: epoch 64 in Fig. 6; the runs' experiment's
:func:`lnexp.studies.reference_curve`; this module knows no experiment by name).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lnexp import studies
from lnexp.errors import UserError
from lnexp.reporting.figure import plot_figure
from lnexp.reporting.runs import Run, check_names, find_runs
from lnexp.training.durable import write_atomically
from lnexp.training.metric_writers import missing_epochs


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
        paper = studies.reference_curve(config)
        if paper is not None and metric in paper:
            curve, epochs = paper[metric], paper[f"{metric}_epoch"]
            row["paper_at_64"] = float(curve[-1])
            if row["epochs"] in epochs:  # For runs shorter than the paper's.
                row["paper_at_epoch"] = float(curve[list(epochs).index(row["epochs"])])
        rows.append(row)
    return rows


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
        f"| paper at that epoch{unit} | paper at its last epoch{unit} | wall time per run |",
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


def holes_markdown(runs: Sequence[Run]) -> str:
    """A paragraph naming the runs whose records skip epochs (a torn ``metrics.jsonl`` that no
    kept checkpoint could repair, :meth:`lnexp.training.run_dir.RunDir.truncate_records`), or
    nothing when none does."""
    holes = []
    for run in runs:
        if missing := missing_epochs(run.records):
            holes.append(
                f"{run.cell} seed {run.seed} lacks epoch(s) {', '.join(map(str, missing))}"
            )
    if not holes:
        return ""
    return (
        "\n**Records missing** (a metrics.jsonl torn by a crash, whose checkpoint was no longer "
        f"kept): {'; '.join(holes)}.\n"
    )


def report(
    workdir: Path,
    *,
    line_key: str | None = None,
    column_key: str | None = None,
    metrics: Sequence[str] | None = None,
    metric: str | None = None,
    at_epoch: int | None = None,
) -> list[dict[str, Any]]:
    """Writes ``figure.png``, ``summary.md`` and ``summary.json`` for the runs in ``workdir``.

    ``metric`` is the one tabulated (``valid_error`` to choose hyperparameters, never test),
    ``metrics`` the rows of the figure; ``None`` takes the study's own
    (:func:`lnexp.studies.report_metrics`: ``test_error`` for PI-MNIST, ``valid_nll`` for
    skip-thoughts, ...). ``at_epoch`` tabulates ``metric`` at that epoch instead of the last.
    """
    runs = find_runs(workdir)
    if not runs:
        raise UserError(
            f"No run directories with metrics under {workdir} (expected "
            f"{workdir}/<cell>/seed=<s>/metrics.jsonl)."
        )
    if metric is None or metrics is None:
        default_metric, default_metrics = studies.report_metrics(
            [r.config.get("experiment") for r in runs]
        )
        metric = default_metric if metric is None else metric
        metrics = default_metrics if metrics is None else metrics
    line_key = line_key or "model.norm"
    keys = {"--lines": [line_key], "--columns": [column_key] if column_key else []}
    check_names(runs, keys=keys, metrics={"--metric": [metric], "--metrics": list(metrics)})
    last_epoch = max(r.get("epoch", 0) for run in runs for r in run.records)
    if at_epoch is not None and not 1 <= at_epoch <= last_epoch:
        raise UserError(f"--at_epoch={at_epoch}: the runs have epochs 1 to {last_epoch}.")
    rows = summarize(runs, metric, at_epoch)
    # Each copy of a grid's command writes the report when it ends (lnexp.reporting.grid): the
    # files are replaced whole, so a reader never sees two writers' lines mixed.
    markdown = summary_markdown(rows, metric) + holes_markdown(runs)
    write_atomically(workdir / "summary.md", markdown, shared=True)
    write_atomically(workdir / "summary.json", json.dumps(rows, indent=2) + "\n", shared=True)
    plot_figure(
        runs,
        workdir / "figure.png",
        line_key=line_key,
        column_key=column_key,
        metrics=metrics,
    )
    return rows
