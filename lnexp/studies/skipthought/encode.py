"""Sentence vectors from a trained skip-thought run: ``lnexp.encode(workdir, sentences)``.

Command line (one sentence per line in, a ``(lines, hidden)`` float32 ``.npy`` out)::

    python -m lnexp.studies.skipthought.encode --workdir=runs/st-ln --input=sentences.txt \\
        --output=vectors.npy

A run directory holds everything needed: ``config.json``, ``vocab.txt`` and the checkpoints, of
which only the model's variables are read (no optimizer is built); the training corpus is not read.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging
from flax import nnx

from lnexp import cli, flag_kinds
from lnexp.data.text import Vocabulary, sentence_ids_from_text
from lnexp.errors import UserError, command_line
from lnexp.studies.skipthought.task import build_model
from lnexp.training.metric_writers import quiet_library_logs
from lnexp.training.run_dir import RunDir

# Sentences per device call; the last call is padded, so results do not depend on the count.
ENCODE_BATCH = 128


class SentenceEncoder:
    """The encoder of a trained skip-thought run.

    Args:
        path: A run directory (its latest checkpoint) or one checkpoint directory inside it
            (``RUN/checkpoints/<step>``).
        step: A checkpoint step of the run directory instead of the latest.

    Example:
        ``SentenceEncoder("runs/st-ln")(["A sentence.", "Another one."]).shape == (2, hidden)``
    """

    def __init__(self, path: str | Path, step: int | None = None, *, newest: bool = False):
        path = Path(path).resolve()  # orbax needs absolute paths.
        if path.parent.name == "checkpoints" and path.name.isdigit():
            workdir, step, newest = path.parent.parent, int(path.name), False
        else:
            workdir = path
        config_file, vocab_file = workdir / "config.json", workdir / "vocab.txt"
        for f in (config_file, vocab_file):
            if not f.exists():
                raise UserError(
                    f"{f} is missing: {workdir} is not a skip-thought run directory. Pass the "
                    "--workdir of a training run of configs/skipthought.py (or a checkpoint in it)."
                )
        self.config = ml_collections.ConfigDict(RunDir(workdir).read_config())
        if self.config.experiment != "skipthought":
            raise UserError(f"{workdir} is a {self.config.experiment!r} run, not skip-thought.")
        try:
            self.vocab = Vocabulary.load(vocab_file)
        except (UnicodeDecodeError, ValueError) as e:
            raise UserError(
                f"{vocab_file} is damaged ({e}). Run the training command of the run again "
                "(python -m lnexp.main with its --config and --workdir): it resumes at its last "
                "checkpoint, trains nothing more when it is finished, and writes the file anew. "
                "The checkpoints are untouched."
            ) from None
        model = build_model(self.config, len(self.vocab), nnx.Rngs(0))
        # Without a step: the newest that reads back (damaged ones set aside).
        self.step, self.model = RunDir(workdir).trained_model(model, None if newest else step)
        # float32 vectors whatever the run's computation dtype (config.dtype).
        self._encode = nnx.jit(lambda m, ids: m.encode(ids).astype(jnp.float32))

    @property
    def dim(self) -> int:
        return self.model.encoder.hidden_features

    def __call__(self, sentences: Sequence[str]) -> np.ndarray:
        """``(len(sentences), hidden)`` float32 vectors; unknown words read as ``<unk>``."""
        ids, _ = sentence_ids_from_text(self.vocab, list(sentences), self.config.data.max_tokens)
        out = []
        for start in range(0, len(ids), ENCODE_BATCH):
            batch = ids[start : start + ENCODE_BATCH]
            padded = np.zeros((ENCODE_BATCH, ids.shape[1]), np.int32)
            padded[: len(batch)] = batch
            out.append(np.asarray(self._encode(self.model, jnp.asarray(padded)))[: len(batch)])
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)


@functools.lru_cache(maxsize=4)
def _cached_encoder(path: str, step: int | None, newest: bool = False) -> SentenceEncoder:
    return SentenceEncoder(path, step, newest=newest)


def encode(
    workdir_or_checkpoint: str | Path, sentences: Sequence[str], *, step: int | None = None
) -> np.ndarray:
    """Encodes ``sentences`` with a trained skip-thought run.

    The encoder of each (run, checkpoint) is loaded once and kept for later calls; without
    ``step`` the run's latest checkpoint is looked up on every call, so a run that trained on
    since is encoded with its new checkpoint.

    Args:
        workdir_or_checkpoint: A run directory or a checkpoint directory inside it.
        sentences: Any number of raw sentences.
        step: A checkpoint step instead of the latest.

    Returns:
        ``(len(sentences), hidden)`` float32.
    """
    path = Path(workdir_or_checkpoint).resolve()
    newest = step is None
    if step is None and (path / "checkpoints").is_dir():
        step = RunDir(path).latest_step()  # The cache's key (a damaged one is set aside).
    return _cached_encoder(str(path), step, newest)(sentences)


@command_line
def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    try:
        lines = Path(FLAGS.input).read_text(encoding="utf-8", errors="replace").splitlines()
        vectors = encode(FLAGS.workdir, lines, step=FLAGS.checkpoint)
        with open(FLAGS.output, "wb") as f:  # The very path given (np.save adds .npy to a name).
            np.save(f, vectors)
    except OSError as e:
        raise UserError(str(e)) from None
    logging.info("Encoded %d sentences to %s %s.", len(lines), FLAGS.output, vectors.shape)


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path("workdir", None, "Run directory (or a checkpoint in it).", must_exist=True)
    flag_kinds.path(
        "input", None, "Text file, one sentence per line.", kind="file", must_exist=True
    )
    flag_kinds.path("output", None, "Where the .npy of vectors goes.", kind="file")
    flag_kinds.count("checkpoint", None, "Checkpoint step (default: the latest).", low=0)
    flags.mark_flags_as_required(["workdir", "input", "output"])


if __name__ == "__main__":
    define_flags()
    cli.run(main)
