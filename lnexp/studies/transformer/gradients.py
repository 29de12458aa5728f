"""Gradients at initialization, layer by layer: post-LN vs pre-LN (Xiong et al., 2020, Fig. 3).

Xiong et al. ("On Layer Normalization in the Transformer Architecture", ICML 2020) show that at
initialization the gradient of a post-LN Transformer's weights grows with the layer index (the
last layers' gradients are the largest, which is why post-LN needs a warmup), while pre-LN's
stay about constant across layers. This measures that on lnexp's Transformer: for each
placement, depth and seed, a freshly initialized model's gradient of the mean next-character
loss on one batch of training windows, and the Frobenius norm of each block's weight matrices'
gradients (attention ``qkv`` and ``out``, MLP ``fc`` and ``proj``; Xiong et al. plot the MLP's
second matrix, ``proj`` here). The seed sets both the initialization and the batch.

Command (writes ``OUT/gradients.json``, ``OUT/gradients.md`` and ``OUT/gradients.png``)::

    python -m lnexp.studies.transformer.gradients --config configs/transformer.py \\
        --config.data.dir=PATH_TO_BOOKS --depths 6,12 --seeds 3 --out results/transformer_gradients

(``--config`` defaults to ``configs/transformer.py``; ``--config.KEY=VALUE`` overrides any of its
fields, as for ``python -m lnexp.main``.)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from flax import nnx

from lnexp import cli, flag_kinds
from lnexp.data.chars import load_char_corpus
from lnexp.errors import UserError, command_line
from lnexp.studies.transformer import task as experiment
from lnexp.training.metric_writers import quiet_library_logs

MATRICES = (("attn", "qkv"), ("attn", "out"), ("mlp", "fc"), ("mlp", "proj"))
"""The weight matrices of a block whose gradient norms are measured: ``(sublayer, linear)``."""


def gradient_norms(model: nnx.Module, batch: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    """``{'attn.qkv': (depth,), ...}``: each block's weight gradient's Frobenius norm on
    ``batch`` (the model in training mode, no dropout)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return experiment.loss_fn(nnx.merge(graphdef, p, rest), batch, None)[0]

    grads = nnx.State(jax.grad(loss)(params))
    out = {}
    for sub, linear in MATRICES:
        norms = [
            float(jnp.linalg.norm(grads["blocks"][i][sub][linear]["kernel"][...]))
            for i in range(len(model.blocks))
        ]
        out[f"{sub}.{linear}"] = np.asarray(norms)
    return out


def measure(
    config: ml_collections.ConfigDict,
    *,
    placements: Sequence[str] = ("post", "pre"),
    depths: Sequence[int] = (6, 12),
    seeds: int = 3,
    batch_size: int = 64,
) -> list[dict]:
    """One row per (placement, depth, seed): ``{placement, depth, seed, 'attn.qkv': [...],
    ...}`` (one gradient norm per block, first block first)."""
    corpus = load_char_corpus(config.data.dir, valid_books=config.data.valid_books)
    context = config.model.context
    text = jnp.asarray(experiment.corpus_text(corpus))
    starts = experiment.window_starts(len(corpus.train_ids), context, config.data.stride)
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        start = rng.choice(starts, batch_size, replace=False)
        batch = experiment.make_batch(
            {"text": text}, {"start": jnp.asarray(start)}, None, context=context
        )
        for placement in placements:
            for depth in depths:
                cfg = config.copy_and_resolve_references()
                cfg.model.placement, cfg.model.depth, cfg.model.dropout = placement, depth, 0.0
                model = experiment.build_model(cfg, corpus.vocab_size, nnx.Rngs(seed))
                norms = gradient_norms(model, batch)
                rows.append(
                    dict(placement=placement, depth=depth, seed=seed)
                    | {k: v.tolist() for k, v in norms.items()}
                )
    return rows


def mean_over_seeds(rows: Sequence[dict]) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """``(placement, depth) -> {matrix: mean over seeds of each block's norm}``."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["placement"], row["depth"]), []).append(row)
    return {
        key: {m: np.mean([r[m] for r in group], axis=0) for m in (f"{a}.{b}" for a, b in MATRICES)}
        for key, group in groups.items()
    }


def markdown(rows: Sequence[dict], matrix: str = "mlp.proj") -> str:
    """A table: each (placement, depth)'s mean gradient norm of ``matrix`` at the first, middle
    and last block, and last / first."""
    lines = [
        f"Gradient norm of each block's `{matrix}` weights at initialization (mean over seeds)",
        "",
        "| placement | depth | first block | middle block | last block | last / first |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (placement, depth), means in sorted(mean_over_seeds(rows).items()):
        g = means[matrix]
        lines.append(
            f"| {placement} | {depth} | {g[0]:.3g} | {g[len(g) // 2]:.3g} | {g[-1]:.3g} | "
            f"{g[-1] / g[0]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def figure(rows: Sequence[dict], path: Path) -> None:
    """Gradient norm vs block index, post and pre, one panel per depth and matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = mean_over_seeds(rows)
    depths = sorted({d for _, d in means})
    shown = ("mlp.proj", "attn.out")
    fig, axes = plt.subplots(
        len(shown), len(depths), figsize=(4.5 * len(depths), 3.2 * len(shown)), squeeze=False
    )
    for j, depth in enumerate(depths):
        for i, matrix in enumerate(shown):
            ax = axes[i][j]
            for placement, style in (("post", "o-"), ("pre", "s-")):
                if (placement, depth) in means:
                    g = means[(placement, depth)][matrix]
                    ax.plot(np.arange(1, len(g) + 1), g, style, label=f"{placement}-LN")
            ax.set_yscale("log")
            ax.set_title(f"{depth} blocks: {matrix}")
            ax.set_xlabel("block")
            ax.set_ylabel("||dL/dW|| at init")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(rows: Sequence[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gradients.json").write_text(json.dumps(list(rows), indent=1) + "\n")
    (out / "gradients.md").write_text(markdown(rows))
    figure(rows, out / "gradients.png")


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    cli.define_config("configs/transformer.py", "The Transformer's config file.")
    flag_kinds.counts("depths", [6, 12], "Comma-separated depths.", low=1, high=256)
    flag_kinds.count(
        "seeds", 3, "Seeds 0..N-1: each sets the initialization and the batch.", high=1000
    )
    flag_kinds.count(
        "batch_size", 64, "Training windows in the batch of each gradient.", high=65536
    )
    flag_kinds.path("out", None, "Directory for the JSON, table and figure.")
    flags.mark_flag_as_required("out")


@command_line
def main(argv: Sequence[str]) -> int:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    if FLAGS.config.data.dir is None:
        raise UserError(
            "--config.data.dir=DIR is required: the book corpus the gradients' batches are drawn "
            "from (python -m lnexp.data.download books fetches it)."
        )
    rows = measure(
        FLAGS.config, depths=FLAGS.depths, seeds=FLAGS.seeds, batch_size=FLAGS.batch_size
    )
    write(rows, Path(FLAGS.out))
    print(markdown(rows))
    print(f"Wrote {FLAGS.out}/gradients.json, gradients.md, gradients.png")
    return 0


if __name__ == "__main__":
    define_flags()
    cli.run(main)
