"""Text from a trained character-level Transformer run.

Command line (prints the prompt and its continuation)::

    python -m lnexp.studies.transformer.sample --workdir=runs/tf-pre-ln --prompt "It was a dark" \\
        --length 200 --temperature 0.8 --seed 0

Library::

    from lnexp.studies.transformer.sample import LanguageModel
    lm = LanguageModel("runs/tf-pre-ln")
    text = lm.sample("It was a dark", length=200, temperature=0.8, seed=0)

A run directory holds everything needed: ``config.json``, ``chars.json`` (the vocabulary) and
the checkpoints, of which only the model's variables are read. Sampling is one jitted loop: at
step ``t`` the model reads the last ``context`` characters (all of them while there are fewer),
and the next character is drawn from ``softmax(logits / temperature)`` (restricted to the
``top_k`` likeliest when given; ``temperature=0`` takes the likeliest) with the key
``fold_in(key(seed), t)``, so a seed gives the same text on every call. The unknown-character id
is never drawn.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags, logging
from flax import nnx

from lnexp import cli, flag_kinds
from lnexp.data.chars import UNKNOWN, decode, encode
from lnexp.errors import UserError, command_line
from lnexp.studies.transformer.task import build_model
from lnexp.training.metric_writers import quiet_library_logs
from lnexp.training.run_dir import RunDir


def read_chars(path: Path) -> str:
    """The characters of a run's ``chars.json`` (written by the training run: a JSON string).

    Raises:
        UserError: when the file is damaged (not a JSON string of characters).
    """
    try:
        chars = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        chars = None
    if isinstance(chars, str) and chars:
        return chars
    raise UserError(
        f"{path} is damaged (not the JSON string of the corpus's characters). Run the training "
        "command of the run again (python -m lnexp.main with its --config and --workdir): it "
        "resumes at its last checkpoint, trains nothing more when it is finished, and writes "
        "the file anew. The checkpoints are untouched."
    )


class LanguageModel:
    """The model of a trained Transformer run.

    Args:
        workdir: A run directory of ``configs/transformer.py``.
        step: A checkpoint step instead of the newest one that reads back.
    """

    def __init__(self, workdir: str | Path, step: int | None = None):
        workdir = Path(workdir).resolve()  # orbax needs absolute paths.
        config_file, chars_file = workdir / "config.json", workdir / "chars.json"
        for f in (config_file, chars_file):
            if not f.exists():
                raise UserError(
                    f"{f} is missing: {workdir} is not a Transformer run directory. Pass the "
                    "--workdir of a training run of configs/transformer.py."
                )
        self.config = ml_collections.ConfigDict(RunDir(workdir).read_config())
        if self.config.experiment != "transformer":
            raise UserError(f"{workdir} is a {self.config.experiment!r} run, not a Transformer.")
        self.chars = read_chars(chars_file)
        model = build_model(self.config, len(self.chars) + 1, nnx.Rngs(0))
        self.step, self.model = RunDir(workdir).trained_model(model, step)

    @property
    def context(self) -> int:
        return self.model.context

    def sample(
        self,
        prompt: str,
        length: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ) -> str:
        """``prompt`` followed by ``length`` sampled characters.

        Raises:
            UserError: ``length`` < 0, ``temperature`` < 0 or ``top_k`` < 1.
        """
        if length < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise UserError(
                f"--length={length}, --temperature={temperature}, --top_k={top_k}: the length "
                "must be >= 0, the temperature >= 0 (0 = always the likeliest character) and "
                "top_k >= 1 (or unset)."
            )
        ids = encode(prompt, self.chars)
        if (ids == UNKNOWN).any():
            unknown = sorted({c for c, i in zip(prompt, ids, strict=True) if i == UNKNOWN})
            logging.warning("Characters not in the training books read as unknown: %r", unknown)
        if len(ids) == 0:  # Start a paragraph.
            ids = encode("\n", self.chars)
        buffer = np.zeros(max(len(ids) + length, self.context), np.int32)
        buffer[: len(ids)] = ids
        top_k = None if top_k is None else min(top_k, len(self.chars))
        out = _generate(self.model, jnp.asarray(buffer), len(ids), length, temperature, top_k, seed)
        return prompt + decode(np.asarray(out)[len(ids) : len(ids) + length], self.chars)


@functools.partial(nnx.jit, static_argnums=(2, 3, 4, 5))
def _generate(model, buffer, start: int, length: int, temperature: float, top_k, seed):
    context = model.context
    key = jax.random.key(seed)

    def step(t, buffer):
        first = jnp.maximum(t - context, 0)
        window = jax.lax.dynamic_slice(buffer, (first,), (context,))
        logits = model(window[None])[0, t - 1 - first].astype(jnp.float32)
        logits = logits.at[UNKNOWN].set(-jnp.inf)
        if top_k is not None:
            kth = jax.lax.top_k(logits, top_k)[0][-1]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        if temperature == 0:
            token = jnp.argmax(logits)
        else:
            token = jax.random.categorical(jax.random.fold_in(key, t), logits / temperature)
        return buffer.at[t].set(token.astype(buffer.dtype))

    return jax.lax.fori_loop(start, start + length, step, buffer)


def sample(
    workdir: str | Path,
    prompt: str,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    step: int | None = None,
) -> str:
    """``LanguageModel(workdir, step).sample(prompt, length, ...)``."""
    return LanguageModel(workdir, step).sample(
        prompt, length, temperature=temperature, top_k=top_k, seed=seed
    )


@command_line
def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    text = sample(
        FLAGS.workdir,
        FLAGS.prompt,
        FLAGS.length,
        temperature=FLAGS.temperature,
        top_k=FLAGS.top_k,
        seed=FLAGS.seed,
        step=FLAGS.checkpoint,
    )
    print(text)


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path("workdir", None, "Run directory of a trained Transformer.", must_exist=True)
    flag_kinds.text("prompt", "", "Text to continue (empty: start a paragraph).", allow_empty=True)
    flag_kinds.count("length", 200, "Characters to sample after the prompt.", low=0, high=1_000_000)
    flag_kinds.number(
        "temperature", 1.0, "Softmax temperature (0: the likeliest character).", low=0.0
    )
    flag_kinds.count("top_k", None, "Sample among the k likeliest characters only.")
    flag_kinds.count("seed", 0, "Random seed: the same seed gives the same text.", low=0)
    flag_kinds.count("checkpoint", None, "Checkpoint step (default: the newest).", low=0)
    flags.mark_flag_as_required("workdir")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
