"""Downstream scores of skip-thought runs along training, beside the paper's Table 3.

    python scripts/compare_senteval.py --run plain=runs/skipthought/model.norm=none/seed=0 \\
        --run LN=runs/skipthought/model.norm=layer/seed=0 --data_dir PATH/senteval \\
        --tasks MR,SUBJ,TREC,SICK --out results/skipthought_eval

Evaluates every checkpoint not evaluated yet (``RUN/eval/<step>.json``), then writes
OUT/figure.png (score vs training steps, one line per run), OUT/table.md and OUT/table.json.
"""

from pathlib import Path

from absl import flags

from lnexp import cli
from lnexp.errors import UserError, command_line
from lnexp.studies.skipthought import report as senteval_report
from lnexp.training.metric_writers import quiet_library_logs

_RUNS = flags.DEFINE_multi_string("run", [], "LABEL=RUN_DIR, once per run.")
_DATA = flags.DEFINE_string("data_dir", None, "SentEval's data/downstream directory.")
_TASKS = flags.DEFINE_list("tasks", ["MR", "SUBJ", "TREC", "SICK"], "Tasks to evaluate.")
_STEPS = flags.DEFINE_list("steps", None, "Checkpoint steps to evaluate (default: all).")
_FOLDS = flags.DEFINE_integer("folds", 10, "Cross-validation folds.")
_STANDARDIZE = flags.DEFINE_bool(
    "standardize", False, "Standardize the vectors first (the paper's protocol does not)."
)
_OUT = flags.DEFINE_string("out", None, "Output directory.")


@command_line
def main(argv):
    del argv
    quiet_library_logs()
    if not _RUNS.value or not _DATA.value or not _OUT.value:
        raise UserError("--run (at least one), --data_dir and --out are required.")
    runs = {}
    for spec in _RUNS.value:
        label, sep, path = spec.partition("=")
        if not sep or not label or not path:
            raise UserError(f"--run {spec!r}: expected LABEL=RUN_DIR.")
        runs[label] = Path(path)
    steps = [int(s) for s in _STEPS.value] if _STEPS.value else None
    senteval_report.report(
        runs,
        Path(_DATA.value),
        _TASKS.value,
        Path(_OUT.value),
        steps=steps,
        folds=_FOLDS.value,
        standardize=_STANDARDIZE.value,
    )
    print((Path(_OUT.value) / "table.md").read_text())
    print(f"Wrote {_OUT.value}/figure.png, table.md, table.json")


if __name__ == "__main__":
    cli.run(main)
