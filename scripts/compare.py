"""Run a grid of experiments and compare them with the paper: figure, table, JSON.

Reproduce the paper's Fig. 6 (every cell is a resumable run directory; finished cells are skipped)::

    python scripts/compare.py --config configs/pimnist.py --workdir runs/fig6 \\
        --grid model.norm=none,batch,layer,weight --grid batch_size=128,4 --seeds 3 \\
        --config.data.dir=PATH_TO_MNIST

Train the seeds of each cell together in one program (faster for small models at small
batches; still one run directory per seed, see lnexp/training/loop.py;
`scripts/bench.py --sections seeds` measures the speedup)::

    python scripts/compare.py --config configs/pimnist.py --workdir runs/fig6_small \\
        --grid model.norm=none,layer --seeds 4 --vectorize_seeds \\
        --config.model.hidden_sizes="(100,100)" --config.batch_size=4 \\
        --config.data.dir=PATH_TO_MNIST

``--config.KEY=VALUE`` sets a field of every cell, as for ``python -m lnexp.main`` (after
``--config``: the config is locked, so a key it does not have is an error). Each value of a
``--grid KEY=V1,V2,...`` axis is read as ``--config.KEY=V1`` would be, against the field's type;
all of them are checked before the first cell trains. A cell's directory is named by the values
as written (``model.norm=layer,batch_size=4``), so running the same command again resumes it.

Only aggregate the run directories that exist::

    python scripts/compare.py --workdir runs/fig6 --report

Writes WORKDIR/figure.png, WORKDIR/summary.md and WORKDIR/summary.json.

Also test the paper's Figure 6 claims (final errors, robustness to the batch size, convergence
speed, BN's instability at batch size 4; see lnexp/studies/pimnist/claims.py) and write
WORKDIR/claims.md and WORKDIR/claims.json::

    python scripts/compare.py --workdir runs/fig6 --report --claims \\
        --nll_threshold=1e-2 --error_threshold=0.02
"""

import shutil
import sys
from pathlib import Path

from absl import flags

from lnexp import cli
from lnexp import config as config_files
from lnexp.errors import UserError, command_line
from lnexp.reporting import grid, runs, summary
from lnexp.studies.pimnist import claims
from lnexp.training.metric_writers import quiet_library_logs

_CONFIG = cli.define_config(
    None, "Config file of every cell, e.g. configs/pimnist.py (not needed with --report)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory holding one run directory per cell.")
_GRID = flags.DEFINE_multi_string(
    "grid",
    [],
    "KEY=V1,V2,...: one axis of the grid (repeat for more); each value read as "
    "--config.KEY=V1 would be.",
)
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds 0..N-1 per cell.")
_VECTORIZE_SEEDS = flags.DEFINE_bool(
    "vectorize_seeds",
    False,
    "Train the seeds of each configuration together in one program (jax.vmap over a seed "
    "axis; faster for small models). Not for skip-thoughts.",
)
_REPORT = flags.DEFINE_bool("report", False, "Only aggregate existing run directories.")
_LINES = flags.DEFINE_string("lines", None, "Key drawn as lines (default: the first grid key).")
_COLUMNS = flags.DEFINE_string(
    "columns", None, "Key drawn as columns (default: the second grid key)."
)
_METRICS = flags.DEFINE_list("metrics", ["train_nll", "test_error"], "Rows of the figure.")
_METRIC = flags.DEFINE_string(
    "metric", "test_error", "Metric of the table (valid_error when choosing hyperparameters)."
)
_EXPORT = flags.DEFINE_string(
    "export", None, "Also copy every run's config.json and metrics.jsonl, and the report, here."
)
_AT_EPOCH = flags.DEFINE_integer("at_epoch", None, "Tabulate this epoch instead of the last.")
_CLAIMS = flags.DEFINE_bool(
    "claims",
    False,
    "Also test the paper's Figure 6 claims on the runs (PI-MNIST only) and write "
    "WORKDIR/claims.md and WORKDIR/claims.json.",
)
_NLL_THRESHOLD = flags.DEFINE_float(
    "nll_threshold",
    claims.DEFAULT_NLL_THRESHOLD,
    "--claims: the convergence test counts the epochs until the training NLL is below this.",
)
_ERROR_THRESHOLD = flags.DEFINE_float(
    "error_threshold",
    claims.DEFAULT_ERROR_THRESHOLD,
    "--claims: the convergence test counts the epochs until the test error is below this "
    "(a fraction: 0.02 is 2 %).",
)
flags.mark_flag_as_required("workdir")


@command_line
def main(argv):
    del argv
    quiet_library_logs()
    workdir = Path(_WORKDIR.value)
    keys = [config_files.parse_assignment(g)[0] for g in _GRID.value]
    line_key = _LINES.value or (keys[0] if keys else "model.norm")
    column_key = _COLUMNS.value or (keys[1] if len(keys) > 1 else None)
    if _REPORT.value and not _GRID.value and _COLUMNS.value is None:
        column_key = "batch_size"
    claimed = None
    if not _REPORT.value:
        if _CONFIG.value is None:
            raise UserError("--config is required to run a grid (or pass --report).")
        if _CLAIMS.value:
            _check_claims_config()
        grid.check_grid(_CONFIG.value, _GRID.value)
        cells = grid.expand_grid(_GRID.value, _SEEDS.value)
        config_path, shared = cli.config_source(_CONFIG)
        failures = grid.run_grid(
            config_path, workdir, cells, shared, vectorize_seeds=_VECTORIZE_SEEDS.value
        )
        for cell, message in failures:
            print(f"FAILED {cell.run_dir(workdir)}: {message}", file=sys.stderr)
    rows = summary.report(
        workdir,
        line_key=line_key,
        column_key=column_key,
        metrics=_METRICS.value,
        metric=_METRIC.value,
        at_epoch=_AT_EPOCH.value,
    )
    if _CLAIMS.value:
        claimed = claims.write_claims(
            workdir,
            nll_threshold=_NLL_THRESHOLD.value,
            error_threshold=_ERROR_THRESHOLD.value,
        )
    if _EXPORT.value:
        export_dir = Path(_EXPORT.value)
        exported = runs.export(workdir, export_dir)
        names = ["figure.png", "summary.md", "summary.json"]
        names += [f for f in ("claims.md", "claims.json") if (workdir / f).exists()]
        for name in names:
            shutil.copyfile(workdir / name, export_dir / name)
        print(f"Exported {exported} runs and the report to {export_dir}")
    print(summary.summary_markdown(rows, _METRIC.value))
    print(f"Wrote {workdir / 'figure.png'}, {workdir / 'summary.md'}, {workdir / 'summary.json'}")
    if claimed is not None:
        print(claims.claims_markdown(claimed))
        print(f"Wrote {workdir / 'claims.md'}, {workdir / 'claims.json'}")
    if not _REPORT.value and failures:
        return 1
    return 0


def _check_claims_config() -> None:
    """Before training: --claims needs the PI-MNIST experiment (the claims are Figure 6's)."""
    config_path, _ = cli.config_source(_CONFIG)
    claims.check_experiment(_CONFIG.value.get("experiment"), config_path)


if __name__ == "__main__":
    cli.run(main)
