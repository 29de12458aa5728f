"""DRAW's comparison, the paper's Fig. 4: each model's test bound at the last epoch and how many
epochs each needs to reach the baseline's final bound ("the layer normalized DRAW converges
almost twice as fast"), ours beside the same measures on the paper's curves.

Command line (a grid of ``scripts/compare.py`` over ``model.norm``)::

    python -m lnexp.studies.draw.report --workdir runs/draw --out results/draw --export

writes ``OUT/draw.md``, ``OUT/draw.json`` and ``OUT/draw.png`` (the test bound against epochs,
ours solid, the paper's dashed); ``--export`` also copies the runs without checkpoints into
``OUT/draw_runs`` (:func:`lnexp.reporting.runs.export`), from which the report can be made again.

"Reaches" is the first evaluated epoch whose test bound (the mean over seeds) is at or below the
target; the speed-up is the baseline's epochs over the model's. The paper's curves are read the
same way, at the epoch where our runs end (the paper's baseline at that epoch is the target) and
at the last epoch the figure shows. Per seed, each model's run is read against the baseline's run
of the same seed (its final bound the target), which gives the speed-up's spread.

Verdicts with several seeds: LN's lower bound **holds** when LN's mean is below the baseline's
by more than twice the standard error of the difference (``sqrt(s_ln^2/n_ln + s_b^2/n_b)``),
**does not hold** when above it by as much, and is **inconclusive** in between; "almost twice as
fast" **holds** when every seed's speed-up is at least :data:`TWICE`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags

from lnexp import cli, flag_kinds
from lnexp.errors import UserError, command_line
from lnexp.reporting import runs as run_files
from lnexp.reporting.runs import Run
from lnexp.studies.draw import task as draw
from lnexp.training.metric_writers import quiet_library_logs

METRIC = "test_bound"
BASELINE = "none"
TWICE = 1.5
"""A speed-up at or above this counts as "almost twice as fast"."""

NAMES = {"none": "baseline", "cell": "LN (on c_t)", "layer": "LN (whole LSTM)", "weight": "WN"}


def epochs_to_reach(epochs: np.ndarray, values: np.ndarray, target: float) -> float | None:
    """The first epoch whose value is at or below ``target`` (``None``: never)."""
    hits = np.flatnonzero(np.asarray(values) <= target)
    return float(np.asarray(epochs)[hits[0]]) if len(hits) else None


def _mean_curve(cell_runs: Sequence[Run], metric: str) -> tuple[np.ndarray, np.ndarray]:
    curves = [r.curve(metric) for r in cell_runs]
    n = min(len(e) for e, _ in curves)
    return curves[0][0][:n], np.mean([v[:n] for _, v in curves], axis=0)


def _speed(curves: dict[str, tuple[np.ndarray, np.ndarray]], target: float) -> dict[str, Any]:
    reach = {norm: epochs_to_reach(e, v, target) for norm, (e, v) in curves.items()}
    base = reach.get(BASELINE)
    return {
        "target": target,
        "epochs_to_reach": reach,
        "speedup": {
            norm: (base / epochs if base is not None and epochs else None)
            for norm, epochs in reach.items()
        },
    }


def paper_speed(horizon: float | None = None) -> dict[str, Any]:
    """The same measure on the paper's curves, the target being the paper's baseline at
    ``horizon`` epochs (linearly interpolated; ``None``: the last epoch the figure shows)."""
    curves = {
        key[0]: (c[f"{METRIC}_epoch"], c[METRIC]) for key, c in draw.reference_curves().items()
    }
    epochs, values = curves[BASELINE]
    at = float(epochs[-1]) if horizon is None else float(horizon)
    target = float(np.interp(at, epochs, values))
    return dict(_speed(curves, target), at_epoch=at)


def _cut(run: Run, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    epochs, values = run.curve(METRIC)
    return epochs[epochs <= horizon], values[epochs <= horizon]


def per_seed_speed(
    cell_runs: Sequence[Run], baselines: Sequence[Run], horizon: int
) -> list[dict[str, Any]]:
    """Per seed that both have: the baseline's final bound at ``horizon`` (the target), the
    first epoch each of the two runs reaches it, and the speed-up (``None``: never reached)."""
    base_by_seed = {r.seed: r for r in baselines}
    rows = []
    for run in sorted(cell_runs, key=lambda r: r.seed):
        if (base := base_by_seed.get(run.seed)) is None:
            continue
        base_curve, curve = _cut(base, horizon), _cut(run, horizon)
        target = float(base_curve[1][-1])
        reach, base_reach = epochs_to_reach(*curve, target), epochs_to_reach(*base_curve, target)
        rows.append(
            {
                "seed": run.seed,
                "target": target,
                "epochs_to_reach": reach,
                "baseline_epochs_to_reach": base_reach,
                "speedup": base_reach / reach if reach else None,
            }
        )
    return rows


def study(workdir: Path) -> dict[str, Any]:
    """The comparison of the runs of ``workdir`` (see the module docstring)."""
    by_norm: dict[str, list[Run]] = {}
    for run in run_files.find_runs(Path(workdir)):
        if run.config.get("experiment") != "draw":
            raise UserError(
                f"{workdir}/{run.cell} is not a DRAW run: pass a grid of configs/draw.py."
            )
        by_norm.setdefault(run.config["model.norm"], []).append(run)
    if BASELINE not in by_norm:
        raise UserError(
            f"{workdir} has no baseline run (model.norm=none) with metrics: run the grid "
            "--grid model.norm=none,cell first."
        )
    models, curves = {}, {}
    for norm, cell_runs in sorted(by_norm.items(), key=lambda item: item[0] != BASELINE):
        epochs, bound = _mean_curve(cell_runs, METRIC)
        curves[norm] = (epochs, bound)
        last = [r.records[len(epochs) - 1] for r in cell_runs]
        finals = np.array([r[METRIC] for r in last])
        models[norm] = {
            "seeds": sorted(r.seed for r in cell_runs),
            "epochs": int(epochs[-1]),
            "test_bound": float(finals.mean()),
            "test_bound_std": float(finals.std(ddof=1)) if len(finals) > 1 else None,
            "test_recon": float(np.mean([r["test_recon"] for r in last])),
            "test_kl": float(np.mean([r["test_kl"] for r in last])),
            "valid_bound": float(np.mean([r["valid_bound"] for r in last])),
            "best_test_bound": float(bound.min()),
            "wall_s": float(np.mean([r.get("wall_s", np.nan) for r in last])),
            "curve": {"epoch": epochs.tolist(), METRIC: bound.tolist()},
        }
    horizon = min(m["epochs"] for m in models.values())
    for norm, cell_runs in by_norm.items():
        models[norm]["per_seed"] = per_seed_speed(cell_runs, by_norm[BASELINE], horizon)
    cut = {n: (e[e <= horizon], v[e <= horizon]) for n, (e, v) in curves.items()}
    ours = _speed(cut, float(cut[BASELINE][1][-1]))
    result = {
        "horizon": horizon,
        "models": models,
        "ours": ours,
        "paper_at_horizon": paper_speed(horizon),
        "paper_at_end": paper_speed(),
    }
    result["verdicts"] = verdicts(result)
    return result


def verdicts(result: dict[str, Any]) -> list[str]:
    """One line per claim: the final bound and the speed of LN (``norm='cell'``) against the
    baseline."""
    models, ours = result["models"], result["ours"]
    if "cell" not in models:
        return ["No LN run (model.norm=cell): nothing to compare with the baseline."]
    base, ln = models[BASELINE], models["cell"]
    diff = ln["test_bound"] - base["test_bound"]
    single = [name for name, m in (("LN", ln), ("the baseline", base)) if len(m["seeds"]) < 2]
    if not np.isfinite(diff):
        bound = "inconclusive"
        spread = f"{ln['test_bound']:.2f} vs {base['test_bound']:.2f} nats"
        noise = "a run diverged: its bound is not finite"
    elif single:
        bound = "holds" if diff < 0 else "does not hold"
        spread = f"{ln['test_bound']:.2f} vs {base['test_bound']:.2f} nats"
        whose = "each" if len(single) == 2 else f"for {single[0]}"
        noise = f"{diff:+.2f} (one seed {whose}: no error bar)"
    else:
        se = float(
            np.sqrt(
                ln["test_bound_std"] ** 2 / len(ln["seeds"])
                + base["test_bound_std"] ** 2 / len(base["seeds"])
            )
        )
        bound = "holds" if diff < -2 * se else "does not hold" if diff > 2 * se else "inconclusive"
        spread = (
            f"{ln['test_bound']:.2f} ± {ln['test_bound_std']:.2f} over {len(ln['seeds'])} "
            f"seeds vs {base['test_bound']:.2f} ± {base['test_bound_std']:.2f} over "
            f"{len(base['seeds'])}"
        )
        noise = f"{diff:+.2f} ± {se:.2f} (se)" + (f", {abs(diff) / se:.1f} se" if se else "")
    lines = [
        f"**LN ends with a lower test bound: {bound}** ({spread} at epoch "
        f"{result['horizon']}: {noise}; the paper: 82.09 vs 82.36 at epoch 200)."
    ]
    speedup = ours["speedup"].get("cell")
    reach = ours["epochs_to_reach"].get("cell")
    paper = result["paper_at_horizon"]["speedup"].get("cell")
    if speedup is None:
        verdict = "does not hold (LN never reaches the baseline's final bound)"
    elif speedup >= TWICE:
        verdict = "holds"
    elif speedup > 1:
        verdict = "faster, not twice as fast"
    else:
        verdict = "does not hold"
    seeds = ln.get("per_seed", [])
    per_seed = [r["speedup"] for r in seeds]
    if len(per_seed) > 1:
        twice = sum(x is not None and x >= TWICE for x in per_seed)
        if twice == len(per_seed):
            verdict = "holds"
        elif twice:
            verdict = f"holds on {twice} of {len(per_seed)} seeds"
        elif all(x is not None and x > 1 for x in per_seed):
            verdict = "faster, not twice as fast"
        else:
            verdict = "does not hold"
    paper_text = f"{paper:.2f}x on the paper's curves over the same epochs" if paper else "n/a"
    by_seed = ""
    if len(per_seed) > 1:
        finite = [x for x in per_seed if x is not None]
        listed = ", ".join(_speedup_text(x) for x in per_seed)
        mean = (
            f"; mean {np.mean(finite):.2f}x ± {np.std(finite, ddof=1):.2f}"
            if len(finite) == len(per_seed)
            else ""
        )
        by_seed = f"; per seed, against the same seed's baseline: {listed}{mean}"
    lines.append(
        f"**LN converges almost twice as fast: {verdict}** (the mean curves: LN reaches the "
        f"baseline's final {ours['target']:.2f} nats at epoch "
        f"{reach if reach is None else int(reach)}, the baseline at "
        f"{int(ours['epochs_to_reach'][BASELINE])}: "
        f"{'-' if speedup is None else f'{speedup:.2f}x'}{by_seed}; {paper_text})."
    )
    return lines


def _speedup_text(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f}x"


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The tables and verdicts of :func:`study`."""
    lines = [
        f"Test variational bound in nats (lower is better) at epoch {result['horizon']}; "
        f"'reaches' = first epoch at or below the baseline's final {result['ours']['target']:.2f}.",
        "",
        "| model | seeds | test bound | reconstruction | KL | valid bound | best | reaches "
        f"| speed-up | paper: reaches its baseline's epoch-{result['horizon']} bound "
        "| wall time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    paper = result["paper_at_horizon"]
    for norm, m in result["models"].items():
        std = m["test_bound_std"]
        bound = f"{m['test_bound']:.2f}" + ("" if std is None else f" ± {std:.2f}")
        reach = result["ours"]["epochs_to_reach"][norm]
        paper_reach = paper["epochs_to_reach"].get(norm)
        lines.append(
            f"| {NAMES.get(norm, norm)} (`{norm}`) | {len(m['seeds'])} | {bound} | "
            f"{m['test_recon']:.2f} | {m['test_kl']:.2f} | {m['valid_bound']:.2f} | "
            f"{m['best_test_bound']:.2f} | {_fmt(reach, 0)} | "
            f"{_fmt(result['ours']['speedup'][norm])}x | {_fmt(paper_reach, 1)} | "
            f"{m['wall_s'] / 60:.0f} min |"
        )
    end = result["paper_at_end"]
    lines += [
        "",
        f"The paper's curves: its baseline is at {paper['target']:.2f} nats at epoch "
        f"{paper['at_epoch']:g}; at the figure's last epoch ({end['at_epoch']:g}) at "
        f"{end['target']:.2f}, which LN reaches at epoch "
        f"{_fmt(end['epochs_to_reach'].get('cell'), 1)} "
        f"({_fmt(end['speedup'].get('cell'))}x) and WN at "
        f"{_fmt(end['epochs_to_reach'].get('weight'), 1)}.",
        "",
        *[f"- {v}" for v in result["verdicts"]],
        "",
    ]
    rows = [(n, r) for n, m in result["models"].items() if n != BASELINE for r in m["per_seed"]]
    if rows:
        lines += [
            "Per seed, each model against the baseline's run of the same seed:",
            "",
            "| model | seed | baseline's final bound | model reaches it at epoch | baseline "
            "reaches it at epoch | speed-up |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {NAMES.get(n, n)} (`{n}`) | {r['seed']} | {r['target']:.2f} | "
            f"{_fmt(r['epochs_to_reach'], 0)} | {_fmt(r['baseline_epochs_to_reach'], 0)} | "
            f"{_speedup_text(r['speedup'])} |"
            for n, r in rows
        ]
        lines.append("")
    return "\n".join(lines)


def figure(result: dict[str, Any], path: Path) -> None:
    """The test bound against epochs: ours solid, the paper's dashed (same colour per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    colors = {"none": "C0", "cell": "C1", "layer": "C2", "weight": "C3"}
    for norm, m in result["models"].items():
        ax.plot(m["curve"]["epoch"], m["curve"][METRIC], color=colors.get(norm, "C4"),
                label=f"{NAMES.get(norm, norm)} (ours)")  # fmt: skip
    for (norm,), c in sorted(draw.reference_curves().items()):
        ax.plot(c[f"{METRIC}_epoch"], c[METRIC], "--", linewidth=1, color=colors.get(norm, "C4"),
                label=f"{NAMES.get(norm, norm)} (paper)")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("test variational bound (nats)")
    top = max(max(m["curve"][METRIC][1:] or m["curve"][METRIC]) for m in result["models"].values())
    ax.set_ylim(78, max(105, top + 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(workdir: Path, out: Path, *, export: bool = False) -> str:
    """Writes ``draw.md``, ``draw.json`` and ``draw.png`` into ``out``; returns the markdown."""
    result = study(workdir)
    out.mkdir(parents=True, exist_ok=True)
    if export:
        run_files.export(Path(workdir), out / "draw_runs")
    text = markdown(result)
    (out / "draw.md").write_text(text)
    (out / "draw.json").write_text(json.dumps(result, indent=1) + "\n")
    figure(result, out / "draw.png")
    return text


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path(
        "workdir", None, "A grid over model.norm (of scripts/compare.py).", must_exist=True
    )
    flag_kinds.path("out", None, "Directory for the report.")
    flags.DEFINE_bool("export", False, "Also copy the runs' metrics into OUT/draw_runs.")
    flags.mark_flags_as_required(["workdir", "out"])


@command_line
def main(argv: Sequence[str]) -> int:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    print(write(Path(FLAGS.workdir), Path(FLAGS.out), export=FLAGS.export))
    print(f"Wrote the report into {FLAGS.out}")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
