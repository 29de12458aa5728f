"""Choosing a hyperparameter on the validation split from a sweep of run directories.

A sweep is a grid run by ``scripts/compare.py`` in which one key (say
``optimizer.learning_rate``) takes several values for every configuration of the others (say
``model.norm`` and ``batch_size``). For each configuration :func:`choose` picks the value whose
runs have the lowest validation error averaged over the last half of the epochs they ran (one
epoch alone is noisy: the 5,000-image validation split's standard error is about 0.2 points at
2 % error), and flags a choice at an edge of the values tried: the sweep should then be
extended past that edge.

The chosen values go into the config as a table (``optimizer.tuned_rates`` of
``configs/pimnist.py:tuned``) that :func:`lnexp.config.resolve_learning_rate` reads when a run
starts.

Command line (writes ``WORKDIR/choice.md`` and ``WORKDIR/choice.json``)::

    python -m lnexp.reporting.tuning --workdir runs/sweep128 --key optimizer.learning_rate \\
        --by model.norm,batch_size
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from lnexp import cli, flag_kinds
from lnexp.errors import UserError, command_line
from lnexp.reporting.runs import Run, check_names, find_runs
from lnexp.training.metric_writers import quiet_library_logs


def score(run: Run, metric: str = "valid_error", fraction: float = 0.5) -> float:
    """Mean of ``metric`` over the last ``fraction`` of the run's epochs (at least one);
    infinite for a run whose values are not all finite (it diverged)."""
    epochs = len(run.curve(metric)[1])
    return tail_mean(run, metric, max(1, round(epochs * fraction)))


def tail_mean(run: Run, metric: str, epochs: int) -> float:
    """Mean of ``metric`` over the run's last ``epochs`` epochs; infinite for a run without
    values or whose values there are not all finite (it diverged)."""
    _, values = run.curve(metric)
    tail = values[-epochs:]
    return float(np.mean(tail)) if len(tail) and np.all(np.isfinite(tail)) else math.inf


def choose(
    runs: Sequence[Run],
    key: str,
    by: Sequence[str],
    *,
    metric: str = "valid_error",
    fraction: float = 0.5,
) -> list[dict[str, Any]]:
    """Per configuration of ``by``: every value of ``key`` with its score (mean over seeds of
    :func:`score`), the chosen value (the lowest score) and whether it lies at an edge of the
    values tried (``at_edge``: ``'lowest'``, ``'highest'`` or ``None``)."""
    groups: dict[tuple, dict[Any, list[float]]] = {}
    for run in runs:
        group = tuple(run.config.get(k) for k in by)
        groups.setdefault(group, {}).setdefault(run.config.get(key), []).append(
            score(run, metric, fraction)
        )
    rows = []
    for group in sorted(groups, key=str):
        scores = {v: float(np.mean(s)) for v, s in sorted(groups[group].items())}
        best = min(scores, key=scores.get)
        values = list(scores)
        edge = None
        if len(values) > 1 and best == values[0]:
            edge = "lowest"
        elif len(values) > 1 and best == values[-1]:
            edge = "highest"
        rows.append(
            {
                **dict(zip(by, group, strict=True)),
                "scores": {str(v): s for v, s in scores.items()},
                "chosen": best,
                "at_edge": edge,
                "epochs": sorted({r.records[-1]["epoch"] for r in runs if _in(r, by, group)}),
            }
        )
    return rows


def _in(run: Run, by: Sequence[str], group: tuple) -> bool:
    return tuple(run.config.get(k) for k in by) == group


def choice_markdown(rows: Sequence[dict[str, Any]], key: str, by: Sequence[str], metric: str):
    values = sorted({v for r in rows for v in r["scores"]}, key=float)
    lines = [
        "| " + " | ".join(by) + f" | {' | '.join(values)} | chosen {key} | epochs |",
        "|" + "---|" * (len(by) + len(values) + 2),
    ]
    for r in rows:
        cells = []
        for v in values:
            s = r["scores"].get(v)
            text = "–" if s is None else ("diverged" if math.isinf(s) else f"{100 * s:.2f}")
            cells.append(f"**{text}**" if v == str(r["chosen"]) else text)
        chosen = f"{r['chosen']:g}" + (f" (at the {r['at_edge']} edge)" if r["at_edge"] else "")
        epochs = ",".join(map(str, r["epochs"]))
        lines.append(
            "| " + " | ".join(str(r[k]) for k in by) + f" | {' | '.join(cells)} | {chosen} "
            f"| {epochs} |"
        )
    lines += [
        "",
        f"{metric} in percent, averaged over the last half of each run's epochs and over seeds; "
        "the lowest in bold.",
    ]
    return "\n".join(lines) + "\n"


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path(
        "workdir", None, "The sweep's grid directory (of scripts/compare.py).", must_exist=True
    )
    flag_kinds.text("key", "optimizer.learning_rate", "The swept key.")
    flag_kinds.text("by", "model.norm,batch_size", "Comma-separated keys of a configuration.")
    flag_kinds.text("metric", "valid_error", "Lower is better; never a test metric.")
    flags.mark_flag_as_required("workdir")


@command_line
def main(argv: Sequence[str]) -> None:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    by = [k for k in FLAGS.by.split(",") if k]
    if FLAGS.metric.startswith("test"):
        raise UserError("Choose hyperparameters on the validation split, not on test.")
    workdir = Path(FLAGS.workdir)
    runs = find_runs(workdir)
    if not runs:
        raise UserError(f"No run directories with metrics under {workdir}.")
    check_names(runs, keys={"--key": [FLAGS.key], "--by": by}, metrics={"--metric": [FLAGS.metric]})
    rows = choose(runs, FLAGS.key, by, metric=FLAGS.metric)
    text = choice_markdown(rows, FLAGS.key, by, FLAGS.metric)
    (workdir / "choice.md").write_text(text)
    (workdir / "choice.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    print(text)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
