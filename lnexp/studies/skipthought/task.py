"""Skip-thoughts (paper Section 4, Table 3): predict a sentence's neighbours from its encoding,
and the paper's Table 3 its downstream scores are compared with."""

from __future__ import annotations

import csv
import json
import math
from importlib import resources

import jax
import ml_collections
import numpy as np
from flax import nnx

from lnexp.cells import GRUCell
from lnexp.config_ranges import Choice
from lnexp.data.text import load_corpus
from lnexp.errors import UserError, config_key
from lnexp.models.skipthought import SkipThought, token_mean_loss
from lnexp.studies import Batch, Task, compute_dtype

PREVIEW_SIZES = {"vocab_size": 8}
"""A stand-in vocabulary size for :func:`lnexp.studies.check_config` (the real one is the
corpus's)."""

CHOICES = {
    "model.norm": Choice(GRUCell.accepted_norms(), "the GRU's normalization"),
    # The label of configs/skipthought.py's variant the config came from (its VARIANTS).
    "variant": Choice(("small", "paper", "tiny"), "the config's variant"),
}
"""The names of this study's string fields (:func:`lnexp.config_ranges.check_ranges`)."""

REPORT_METRIC = "valid_nll"
"""What ``scripts/compare.py`` tabulates unless told (:func:`lnexp.studies.report_metrics`)."""
REPORT_METRICS = ("train_loss", "valid_nll", "valid_next_ppl")
"""The metrics it draws, one row of the figure each, unless told."""


def build_model(config: ml_collections.ConfigDict, vocab_size: int, rngs: nnx.Rngs) -> SkipThought:
    model = config.model
    with config_key("config.model.norm"):  # The GRU cell says which norms it takes.
        return SkipThought(
            vocab_size,
            model.embed_dim,
            model.hidden_size,
            norm=model.norm,
            condition_every_step=model.condition_every_step,
            tie_embeddings=model.tie_embeddings,
            unroll=model.unroll,
            dtype=compute_dtype(config),
            rngs=rngs,
        )


def make_batch(constants: Batch, examples: Batch, width: int | None) -> Batch:
    """The (previous, current, next) sentences of each example, cut to ``width`` tokens."""
    ids, center = constants["ids"], examples["center"]
    width = ids.shape[1] if width is None else min(width, ids.shape[1])
    return {
        "prev": ids[center - 1, :width],
        "current": ids[center, :width],
        "next": ids[center + 1, :width],
    }


def loss_fn(model: SkipThought, batch: Batch, rng: jax.Array):
    del rng
    return token_mean_loss(model(batch["prev"], batch["current"], batch["next"]))


def eval_fn(model: SkipThought, batch: Batch) -> dict[str, jax.Array]:
    return model(batch["prev"], batch["current"], batch["next"])


def summarize_eval(means: dict[str, float]) -> dict[str, float]:
    """Per-token NLL and perplexity of each decoder from per-sentence sums and counts."""
    out = {}
    for name in ("prev", "next"):
        nll = means[f"{name}_nll"] / max(means[f"{name}_tokens"], 1e-9)
        out[f"{name}_nll"] = nll
        out[f"{name}_ppl"] = math.exp(min(nll, 700.0))
    out["nll"] = out["prev_nll"] + out["next_nll"]
    return out


def evenly_spaced(a: np.ndarray, n: int | None) -> np.ndarray:
    """``n`` elements of ``a`` spread over its whole length (all of it when ``n`` is None)."""
    if n is None or n >= len(a):
        return a
    return a[np.linspace(0, len(a) - 1, n).round().astype(int)]


def build_task(config: ml_collections.ConfigDict) -> Task:
    data = config.data
    if data.dir is None:
        raise UserError(
            "config.data.dir is not set: the skip-thought model trains on a directory of books "
            "as .txt files. Pass --config.data.dir=PATH; `python -m lnexp.data.download books "
            "PATH` fetches the project's list of Project Gutenberg novels into PATH."
        )
    corpus = load_corpus(
        data.dir,
        vocab_size=data.vocab_size,
        max_tokens=data.max_tokens,
        valid_books=data.valid_books,
        cache_dir=data.cache_dir,
    )
    centers = corpus.train_centers
    if data.limit_train is not None:
        centers = centers[: data.limit_train]
    lengths = corpus.lengths
    group_by = np.maximum(np.maximum(lengths[centers - 1], lengths[centers]), lengths[centers + 1])
    stats = dict(corpus.stats, used_train_examples=len(centers))
    return Task(
        model=build_model(config, len(corpus.vocab), nnx.Rngs(config.seed)),
        train_data={"center": centers},
        eval_data={"valid": {"center": evenly_spaced(corpus.valid_centers, data.valid_examples)}},
        loss_fn=loss_fn,
        eval_fn=eval_fn,
        constants={"ids": corpus.ids},
        make_batch=make_batch,
        lengths=group_by,
        summarize_eval=summarize_eval,
        files={
            "vocab.txt": "\n".join(corpus.vocab.words) + "\n",
            "corpus_stats.json": json.dumps(stats, indent=2) + "\n",
        },
        unit="sentences",
    )


# --------------------------------------------------------------------------------------------
# The paper's table (lnexp.studies.skipthought.report prints it below our runs).

# Column names of the shipped CSV -> score names of lnexp.studies.skipthought.report.SCORES.
PAPER_COLUMNS = {"SICK_r": "SICK r", "SICK_rho": "SICK rho", "SICK_mse": "SICK MSE"}


def reference_table() -> list[dict]:
    """The paper's Table 3 rows: ``{'method': ..., score name: value}`` (accuracies in percent),
    from ``lnexp/reference/paper_table3_skipthoughts.csv``."""
    text = resources.files("lnexp").joinpath("reference/paper_table3_skipthoughts.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if not line.startswith("#"))
    return [
        {"method": r["method"]}
        | {PAPER_COLUMNS.get(k, k): float(v) for k, v in r.items() if k != "method"}
        for r in rows
    ]
