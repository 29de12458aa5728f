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

from lnexp import cli, flag_kinds
from lnexp import config as config_files
from lnexp.errors import UserError, command_line
from lnexp.reporting import grid, runs, summary
from lnexp.studies.pimnist import claims
from lnexp.training.metric_writers import quiet_library_logs


def define_flags() -> None:
    """The command line's flags (defined only when it runs: :mod:`lnexp.cli`)."""
    cli.define_config(
        None, "Config file of every cell, e.g. configs/pimnist.py (not needed with --report)."
    )
    flag_kinds.path("workdir", None, "Directory holding one run directory per cell.")
    flag_kinds.assignments(
        "grid",
        "KEY=V1,V2,...: one axis of the grid (repeat for more); each value read as "
        "--config.KEY=V1 would be.",
        example="model.norm=none,layer",
    )
    flag_kinds.count("seeds", 1, "Seeds 0..N-1 per cell.")
    flags.DEFINE_bool(
        "vectorize_seeds",
        False,
        "Train the seeds of each configuration together in one program (jax.vmap over a seed "
        "axis; faster for small models). Not for skip-thoughts.",
    )
    flags.DEFINE_bool("report", False, "Only aggregate existing run directories.")
    flag_kinds.text(
        "lines", None, "Key drawn as lines (default: the first --grid key; else model.norm)."
    )
    flag_kinds.text(
        "columns",
        None,
        "Key drawn as columns (default: the second --grid key; batch_size with --report and "
        "no --grid).",
    )
    flag_kinds.texts(
        "metrics",
        None,
        "Rows of the figure (default: the study's, e.g. train_nll,test_error for PI-MNIST, "
        "train_loss,valid_nll,valid_next_ppl for skip-thoughts).",
        pattern=METRIC_NAME,
        example="train_nll,test_error",
    )
    flag_kinds.text(
        "metric",
        None,
        "Metric of the table (default: the study's, e.g. test_error for PI-MNIST, valid_nll "
        "for skip-thoughts; valid_error when choosing hyperparameters).",
        pattern=METRIC_NAME,
    )
    flag_kinds.path(
        "export", None, "Also copy every run's config.json and metrics.jsonl, and the report, here."
    )
    flag_kinds.count("at_epoch", None, "Tabulate this epoch instead of the last.")
    flags.DEFINE_bool(
        "claims",
        False,
        "Also test the paper's Figure 6 claims on the runs (PI-MNIST only) and write "
        "WORKDIR/claims.md and WORKDIR/claims.json.",
    )
    flag_kinds.number(
        "nll_threshold",
        claims.DEFAULT_NLL_THRESHOLD,
        "--claims: the convergence test counts the epochs until the training NLL is below this.",
        low=0.0,
        open_low=True,
    )
    flag_kinds.number(
        "error_threshold",
        claims.DEFAULT_ERROR_THRESHOLD,
        "--claims: the convergence test counts the epochs until the test error is below this "
        "(a fraction: 0.02 is 2 %).",
        low=0.0,
        high=1.0,
        open_low=True,
    )
    flags.mark_flag_as_required("workdir")


METRIC_NAME = r"[a-z][a-z0-9_]*"
"""A metric's name as a record holds it (``test_error``)."""


@command_line
def main(argv):
    del argv
    quiet_library_logs()
    f = flags.FLAGS
    grid_axes = f.grid or []
    workdir = Path(f.workdir)
    keys = [config_files.parse_assignment(g)[0] for g in grid_axes]
    line_key = f.lines or (keys[0] if keys else "model.norm")
    column_key = f.columns or (keys[1] if len(keys) > 1 else None)
    if f.report and not grid_axes and f.columns is None:
        column_key = "batch_size"
    claimed = None
    if not f.report:
        if f.config is None:
            raise UserError("--config is required to run a grid (or pass --report).")
        if f.claims:
            _check_claims_config()
        grid.check_grid(f.config, grid_axes)
        cells = grid.expand_grid(grid_axes, f.seeds)
        config_path, shared = cli.config_source(f[cli.CONFIG_FLAG])
        failures = grid.run_grid(
            config_path, workdir, cells, shared, vectorize_seeds=f.vectorize_seeds
        )
        for cell, message in failures:
            print(f"FAILED {cell.run_dir(workdir)}: {message}", file=sys.stderr)
    summary.report(
        workdir,
        line_key=line_key,
        column_key=column_key,
        metrics=f.metrics,
        metric=f.metric,
        at_epoch=f.at_epoch,
    )
    if f.claims:
        claimed = claims.write_claims(
            workdir,
            nll_threshold=f.nll_threshold,
            error_threshold=f.error_threshold,
        )
    if f.export:
        export_dir = Path(f.export)
        exported = runs.export(workdir, export_dir)
        names = ["figure.png", "summary.md", "summary.json"]
        names += [n for n in ("claims.md", "claims.json") if (workdir / n).exists()]
        for name in names:
            shutil.copyfile(workdir / name, export_dir / name)
        print(f"Exported {exported} runs and the report to {export_dir}")
    print((workdir / "summary.md").read_text(), end="")
    print(f"Wrote {workdir / 'figure.png'}, {workdir / 'summary.md'}, {workdir / 'summary.json'}")
    if claimed is not None:
        print(claims.claims_markdown(claimed))
        print(f"Wrote {workdir / 'claims.md'}, {workdir / 'claims.json'}")
    if not f.report and failures:
        return 1
    return 0


def _check_claims_config() -> None:
    """Before training: --claims needs the PI-MNIST experiment (the claims are Figure 6's)."""
    f = flags.FLAGS
    config_path, _ = cli.config_source(f[cli.CONFIG_FLAG])
    claims.check_experiment(f.config.get("experiment"), config_path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
