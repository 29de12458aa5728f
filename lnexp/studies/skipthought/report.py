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
    A run exported without its checkpoints (:func:`lnexp.reporting.runs.export`) is read from
    its cached evaluations alone.
    """
    from lnexp.studies.skipthought.evaluate import evaluate_run, protocol
    from lnexp.training.run_dir import RunDir

    checkpoints = RunDir(workdir).checkpoint_steps()
    wanted = protocol(folds, standardize)
    cached = {}
    for path in (workdir / "eval").glob("*.json"):
        if not path.stem.isdigit() or (record := _read_evaluation(path)) is None:
            continue
        same = all(
            record.get(k, "standardized" if k == "features" else None) == v
            for k, v in wanted.items()
        )
        if set(tasks) <= set(record["results"]) and same:
            cached[int(path.stem)] = record["results"]
    available = sorted(set(checkpoints) | set(cached))
    if not available:
        raise UserError(
            f"{workdir} has no checkpoints to evaluate, nor evaluations of {', '.join(tasks)} "
            "under this protocol (eval/<step>.json)."
        )
    if steps is not None and (missing := [s for s in steps if s not in available]):
        raise UserError(
            f"--steps: {workdir} has no checkpoint of step {missing[0]} (nor its evaluation); "
            f"its checkpoints and evaluations are at steps {', '.join(map(str, available))}."
        )
    chosen = available if steps is None else list(steps)
    out = {}
    for step in chosen:
        if step in cached:
            out[step] = cached[step]
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
        return "–" if value is None else _plain(name, value)

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


# The scores the verdicts compare, one per task (SICK's relatedness by its Pearson r).
HEADLINE = ("SICK r", "MR", "SUBJ", "TREC")


def standard_error(name: str, results: Mapping[str, dict]) -> float | None:
    """The sampling standard error of one score of a checkpoint's ``results``: binomial
    ``sqrt(p (1 - p) / n)`` (in percent) for an accuracy on ``n`` test examples (every example
    once: MR and SUBJ over their cross-validation folds, TREC's test questions), and
    ``(1 - r^2) / sqrt(n - 3)`` for SICK's Pearson r over its test pairs; ``None`` otherwise."""
    task, key = SCORES[name]
    r = results.get(task, {})
    if key == "accuracy":
        n = r.get("examples", r.get("test_examples"))
        p = r.get("accuracy")
        return None if not n or p is None else 100 * (p / 100 * (1 - p / 100) / n) ** 0.5
    if key == "pearson" and r.get("test_pairs", 0) > 3:
        return (1 - r["pearson"] ** 2) / (r["test_pairs"] - 3) ** 0.5
    return None


def along_training(
    evaluated: Mapping[str, Mapping[int, Mapping[str, dict]]], baseline: str, other: str
) -> dict:
    """The paper's reading of its Fig. 3 for two runs (``other`` against ``baseline``, e.g. LN
    against plain), per headline score, on the steps both were evaluated at.

    * **ahead at equal steps**: the gap ``other - baseline`` and its standard error
      ``sqrt(se_a^2 + se_b^2)`` at each common step; *holds* when the gap is above 2 se at every
      step on every task, *does not hold* when it is below -2 se somewhere, else *inconclusive*;
    * **the baseline's final score in at most half the steps**: the first evaluated step of
      ``other`` at or above the baseline's score at its last step ``S`` (the point estimates,
      read off the evaluated steps as one reads a figure); *holds* when it is at most ``S/2``,
      *does not hold* when ``other`` was evaluated below it at a step from ``S/2`` on,
      *inconclusive* when it was not evaluated between ``S/2`` and that first step;
    * **the gap from the first common step to the last**: *grows* when it rose by more than
      2 se of the change (the four standard errors combined), *shrinks* when it fell by as much,
      else *about the same*.
    """
    a, b = evaluated[baseline], evaluated[other]
    common = sorted(set(a) & set(b))
    tasks, left_out = [], []
    for name in HEADLINE if common else ():
        if not all(name in scores(a[s]) and name in scores(b[s]) for s in common):
            if any(name in scores(r) for r in (*a.values(), *b.values())):
                left_out.append(name)
            continue
        gaps = []
        for step in common:
            sa, sb = standard_error(name, a[step]), standard_error(name, b[step])
            se = (sa**2 + sb**2) ** 0.5 if sa is not None and sb is not None else None
            gaps.append(
                {
                    "step": step,
                    baseline: scores(a[step])[name],
                    other: scores(b[step])[name],
                    "gap": scores(b[step])[name] - scores(a[step])[name],
                    "se": se,
                }
            )
        last = max(a)
        final = scores(a[last]).get(name)
        hits = [s for s in sorted(b) if final is not None and scores(b[s]).get(name, -1e9) >= final]
        first, end = gaps[0], gaps[-1]
        change = end["gap"] - first["gap"]
        change_se = (
            (first["se"] ** 2 + end["se"] ** 2) ** 0.5
            if first["se"] is not None and end["se"] is not None and len(gaps) > 1
            else None
        )
        tasks.append(
            {
                "score": name,
                "gaps": gaps,
                "baseline_final": {"step": last, "score": final},
                "reaches_at": hits[0] if hits else None,
                "other_steps": sorted(b),
                "gap_change": change if len(gaps) > 1 else None,
                "gap_change_se": change_se,
            }
        )
    verdicts = _along_verdicts(baseline, other, tasks, left_out)
    return {
        "left_out": left_out,
        "baseline": baseline,
        "other": other,
        "steps": common,
        "tasks": tasks,
        "verdicts": verdicts,
    }


def _along_verdicts(
    baseline: str, other: str, tasks: Sequence[dict], left_out: Sequence[str] = ()
) -> list[str]:
    if not tasks:
        return [f"No score evaluated for both {baseline} and {other} at the same steps."]
    scope = (
        f" (of those evaluated at every common step; left out: {', '.join(left_out)})"
        if left_out
        else ""
    )
    gaps = [(t["score"], g) for t in tasks for g in t["gaps"]]
    sure = [g["se"] is not None and g["gap"] > 2 * g["se"] for _, g in gaps]
    behind = [(n, g) for n, g in gaps if g["se"] is not None and g["gap"] < -2 * g["se"]]
    unknown = sum(g["se"] is None for _, g in gaps)
    if all(sure):
        ahead = "holds"
    elif behind:
        ahead = "does not hold"
    else:
        ahead = "inconclusive"
    detail = "; ".join(
        f"{t['score']} " + ", ".join(_gap_text(t["score"], g) for g in t["gaps"]) for t in tasks
    )
    no_se = f", {unknown} without a standard error" if unknown else ""
    lines = [
        f"**{other} ahead of {baseline} on every task{scope} at equal steps: {ahead}** "
        f"({sum(sure)} of {len(sure)} gaps above 2 se{no_se}; gap at step: {detail})."
    ]
    half, verdicts = [], []
    for t in tasks:
        last, final = t["baseline_final"]["step"], t["baseline_final"]["score"]
        reach = t["reaches_at"]
        below = [s for s in t["other_steps"] if s >= last / 2 and (reach is None or s < reach)]
        if reach is not None and reach <= last / 2:
            verdict = "holds"
        elif below:
            verdict = "does not hold"
        else:
            verdict = "inconclusive"
        verdicts.append(verdict)
        when = "never" if reach is None else f"at step {reach:,}"
        why = (
            f"; not evaluated from step {last // 2:,} until then"
            if verdict == "inconclusive"
            else ""
        )
        half.append(
            f"{t['score']}: {verdict} ({baseline}'s {_plain(t['score'], final)} at step "
            f"{last:,}; {other} first at or above it {when}{why})"
        )
    if all(v == "holds" for v in verdicts):
        overall = "holds on every task"
    elif "does not hold" in verdicts:
        overall = "not on every task"
    else:
        overall = "inconclusive"
    lines.append(
        f"**{other} reaches {baseline}'s final score in at most half the steps: {overall}** "
        f"({'; '.join(half)})."
    )
    trend = []
    for t in tasks:
        change, se = t["gap_change"], t["gap_change_se"]
        if change is None:
            continue
        if se is None or abs(change) <= 2 * se:
            word = "about the same"
        else:
            word = "grows" if change > 0 else "shrinks"
        first, end = t["gaps"][0], t["gaps"][-1]
        trend.append(
            f"{t['score']} {word} ({_plain(t['score'], first['gap'], '+')} at step "
            f"{first['step']:,} to {_plain(t['score'], end['gap'], '+')} at {end['step']:,}"
            + ("" if se is None else f", change ± {_plain(t['score'], se)}")
            + ")"
        )
    if trend:
        lines.append(f"**The gap from the first common step to the last:** {'; '.join(trend)}.")
    return lines


def _plain(name: str, value: float, sign: str = "") -> str:
    """A score as the tables show it: SICK's to 3 decimals, accuracies (percent) to 1;
    ``sign='+'`` for a difference."""
    return f"{value:{sign}.{3 if name.startswith('SICK') else 1}f}"


def _gap_text(name: str, gap: Mapping) -> str:
    se = "" if gap["se"] is None else f" ± {_plain(name, gap['se'])}"
    return f"{gap['step']:,}: {_plain(name, gap['gap'], '+')}{se}"


def along_training_markdown(comparison: Mapping) -> str:
    """:func:`along_training`'s scores per common step, then its verdicts."""
    baseline, other = comparison["baseline"], comparison["other"]
    lines = [
        f"{other} against {baseline} at the steps both were evaluated at (gap = {other} − "
        f"{baseline}, ± its standard error):",
        "",
        f"| score | step | {baseline} | {other} | gap |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in comparison["tasks"]:
        name = t["score"]
        for g in t["gaps"]:
            se = "" if g["se"] is None else f" ± {_plain(name, g['se'])}"
            lines.append(
                f"| {name} | {g['step']:,} | {_plain(name, g[baseline])} | "
                f"{_plain(name, g[other])} | {_plain(name, g['gap'], '+')}{se} |"
            )
    lines += ["", *[f"- {v}" for v in comparison["verdicts"]], ""]
    return "\n".join(lines)


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
    checkpoint whose choice of ``C`` sat at an edge of the grid in most folds; then each run
    after the first against the first (the baseline) along training (:func:`along_training`).
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
    labels = [label for label in runs if evaluated[label]]
    compared = [along_training(evaluated, labels[0], other) for other in labels[1:]]
    along = "".join("\n" + along_training_markdown(c) for c in compared)
    (out / "table.md").write_text(table_markdown(final) + "\n".join(footer) + "\n" + along)
    (out / "table.json").write_text(
        json.dumps(
            {
                "protocol": setting,
                "curves": curves,
                "final": final,
                "grid_edge": notes,
                "paper": reference_table(),
                "along_training": compared,
            },
            indent=2,
        )
        + "\n"
    )
    plot_curves(curves, out / "figure.png")
    return curves
