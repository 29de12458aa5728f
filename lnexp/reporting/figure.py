"""The figure of a grid, drawn like the paper's Figure 6: ``figure.png`` of ``--report``.

One column per value of the column key (e.g. batch size), one row per metric (the study's own
unless told, :func:`lnexp.studies.report_metrics`; NLLs on a log scale); one line per value of
the line key (e.g. the normalization) with the mean over seeds and a band from the lowest to
the highest seed; the paper's curves dashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lnexp import studies
from lnexp.reporting.runs import Run
from lnexp.training.durable import replace_synced, shared_temporary


def plot_figure(
    runs: Sequence[Run],
    path: Path,
    *,
    line_key: str,
    column_key: str | None,
    metrics: Sequence[str],
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
    tmp = shared_temporary(path)  # Every copy of a grid's command writes it: the last wins whole.
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    replace_synced(tmp, path)


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
    keys = {studies.reference_key(r.config) for r in runs}
    if len(keys) != 1 or None in keys:
        return None
    return studies.reference_curve(runs[0].config)


def _sort_key(value: Any) -> tuple:
    return (isinstance(value, str), value if value is not None else "")
