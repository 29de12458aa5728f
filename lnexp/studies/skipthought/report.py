"""Skip-thought runs -> downstream scores along training, the paper's Fig. 3 and Table 3 at our
scale (the library behind ``scripts/compare_senteval.py``).

Each checkpoint of each run is evaluated once with
:func:`lnexp.studies.skipthought.evaluate.evaluate_run` (results cached in ``RUN/eval/<step>.json``,
so re-running only evaluates new checkpoints); then

* ``figure.png``: one panel per score (SICK r, MR, SUBJ, TREC, ...), the score against training
  steps, one line per run;
* ``table.md`` / ``table.json``: each run's last evaluated checkpoint beside the paper's Table 3
  (:func:`lnexp.studies.skipthought.task.reference_table`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from absl import logging

from lnexp.errors import UserError
from lnexp.studies.skipthought.task import reference_table

# Score name -> (task, key in the task's results). Accuracies in percent.
SCORES = {
    "SICK r": ("SICK", "pearson"),
    "SICK rho": ("SICK", "spearman"),
    "SICK MSE": ("SICK", "mse"),
    "MR": ("MR", "accuracy"),
    "CR": ("CR", "accuracy"),
    "SUBJ": ("SUBJ", "accuracy"),
    "MPQA": ("MPQA", "accuracy"),
    "TREC": ("TREC", "accuracy"),
}


def _read_evaluation(path: Path) -> dict | None:
    """A run's saved evaluation ``eval/<step>.json``, or ``None`` when there is none or it is
    damaged (then evaluated again: nothing is lost, with a warning)."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if isinstance(record, dict) and isinstance(record.get("results"), dict):
        return record
    logging.warning("Evaluating again: the saved evaluation %s is damaged.", path)
    return None


def evaluate_checkpoints(
    workdir: Path,
    data_dir: Path,
    tasks: Sequence[str],
    *,
    steps: Sequence[int] | None = None,
    folds: int = 10,
    standardize: bool = False,
) -> dict[int, dict]:
    """Step -> results for every (or the given) checkpoint, evaluating those not cached yet.

    A cached ``eval/<step>.json`` counts only if it covers ``tasks`` under the same protocol
    (folds, raw or standardized features; see :func:`lnexp.studies.skipthought.evaluate.protocol`).
    """
    from lnexp.studies.skipthought.evaluate import evaluate_run, protocol
    from lnexp.training.run_dir import RunDir

    available = RunDir(workdir).checkpoint_steps()
    if not available:
        raise UserError(f"{workdir} has no checkpoints to evaluate.")
    if steps is not None and (missing := [s for s in steps if s not in available]):
        raise UserError(
            f"--steps: {workdir} has no checkpoint of step {missing[0]}; its checkpoints are "
            f"at steps {', '.join(map(str, available))}."
        )
    chosen = available if steps is None else list(steps)
    out = {}
    for step in chosen:
        cached = workdir / "eval" / f"{step}.json"
        record = _read_evaluation(cached)
        if record is not None:
            wanted = protocol(folds, standardize)
            same = all(
                record.get(k, "standardized" if k == "features" else None) == v
                for k, v in wanted.items()
            )
            if set(tasks) <= set(record["results"]) and same:
                out[step] = record["results"]
                continue
        out[step] = evaluate_run(
            workdir, data_dir, tasks, step=step, folds=folds, standardize=standardize
        )[1]
    return out


def scores(results: Mapping[str, dict]) -> dict[str, float]:
    """The headline numbers of one checkpoint's results."""
    out = {}
    for name, (task, key) in SCORES.items():
        if task in results and key in results[task]:
            out[name] = float(results[task][key])
    return out


def table_markdown(runs: Mapping[str, tuple[int, dict[str, float]]]) -> str:
    """Our runs (label -> (step, scores)) above the paper's Table 3 rows."""
    names = [n for n in SCORES if any(n in s for _, s in runs.values())]
    lines = [
        "| method | steps | " + " | ".join(names) + " |",
        "|---|---:|" + "---:|" * len(names),
    ]

    def fmt(name: str, value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value:.1f}" if name in ("MR", "CR", "SUBJ", "MPQA", "TREC") else f"{value:.3f}"

    for label, (step, s) in runs.items():
        lines.append(
            f"| {label} (ours) | {step:,} | " + " | ".join(fmt(n, s.get(n)) for n in names) + " |"
        )
    for row in reference_table():
        iterations = "~1.7M" if "1.7M" in row["method"] else ("1M" if "1M" in row["method"] else "")
        lines.append(
            f"| {row['method']} (paper) | {iterations} | "
            + " | ".join(fmt(n, row.get(n)) for n in names)
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot_curves(curves: Mapping[str, dict[int, dict[str, float]]], path: Path) -> None:
    """One panel per score, score against steps, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in SCORES if any(n in s for c in curves.values() for s in c.values())]
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        for label, by_step in curves.items():
            steps = sorted(s for s in by_step if name in by_step[s])
            ax.plot(steps, [by_step[s][name] for s in steps], marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("training steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(
    runs: Mapping[str, Path],
    data_dir: Path,
    tasks: Sequence[str],
    out: Path,
    *,
    steps: Sequence[int] | None = None,
    folds: int = 10,
    standardize: bool = False,
) -> dict:
    """Evaluates the runs' checkpoints and writes ``figure.png``, ``table.md``, ``table.json``
    to ``out``. Returns ``{label: {step: scores}}``.

    Below the table, ``table.md`` states the protocol and notes every task of a run's last
    checkpoint whose choice of ``C`` sat at an edge of the grid in most folds.
    """
    from lnexp.studies.skipthought.evaluate import protocol

    evaluated = {
        label: evaluate_checkpoints(
            Path(workdir), data_dir, tasks, steps=steps, folds=folds, standardize=standardize
        )
        for label, workdir in runs.items()
    }
    curves = {
        label: {step: scores(r) for step, r in by_step.items()}
        for label, by_step in evaluated.items()
    }
    out.mkdir(parents=True, exist_ok=True)
    final = {label: max(c.items()) for label, c in curves.items() if c}
    notes = [
        f"{label} (ours), {task}: {r['grid_edge']}"
        for label, by_step in evaluated.items()
        if by_step
        for task, r in by_step[max(by_step)].items()
        if r.get("grid_edge")
    ]
    setting = protocol(folds, standardize)
    footer = [
        "",
        f"Protocol: {setting['features']} sentence vectors; logistic regression with C in "
        f"2^0..2^8 chosen by {folds}-fold cross-validation (nested for the binary tasks).",
        *notes,
    ]
    (out / "table.md").write_text(table_markdown(final) + "\n".join(footer) + "\n")
    (out / "table.json").write_text(
        json.dumps(
            {
                "protocol": setting,
                "curves": curves,
                "final": final,
                "grid_edge": notes,
                "paper": reference_table(),
            },
            indent=2,
        )
        + "\n"
    )
    plot_curves(curves, out / "figure.png")
    return curves
