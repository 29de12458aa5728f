"""Command line: ``python -m lnexp.main --config=configs/pimnist.py --workdir=runs/x``.

Any config field can be overridden, e.g. ``--config.model.norm=batch --config.batch_size=4``;
configs are locked, so a misspelled key is an error rather than a silent no-op.
"""

import logging as std_logging
import sys
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from lnexp.errors import UserError
from lnexp.train import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/pimnist.py.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class _OnlyLnexpInfo(std_logging.Filter):
    """Keeps lnexp's own INFO lines; libraries (orbax logs every checkpoint step) only warn."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PACKAGE_DIR)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    logging.get_absl_handler().addFilter(_OnlyLnexpInfo())
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except UserError as e:
        logging.flush()
        print(f"\nerror: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
