"""Command line: ``python -m lnexp.main --config=configs/pimnist.py --workdir=runs/x``.

Any config field can be overridden, e.g. ``--config.model.norm=batch --config.batch_size=4``;
configs are locked, so a misspelled key is an error rather than a silent no-op.

Over several hosts, every host runs the same command with ``--coordinator_address``,
``--num_processes`` and ``--process_id`` (or ``--distributed`` on SLURM, Open MPI or a Cloud TPU
pod); see :mod:`lnexp.training.distributed`.
"""

import ml_collections
from absl import app, flags
from ml_collections import config_flags

from lnexp.config_ranges import check_ranges
from lnexp.errors import UserError, command_line, exit_with_error
from lnexp.training import distributed
from lnexp.training.loop import train_and_evaluate
from lnexp.training.metric_writers import quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/pimnist.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])

# A run over several processes (lnexp.training.distributed); unset flags fall back to the
# variables named.
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    "coordinator_address",
    None,
    "HOST:PORT of process 0's coordinator service, the same for every process of a run over "
    "several processes (default: $JAX_COORDINATOR_ADDRESS).",
)
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes of the run (default: $JAX_NUM_PROCESSES)."
)
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's number, 0 .. num_processes - 1 (default: $JAX_PROCESS_ID)."
)
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    "local_device_ids",
    None,
    "Local devices this process uses, e.g. 0,1 (default: $JAX_LOCAL_DEVICE_IDS, else all).",
)
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed",
    None,
    "Let JAX detect the settings above from the cluster (SLURM, Open MPI, Cloud TPU pods) "
    "(default: $LNEXP_DISTRIBUTED=1).",
)


def _unloadable(error: Exception) -> str:
    """The cause of a config file that failed to load: the last line of config_flags' report."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"the config file cannot be loaded: {lines[-1] if lines else error}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a config override naming a missing key reported in one
    paragraph instead of a traceback (config_flags raises AttributeError/KeyError for those)."""
    try:
        return flags.FLAGS(argv)
    except (OSError, ValueError, flags.Error) as e:  # e.g. an unknown config variant
        message = _unloadable(e)
    except (AttributeError, KeyError) as e:
        key = str(e).strip("\"'")
        culprits = [a for a in argv if a.startswith("--config.") and key in a]
        message = (
            f"{' '.join(culprits) or 'a --config override'}: the config has no key {key!r}. "
            "Configs are locked so that a misspelled override fails instead of being ignored; "
            "check the spelling against the config file (every run's config.json lists them)."
        )
    exit_with_error(message)


@command_line
def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    quiet_library_logs()
    config = _CONFIG.value
    if not isinstance(config, ml_collections.ConfigDict):
        # config_flags defers a file that failed to load to the first use of the config.
        try:
            config.to_dict()
        except OSError as e:
            raise UserError(_unloadable(e)) from None
    check_ranges(config)  # Before any work: no process starts on a value out of range.
    distributed.initialize(
        _COORDINATOR_ADDRESS.value,
        _NUM_PROCESSES.value,
        _PROCESS_ID.value,
        _LOCAL_DEVICE_IDS.value,
        _DISTRIBUTED.value,
    )
    train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
