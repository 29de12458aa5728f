"""Command line: ``python -m lnexp.main --config=configs/pimnist.py --workdir=runs/x``.

Any config field can be overridden, e.g. ``--config.model.norm=batch --config.batch_size=4``
(after ``--config``; each value is read as its field's type); configs are locked, so a
misspelled key is an error rather than a silent no-op (:mod:`lnexp.cli`).

Over several hosts, every host runs the same command with ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or ``--distributed`` on SLURM, Open MPI or a Cloud TPU
pod); see :mod:`lnexp.training.distributed`.
"""

from absl import flags

from lnexp import cli, flag_kinds
from lnexp.errors import command_line
from lnexp.training import distributed
from lnexp.training.loop import train_and_evaluate
from lnexp.training.metric_writers import quiet_library_logs


def define_flags() -> None:
    """This command's flags (defined only when it runs: :mod:`lnexp.cli`)."""
    cli.define_config(None, "Experiment config file, e.g. configs/pimnist.py.")
    flag_kinds.path("workdir", None, "Run directory (created; resumed if it exists).")
    flags.mark_flags_as_required(["config", "workdir"])
    # A run over several processes (lnexp.training.distributed); unset flags fall back to the
    # variables named.
    flag_kinds.text(
        "coordinator_address",
        None,
        "HOST:PORT of process 0's coordinator service, the same for every process of a run "
        "over several processes (default: $JAX_COORDINATOR_ADDRESS).",
    )
    flag_kinds.count(
        "num_processes", None, "Number of processes of the run (default: $JAX_NUM_PROCESSES)."
    )
    flag_kinds.count(
        "process_id",
        None,
        "This process's number, 0 .. num_processes - 1 (default: $JAX_PROCESS_ID).",
        low=0,
    )
    flag_kinds.counts(
        "local_device_ids",
        None,
        "Local devices this process uses, e.g. 0,1 (default: $JAX_LOCAL_DEVICE_IDS, else all).",
    )
    flags.DEFINE_bool(
        "distributed",
        None,
        "Let JAX detect the settings above from the cluster (SLURM, Open MPI, Cloud TPU pods) "
        "(default: $LNEXP_DISTRIBUTED=1).",
    )


@command_line
def main(argv: list[str]) -> None:
    del argv  # cli.run refuses arguments that are not flags.
    quiet_library_logs()
    f = flags.FLAGS
    config = f.config  # Checked by the flag parsing (lnexp.cli): ranges, names, model.
    distributed.initialize(
        f.coordinator_address, f.num_processes, f.process_id, f.local_device_ids, f.distributed
    )
    train_and_evaluate(config, f.workdir)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
