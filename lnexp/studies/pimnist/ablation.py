"""An ablation of a training protocol: each choice alone against the protocol, per method.

The runs are a grid directory written by ``scripts/compare.py`` (``scripts/fig6_ablation.sh``
runs the Figure 6 one): every run differs from the protocol (a config file's defaults, e.g.
``configs/pimnist.py``) in ``model.norm`` and at most one other field, its *choice*
(``optimizer.learning_rate=1e-3``, ``data.input_scaling=standardize``, ...); a run that differs
in none is the control. Fields that do not change what is trained (the data's location, the
evaluation batch, how a rate was found; :data:`IGNORED`) are not choices.

Each run is scored by its validation error averaged over the last ``window`` epochs (20: epochs
45-64 of 64, the window of the Figure 6 claims; one epoch alone is too noisy), and the test error
over the same window is shown beside it, never used to choose. Per method and field, the value
with the lowest mean score is *adopted* only when it beats the control by more than the standard
error of the difference of the two means (over seeds); otherwise the protocol keeps its value.

Command line (writes ``WORKDIR/ablation.md`` and ``WORKDIR/ablation.json``)::

    python -m lnexp.studies.pimnist.ablation --workdir runs/abl128 --config configs/pimnist.py
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags
from flax.traverse_util import flatten_dict

from lnexp import cli, flag_kinds
from lnexp.errors import UserError, command_line
from lnexp.reporting.runs import Run, find_runs
from lnexp.reporting.tuning import tail_mean
from lnexp.training.config_changes import RESUMABLE_CHANGES
from lnexp.training.metric_writers import quiet_library_logs

METHOD_KEY = "model.norm"
CONTROL = "control"  # The label of the runs at the protocol itself.

# Fields that are never choices: the seed, where the data comes from (the same images from the
# cache, TFDS or one's own directory), and what may change on resuming.
IGNORED = frozenset({"seed", "data.dir", "data.source", *RESUMABLE_CHANGES})


def choice_of(config: Mapping[str, Any], protocol: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of the flattened run ``config`` that differ from the ``protocol`` (flattened),
    other than ``model.norm`` and :data:`IGNORED`."""
    changed = {}
    for key in sorted(set(config) | set(protocol)):
        if key in IGNORED or key == METHOD_KEY:
            continue
        a, b = config.get(key), protocol.get(key)
        if isinstance(a, list):
            a = tuple(a)
        if isinstance(b, list):
            b = tuple(b)
        if a != b:
            changed[key] = a
    return changed


def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def ablate(
    runs: Sequence[Run], protocol: Mapping[str, Any], *, window: int = 20
) -> list[dict[str, Any]]:
    """One row per method and choice (the control first): its seeds, the mean and spread of the
    validation score, the test error over the same window and at the last epoch, and the gain
    over the control with its standard error. Only finished runs count; a run that changes two
    fields at once is refused (it is not an ablation of one choice)."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        if run.records[-1]["epoch"] < run.config["num_epochs"]:
            continue  # Still training.
        if missing := sorted(k for k in protocol.keys() - run.config.keys() if k not in IGNORED):
            raise UserError(
                f"The config.json of the run {run.cell}/seed={run.seed} lacks fields of the "
                f"protocol ({', '.join(missing)}): it was written before they existed. Add them "
                "to its config.json with the values the run was trained with (CHANGELOG.md lists "
                "those of runs written before a field existed), or move it out of the grid "
                "directory."
            )
        choice = choice_of(run.config, protocol)
        if len(choice) > 1:
            raise UserError(
                f"The run {run.cell}/seed={run.seed} differs from the protocol in "
                f"{len(choice)} fields ({choice}); an ablation changes one at a time. Move it "
                "out of the grid directory, or compare against its own protocol (--config)."
            )
        label = CONTROL if not choice else "{}={}".format(*next(iter(choice.items())))
        groups.setdefault((run.config[METHOD_KEY], label), []).append(run)

    rows = []
    for (method, label), group in sorted(groups.items(), key=lambda kv: _order(kv[0])):
        valid = [tail_mean(r, "valid_error", window) for r in group]
        test = [tail_mean(r, "test_error", window) for r in group]
        final = [r.curve("test_error")[1][-1] for r in group]
        rows.append(
            {
                "method": method,
                "choice": label,
                "key": label.partition("=")[0] if label != CONTROL else None,
                "value": label.partition("=")[2] if label != CONTROL else None,
                "seeds": sorted(r.seed for r in group),
                "epochs": group[0].records[-1]["epoch"],
                "valid": _stats(valid),
                "test": _stats(test),
                "final_test": _stats(final),
                "final_tests": final,
            }
        )
    controls = {r["method"]: r for r in rows if r["choice"] == CONTROL}
    for row in rows:
        control = controls.get(row["method"])
        if control is None or row is control:
            row["gain"] = row["gain_se"] = None
            continue
        (m, s), (mc, sc) = row["valid"], control["valid"]
        row["gain"] = mc - m  # Positive: better than the control.
        row["gain_se"] = math.sqrt(s**2 / len(row["seeds"]) + sc**2 / len(control["seeds"]))
    return rows


def _order(group: tuple[str, str]) -> tuple:
    method, label = group
    key, _, value = label.partition("=")
    try:
        number = float(value)
    except ValueError:
        number = 0.0  # Names (e.g. glorot_uniform) sort by the name alone.
    return (method, label != CONTROL, key, number, value)


def choose(rows: Sequence[Mapping[str, Any]], protocol: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per method and field: the best value tried, the protocol's own included (its control), and
    whether a new value is adopted (its gain over the control exceeds the standard error of that
    gain); the field's *effect* is the spread of the scores over its values, the control's
    included."""
    by_field: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    controls = {r["method"]: r for r in rows if r["choice"] == CONTROL}
    for row in rows:
        if row["key"] is not None and row["method"] in controls:
            by_field.setdefault((row["method"], row["key"]), []).append(row)
    choices = []
    for (method, key), group in sorted(by_field.items()):
        best = min(group, key=lambda r: r["valid"][0])
        scores = [r["valid"][0] for r in (*group, controls[method])]
        finite = [s for s in scores if math.isfinite(s)]
        adopted = best["gain"] > best["gain_se"] > 0
        choices.append(
            {
                "method": method,
                "key": key,
                "protocol": protocol.get(key),
                "best": best["value"] if best["gain"] > 0 else protocol.get(key),
                "gain": max(best["gain"], 0.0),
                "gain_se": best["gain_se"] if best["gain"] > 0 else 0.0,
                "adopted": bool(adopted),
                "effect": (max(finite) - min(finite)) if finite else None,
                "diverged": len(finite) < len(scores),
            }
        )
    return choices


def _pct(stat: tuple[float, float]) -> str:
    m, s = stat
    return "diverged" if not math.isfinite(m) else f"{100 * m:.2f} ± {100 * s:.2f}"


def ablation_markdown(
    rows: Sequence[Mapping[str, Any]],
    choices: Sequence[Mapping[str, Any]],
    window: int,
    paper: Mapping[str, float] | None = None,
) -> str:
    """The ablation table, then the choice per method and field."""
    lines = [
        "Each run's validation error (what the choices are made on) averaged over its last "
        f"{window} epochs, and its test error (shown, never used to choose):",
        "",
        f"| method | choice | seeds | valid error, last {window} epochs (%) | gain over the "
        f"control (%) | test error, last {window} epochs (%) | final test error (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = (
            "–"
            if r["gain"] is None or not math.isfinite(r["gain"])
            else f"{100 * r['gain']:+.2f} ± {100 * r['gain_se']:.2f}"
        )
        lines.append(
            f"| {r['method']} | {r['choice']} | {len(r['seeds'])} | {_pct(r['valid'])} | {gain} "
            f"| {_pct(r['test'])} | {_pct(r['final_test'])} |"
        )
    lines += [
        "",
        "mean ± sample standard deviation over seeds; gain: the control's validation score "
        "minus the choice's, ± its standard error.",
        "",
        "| method | field | protocol | best value | gain (%) | adopted | effect of the field (%) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in choices:
        gain = f"{100 * c['gain']:+.2f} ± {100 * c['gain_se']:.2f}"  # Never below 0: finite.
        effect = "–" if c["effect"] is None else f"{100 * c['effect']:.2f}"
        effect += " (some diverged)" if c["diverged"] else ""
        lines.append(
            f"| {c['method']} | {c['key']} | {c['protocol']} | {c['best']} | {gain} | "
            f"{'yes' if c['adopted'] else 'no'} | {effect} |"
        )
    lines += [
        "",
        "adopted: the best value's gain exceeds its standard error; effect: the spread of the "
        "validation scores over the field's values (the control's included).",
    ]
    if paper:
        lines += [
            "",
            "| method | paper's final test error (%) | ours at the best choice (%) | choice "
            "| ours − paper (± se_d) | matches the paper |",
            "|---|---|---|---|---|---|",
        ]
        for method, number in sorted(paper.items()):
            mine = [r for r in rows if r["method"] == method and math.isfinite(r["valid"][0])]
            if not mine:
                continue
            best = min(mine, key=lambda r: r["valid"][0])
            difference, se_d = _against_paper(best["final_tests"], number)
            lines.append(
                f"| {method} | {100 * number:.2f} | {_pct(best['final_test'])} | "
                f"{best['choice']} | {100 * difference:+.2f} ± {100 * se_d:.2f} | "
                f"{'yes' if abs(difference) <= 2 * se_d else 'no'} |"
            )
        lines += [
            "",
            "The best choice is the one with the lowest validation score. se_d as in the claims' "
            "first test (lnexp.studies.pimnist.claims): the seeds' spread and the binomial noise "
            "of the 10,000 test images, ours and the paper's; it matches when "
            "|ours − paper| ≤ 2 se_d.",
        ]
    return "\n".join(lines) + "\n"


def _against_paper(finals: Sequence[float], paper: float) -> tuple[float, float]:
    """``(ours - paper, se_d)`` for the seeds' final test errors, by the claims' rule."""
    from lnexp.studies.pimnist import claims

    ours = claims.mean_error(finals)
    return ours["mean"] - paper, math.sqrt(ours["se"] ** 2 + claims.binomial_se(paper) ** 2)


def paper_final_errors(batch_size: int) -> dict[str, float]:
    """The paper's Figure 6 test error at its last epoch per method, at ``batch_size``."""
    from lnexp.studies.pimnist import task as pimnist

    curves = pimnist.reference_curves()
    return {m: float(c["test_error"][-1]) for (b, m), c in curves.items() if b == batch_size}


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path("workdir", None, "The ablation's grid directory.", must_exist=True)
    cli.define_config("configs/pimnist.py", "The protocol's config file.")
    flag_kinds.count("window", 20, "Epochs at the end of each run that are scored.")
    flags.mark_flag_as_required("workdir")


@command_line
def main(argv: Sequence[str]) -> None:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    workdir = Path(FLAGS.workdir)
    protocol_config = FLAGS.config
    protocol = flatten_dict(protocol_config.to_dict(), sep=".")
    runs = find_runs(workdir)
    if not runs:
        raise UserError(f"No run directories with metrics under {workdir}.")
    rows = ablate(runs, protocol, window=FLAGS.window)
    if not rows:
        raise UserError(f"No run under {workdir} has finished yet.")
    choices = choose(rows, protocol)
    paper = paper_final_errors(protocol_config.batch_size)
    text = ablation_markdown(rows, choices, FLAGS.window, paper)
    (workdir / "ablation.md").write_text(text)
    report = {"window": FLAGS.window, "rows": rows, "choices": choices}
    (workdir / "ablation.json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
    print(f"Wrote {workdir / 'ablation.md'}, {workdir / 'ablation.json'}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
