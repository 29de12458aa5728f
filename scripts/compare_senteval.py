"""Downstream scores of skip-thought runs along training, beside the paper's Table 3.

    python scripts/compare_senteval.py --run plain=runs/skipthought/model.norm=none/seed=0 \\
        --run LN=runs/skipthought/model.norm=layer/seed=0 --data_dir PATH/senteval \\
        --tasks MR,SUBJ,TREC,SICK --out results/skipthought_eval

Evaluates every checkpoint not evaluated yet (``RUN/eval/<step>.json``), then writes
OUT/figure.png (score vs training steps, one line per run), OUT/table.md and OUT/table.json.
"""

from pathlib import Path

from absl import flags

from lnexp import cli, flag_kinds
from lnexp.errors import command_line
from lnexp.studies.skipthought import report as senteval_report
from lnexp.studies.skipthought.evaluate import TASKS
from lnexp.training.metric_writers import quiet_library_logs


def define_flags() -> None:
    """The command line's flags (defined only when it runs: :mod:`lnexp.cli`)."""
    flag_kinds.assignments(
        "run", "LABEL=RUN_DIR, once per run.", example="plain=runs/st", value_is_dir=True
    )
    flag_kinds.path("data_dir", None, "SentEval's data/downstream directory.", must_exist=True)
    flag_kinds.names("tasks", ["MR", "SUBJ", "TREC", "SICK"], "Tasks to evaluate.", TASKS)
    flag_kinds.counts("steps", None, "Checkpoint steps to evaluate (default: all).")
    flag_kinds.count("folds", 10, "Cross-validation folds.", low=2)
    flags.DEFINE_bool(
        "standardize", False, "Standardize the vectors first (the paper's protocol does not)."
    )
    flag_kinds.path("out", None, "Output directory.")
    flags.mark_flags_as_required(["run", "data_dir", "out"])


@command_line
def main(argv):
    del argv
    quiet_library_logs()
    f = flags.FLAGS
    runs = {}
    for spec in f.run:
        label, _, path = spec.partition("=")
        runs[label.strip()] = Path(path.strip())
    senteval_report.report(
        runs,
        Path(f.data_dir),
        f.tasks,
        Path(f.out),
        steps=f.steps,
        folds=f.folds,
        standardize=f.standardize,
    )
    print((Path(f.out) / "table.md").read_text())
    print(f"Wrote {f.out}/figure.png, table.md, table.json")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
