"""The Transformer study's report: warmup by placement, and LN vs RMSNorm vs none.

Reads two grids of ``configs/transformer.py`` runs made by ``scripts/compare.py``:

* ``--warmup WORKDIR``: ``model.placement`` x ``optimizer.learning_rate`` x
  ``optimizer.warmup_steps``, one seed, the same steps. Xiong et al. (2020) find that post-LN
  without warmup trains much worse or diverges, and that pre-LN does not need the warmup.
* ``--norms WORKDIR``: ``model.norm`` in {layer, rms, none}, pre placement, the same steps.
  Zhang & Sennrich (2019) report RMSNorm's quality equal to LN's at 7-64 % less time.

and writes ``OUT/warmup.{md,png,json}`` and ``OUT/norms.{md,png,json}``: validation bits per
character against steps, the divergence events (a run that stopped with an error, which
:mod:`lnexp.reporting.grid` records in the cell's ``failed.txt``), the final and best values,
throughput, and one verdict line per question, computed from the numbers (thresholds below)::

    python -m lnexp.studies.transformer.report --warmup runs/tf-warmup --norms runs/tf-norms \\
        --out results/transformer --export

(``--export`` also copies the runs' ``config.json``/``metrics.jsonl`` into ``OUT/warmup_runs/``
and ``OUT/norms_runs/``, from which ``--warmup OUT/warmup_runs`` makes the same report.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags

from lnexp import cli, flag_kinds
from lnexp.errors import UserError, command_line
from lnexp.reporting import grid, runs
from lnexp.reporting.runs import Run, find_runs
from lnexp.training.metric_writers import quiet_library_logs

NEEDS_WARMUP_BPC = 0.05
"""Warmup "is needed" at a rate when the run without it diverges or ends this many bits per
character above the run with it."""

SAME_QUALITY_BPC = 0.02
"""Two normalizations "match" when their final validation bits per character differ by less."""


def _outcome(workdir: Path, run: Run) -> dict:
    """A run's curve and how it ended: finished, diverged (with the step) or stopped."""
    steps, bpc = run.curve("valid_bpc", "step")
    num_steps = run.config["num_epochs"] * run.config["steps_per_epoch"]
    failed = grid.failure(workdir / run.cell / f"seed={run.seed}")
    finished = bool(len(steps)) and steps[-1] >= num_steps
    status = "finished" if finished else "stopped"
    diverged_at = None
    if not finished and failed and "diverged" in failed:
        status = "diverged"
        found = re.search(r"step (\d+)", failed)
        diverged_at = int(found.group(1)) if found else None
    rates = [r["tokens_per_sec"] for r in run.records[1:] if "tokens_per_sec" in r]
    return dict(
        cell=run.cell,
        placement=run.config["model.placement"],
        norm=run.config["model.norm"],
        learning_rate=run.config["optimizer.learning_rate"],
        warmup_steps=run.config["optimizer.warmup_steps"],
        num_steps=num_steps,
        steps=steps.tolist(),
        valid_bpc=bpc.tolist(),
        train_loss=[r.get("train_loss") for r in run.records],
        status=status,
        diverged_at=diverged_at,
        final_bpc=float(bpc[-1]) if finished else None,
        best_bpc=float(np.min(bpc)) if len(bpc) else None,
        # Median over the periods after the first (which holds the compilation's warm-up).
        tokens_per_sec=float(np.median(rates)) if rates else None,
    )


def outcomes(workdir: Path) -> list[dict]:
    runs = find_runs(Path(workdir))
    if not runs:
        raise UserError(
            f"No runs with metrics under {workdir}: run the grid first (the commands are in "
            "lnexp/studies/transformer/report.py and the README)."
        )
    for run in runs:
        if run.config.get("experiment", "transformer") != "transformer":
            raise UserError(
                f"{workdir}/{run.cell} is a {run.config.get('experiment')!r} run, not a "
                "Transformer's: pass a grid of configs/transformer.py (see the module docstring)."
            )
    return [_outcome(Path(workdir), run) for run in runs]


def _ended(o: dict) -> str:
    if o["status"] == "finished":
        return f"{o['final_bpc']:.3f}"
    if o["status"] == "diverged":
        return f"diverged at step {o['diverged_at']:,}" if o["diverged_at"] else "diverged"
    last = o["steps"][-1] if o["steps"] else 0
    return f"not finished (step {last:,} of {o['num_steps']:,})"


def _best(o: dict) -> str:
    return "-" if o["best_bpc"] is None else f"{o['best_bpc']:.3f}"


def warmup_verdicts(rows: Sequence[dict]) -> list[str]:
    """For each placement and rate: does the run without warmup do worse than the one with?"""
    by = {(o["placement"], o["learning_rate"], o["warmup_steps"] > 0): o for o in rows}
    lines = []
    for placement, rate in sorted({(p, r) for p, r, _ in by}):
        without, with_ = by.get((placement, rate, False)), by.get((placement, rate, True))
        if without is None or with_ is None:
            continue
        if "stopped" in (without["status"], with_["status"]):
            lines.append(f"{placement}-LN at {rate:g}: inconclusive (a run did not finish).")
        elif with_["status"] == "diverged":
            lines.append(f"{placement}-LN at {rate:g}: diverged even with warmup.")
        elif without["status"] == "diverged":
            lines.append(
                f"{placement}-LN at {rate:g}: **needs warmup**: diverged without it, "
                f"{with_['final_bpc']:.3f} bpc with it."
            )
        else:
            gap = without["final_bpc"] - with_["final_bpc"]
            needs = gap > NEEDS_WARMUP_BPC
            lines.append(
                f"{placement}-LN at {rate:g}: {'**needs warmup**' if needs else 'no warmup needed'}"
                f": {without['final_bpc']:.3f} bpc without, {with_['final_bpc']:.3f} with "
                f"({gap:+.3f}; the threshold is {NEEDS_WARMUP_BPC} bpc)."
            )
    return lines


def warmup_markdown(rows: Sequence[dict]) -> str:
    lines = [
        "| placement | peak rate | warmup steps | final valid bpc | best valid bpc |",
        "|---|---:|---:|---:|---:|",
    ]
    for o in sorted(rows, key=lambda o: (o["placement"], o["learning_rate"], o["warmup_steps"])):
        lines.append(
            f"| {o['placement']} | {o['learning_rate']:g} | {o['warmup_steps']} | {_ended(o)} | "
            f"{_best(o)} |"
        )
    lines += ["", *[f"- {v}" for v in warmup_verdicts(rows)]]
    return "\n".join(lines) + "\n"


def norms_verdicts(rows: Sequence[dict]) -> list[str]:
    by = {o["norm"]: o for o in rows}
    ln = by.get("layer")
    if ln is None or ln["status"] != "finished":
        return ["inconclusive: the layer-norm run did not finish."]
    lines = []
    for name in ("rms", "none"):
        o = by.get(name)
        if o is None:
            continue
        if o["status"] != "finished":
            lines.append(f"{name}: {_ended(o)}, layer norm {ln['final_bpc']:.3f} bpc.")
            continue
        gap = o["final_bpc"] - ln["final_bpc"]
        quality = (
            "matches"
            if abs(gap) < SAME_QUALITY_BPC
            else ("worse than" if gap > 0 else "better than")
        )
        speed = ""
        if o["tokens_per_sec"] and ln["tokens_per_sec"]:
            change = ln["tokens_per_sec"] / o["tokens_per_sec"] - 1  # Time per token, vs LN.
            speed = f"; time per token {100 * change:+.1f} % vs layer norm"
        lines.append(
            f"{name} {quality} layer norm: {o['final_bpc']:.3f} vs {ln['final_bpc']:.3f} bpc "
            f"({gap:+.3f}; 'matches' is within {SAME_QUALITY_BPC}){speed}."
        )
    return lines


def norms_markdown(rows: Sequence[dict]) -> str:
    lines = [
        "| norm | final valid bpc | best valid bpc | tokens/s (median) |",
        "|---|---:|---:|---:|",
    ]
    order = {"layer": 0, "rms": 1, "none": 2}
    for o in sorted(rows, key=lambda o: order.get(o["norm"], 9)):
        rate = "-" if o["tokens_per_sec"] is None else f"{o['tokens_per_sec']:,.0f}"
        lines.append(f"| {o['norm']} | {_ended(o)} | {_best(o)} | {rate} |")
    lines += ["", *[f"- {v}" for v in norms_verdicts(rows)]]
    lines += [
        "",
        "The tokens/s are the training runs' own, under whatever else the machine ran meanwhile; "
        "`scripts/bench.py --sections transformer` times the three side by side.",
    ]
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw(ax, o: dict, label: str, style: str) -> None:
    (line,) = ax.plot(o["steps"], o["valid_bpc"], style, label=label, markersize=3)
    if o["status"] == "diverged" and o["diverged_at"]:
        last = o["valid_bpc"][-1] if o["valid_bpc"] else 0
        ax.plot([o["diverged_at"]], [last], "x", color=line.get_color(), markersize=10)


def warmup_figure(rows: Sequence[dict], path: Path) -> None:
    plt = _plt()
    rates = sorted({o["learning_rate"] for o in rows})
    fig, axes = plt.subplots(1, len(rates), figsize=(5 * len(rates), 3.6), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        for o in sorted(rows, key=lambda o: (o["placement"], o["warmup_steps"])):
            if o["learning_rate"] == rate:
                style = "-" if o["placement"] == "pre" else "--"
                _draw(ax, o, f"{o['placement']}-LN, warmup {o['warmup_steps']}", style)
        ax.set_title(f"peak learning rate {rate:g} (x: diverged)")
        ax.set_xlabel("step")
        ax.set_ylabel("validation bits per character")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def norms_figure(rows: Sequence[dict], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for o in rows:
        _draw(ax, o, o["norm"], "-")
    ax.set_xlabel("step")
    ax.set_ylabel("validation bits per character")
    ax.set_title("pre placement: layer norm vs RMS norm vs none")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(
    out: Path, *, warmup: Path | None = None, norms: Path | None = None, export: bool = False
) -> str:
    """Writes the reports of the grids given; returns their markdown. With ``export``, also
    copies the grids' run directories without checkpoints into ``OUT/<name>_runs/``
    (:func:`lnexp.reporting.runs.export`), so the report can be made again from them."""
    grids = [
        (name, workdir, outcomes(workdir), table, draw)  # Read (and checked) before writing.
        for name, workdir, table, draw in (
            ("warmup", warmup, warmup_markdown, warmup_figure),
            ("norms", norms, norms_markdown, norms_figure),
        )
        if workdir is not None
    ]
    out.mkdir(parents=True, exist_ok=True)
    text = []
    for name, workdir, rows, table, draw in grids:
        if export:
            runs.export(Path(workdir), out / f"{name}_runs")
        (out / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
        markdown = table(rows)
        (out / f"{name}.md").write_text(markdown)
        draw(rows, out / f"{name}.png")
        text.append(f"## {name}\n\n{markdown}")
    return "\n".join(text)


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path(
        "warmup", None, "The placement x rate x warmup grid (WORKDIR).", must_exist=True
    )
    flag_kinds.path("norms", None, "The layer/rms/none grid (WORKDIR).", must_exist=True)
    flag_kinds.path("out", None, "Directory for the reports.")
    flags.DEFINE_bool("export", False, "Also copy the runs' metrics into OUT/<grid>_runs.")
    flags.mark_flag_as_required("out")


@command_line
def main(argv: Sequence[str]) -> int:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    if FLAGS.warmup is None and FLAGS.norms is None:
        raise UserError("Pass --warmup WORKDIR and/or --norms WORKDIR (grids of compare.py).")
    warmup = Path(FLAGS.warmup) if FLAGS.warmup is not None else None
    norms = Path(FLAGS.norms) if FLAGS.norms is not None else None
    print(write(Path(FLAGS.out), warmup=warmup, norms=norms, export=FLAGS.export))
    print(f"Wrote the reports into {FLAGS.out}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
