"""A character-level Transformer language model on the book corpus (Transformer questions:
post- vs pre-LN, warmup, RMSNorm; see README "Layer norm in Transformers").

Training examples are windows of ``context + 1`` characters of the training books, one every
``config.data.stride`` characters (inputs are the first ``context``, targets the last); an
"epoch" is ``steps_per_epoch`` steps. Validation is ``config.data.valid_windows`` windows spread
evenly over the held-out books: the mean next-character negative log-likelihood in nats
(``valid_nll``) and in bits per character (``valid_bpc = valid_nll / ln 2``).
"""

from __future__ import annotations

import functools
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from lnexp.config_ranges import Choice
from lnexp.data.chars import CharCorpus, load_char_corpus
from lnexp.errors import UserError, config_key
from lnexp.models import transformer
from lnexp.models.transformer import Transformer
from lnexp.studies import Batch, Task, compute_dtype
from lnexp.studies.skipthought.task import evenly_spaced

PREVIEW_SIZES = {"vocab_size": 8}
"""A stand-in vocabulary size for :func:`lnexp.studies.check_config` (the real one is the
corpus's characters)."""

CHOICES = {
    "model.norm": Choice(transformer.NORMS, "the blocks' normalization"),
    "model.qk_norm": Choice(transformer.NORMS, "the queries' and keys' normalization"),
    "model.placement": Choice(transformer.PLACEMENTS, "the normalization's placement"),
    "model.positions": Choice(transformer.POSITIONS, "the position encoding"),
    "model.kernel_init": Choice(transformer.KERNEL_INITS, "the projections' initializer"),
    # The label of configs/transformer.py's variant the config came from (its VARIANTS).
    "variant": Choice(("default", "large", "tiny"), "the config's variant"),
}
"""The names of this study's string fields (:func:`lnexp.config_ranges.check_ranges`)."""

REPORT_METRIC = "valid_bpc"
"""What ``scripts/compare.py`` tabulates unless told (:func:`lnexp.studies.report_metrics`)."""
REPORT_METRICS = ("train_loss", "valid_bpc")
"""The metrics it draws, one row of the figure each, unless told."""


def build_model(config: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs) -> Transformer:
    m = config.model
    with config_key("config.model"):  # The model says which value of which field is wrong.
        try:
            return Transformer(
                vocab_size=vocab_size,
                context=m.context,
                width=m.width,
                depth=m.depth,
                num_heads=m.num_heads,
                norm=m.norm,
                placement=m.placement,
                qk_norm=m.qk_norm,
                positions=m.positions,
                tie_embeddings=m.tie_embeddings,
                mlp_ratio=m.mlp_ratio,
                use_bias=m.use_bias,
                dropout=m.dropout,
                init_std=m.init_std,
                kernel_init=m.kernel_init,
                rngs=rngs,
                dtype=compute_dtype(config),
            )
        except ValueError as e:
            raise UserError(f"config.model: {e} Fix the field on the command line.") from e


def window_starts(num_chars: int, context: int, stride: int) -> np.ndarray:
    """The first character of every window of ``context + 1`` characters, ``stride`` apart."""
    last = num_chars - (context + 1)
    if last < 0:
        raise UserError(
            f"The text has {num_chars} characters, fewer than one window of "
            f"config.model.context + 1 = {context + 1}: use more books or a shorter context."
        )
    return np.arange(0, last + 1, stride, dtype=np.int32)


def make_batch(constants: Batch, examples: Batch, width: int | None, *, context: int) -> Batch:
    """The windows of ``context + 1`` characters of ``constants['text']`` starting at
    ``examples['start']``: inputs the first ``context``, targets the last ``context``."""
    del width
    text = constants["text"]
    ids = jax.vmap(lambda s: jax.lax.dynamic_slice(text, (s,), (context + 1,)))(examples["start"])
    ids = ids.astype(jnp.int32)
    return {"inputs": ids[:, :-1], "targets": ids[:, 1:]}


def _token_nll(model: Transformer, batch: Batch, rng: jax.Array | None) -> jax.Array:
    logits = model(batch["inputs"], rng=rng)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["targets"]
    )


def loss_fn(model: Transformer, batch: Batch, rng: jax.Array):
    nll = jnp.mean(_token_nll(model, batch, rng))
    return nll, {"bpc": nll / math.log(2.0)}


def eval_fn(model: Transformer, batch: Batch) -> dict[str, jax.Array]:
    return {"nll": jnp.mean(_token_nll(model, batch, None), axis=-1)}


def summarize_eval(means: dict[str, float]) -> dict[str, float]:
    return {"nll": means["nll"], "bpc": means["nll"] / math.log(2.0)}


def corpus_text(corpus: CharCorpus) -> np.ndarray:
    """The training then the validation ids in the smallest integer type they fit (uint8 for
    the book corpus): one array on the devices that every window is cut from."""
    dtype = np.uint8 if corpus.vocab_size <= 256 else np.uint16
    return np.concatenate([corpus.train_ids, corpus.valid_ids]).astype(dtype)


def build_task(config: ml_collections.ConfigDict) -> Task:
    data, context = config.data, config.model.context
    if data.dir is None:
        raise UserError(
            "config.data.dir is not set: the Transformer trains on a directory of books as .txt "
            "files. Pass --config.data.dir=PATH; `python -m lnexp.data.download books PATH` "
            "fetches the project's list of Project Gutenberg novels into PATH."
        )
    corpus = load_char_corpus(data.dir, valid_books=data.valid_books)
    num_train = len(corpus.train_ids)
    starts = window_starts(num_train, context, data.stride)
    if data.limit_train is not None:
        starts = starts[: data.limit_train]
    valid_starts = window_starts(len(corpus.valid_ids), context, context)  # Disjoint windows.
    valid = num_train + evenly_spaced(valid_starts, data.valid_windows)
    stats = dict(corpus.stats, train_windows=len(starts), valid_windows=len(valid))
    return Task(
        model=build_model(config, corpus.vocab_size, nnx.Rngs(config.seed)),
        train_data={"start": starts},
        eval_data={"valid": {"start": valid}},
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        constants={"text": corpus_text(corpus)},
        make_batch=functools.partial(make_batch, context=context),
        summarize_eval=summarize_eval,
        files={
            "chars.json": json.dumps(corpus.chars) + "\n",
            "corpus_stats.json": json.dumps(stats, indent=2) + "\n",
        },
        unit="windows",
        tokens_per_example=context,
    )
