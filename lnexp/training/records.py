"""What the loop writes and says: an epoch's record, its log line, and the divergence errors."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lnexp.errors import UserError
from lnexp.training.metric_writers import format_duration

_ADVICE = (
    "lower --config.optimizer.learning_rate or set --config.optimizer.grad_clip_norm, in a new "
    "--workdir"
)


def epoch_record(
    epoch: int,
    step: int,
    evals: Mapping[str, Mapping[str, float]],
    train_metrics: Mapping[str, np.ndarray],
    *,
    examples_per_sec: float,
    unit: str,
    compile_s: float,
    wall_s: float,
    tokens_per_example: int | None = None,
) -> dict[str, Any]:
    """The ``metrics.jsonl`` record of an epoch: ``<split>_<name>`` evaluations, the training-mode
    loss (``train_loss``) and the task's other metrics (``train_batch_<name>``) averaged over the
    epoch's steps, throughput (also as ``<unit>_per_sec``, e.g. sentences, and as
    ``tokens_per_sec`` for a task whose examples are ``tokens_per_example`` tokens each), compile
    and wall time.

    A float16 run's metrics also hold ``skipped`` and ``loss_scale`` per step
    (:mod:`lnexp.training.loss_scale`): the averages then leave out the skipped steps, and the
    record gives their number (``train_skipped_steps``) and the scale of the epoch's last step
    (``train_loss_scale``)."""
    record = _evaluations(epoch, step, evals)
    train_metrics = dict(train_metrics)
    kept = None
    if "skipped" in train_metrics:
        skipped = np.asarray(train_metrics.pop("skipped"))
        kept = skipped == 0
    scale = train_metrics.pop("loss_scale", None)
    for key, values in train_metrics.items():
        values = np.asarray(values) if kept is None else np.asarray(values)[kept]
        mean = float(np.mean(values)) if values.size else float("nan")
        record["train_loss" if key == "loss" else f"train_batch_{key}"] = mean
    if kept is not None:
        record["train_skipped_steps"] = int(np.sum(~kept))
    if scale is not None:
        record["train_loss_scale"] = float(np.asarray(scale)[-1])
    record["examples_per_sec"] = examples_per_sec
    if unit != "examples":
        record[f"{unit}_per_sec"] = examples_per_sec
    if tokens_per_example:
        record["tokens_per_sec"] = examples_per_sec * tokens_per_example
    record["compile_s"] = compile_s
    record["wall_s"] = wall_s
    return record


REPAIRED = (
    "evaluated again from its checkpoint (metrics.jsonl had lost it); the epoch's training-step "
    "averages and timings are not known"
)


def evaluated_record(
    epoch: int, step: int, evals: Mapping[str, Mapping[str, float]], *, wall_s: float
) -> dict[str, Any]:
    """The record of an epoch that ``metrics.jsonl`` lost and no checkpoint keeps a copy of,
    from its checkpoint evaluated again: the same evaluations (they are deterministic), without
    the training-step averages, which are gone; ``repaired`` says so."""
    return {**_evaluations(epoch, step, evals), "wall_s": wall_s, "repaired": REPAIRED}


def _evaluations(epoch: int, step: int, evals: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """``{epoch, step, <split>_<name>: value, ...}``."""
    record: dict[str, Any] = {"epoch": epoch, "step": step}
    for split, values in evals.items():
        for key, value in values.items():
            record[f"{split}_{key}"] = value
    return record


def summary(record: Mapping[str, Any], num_epochs: int) -> str:
    """The log line of an epoch's record."""
    metrics = ", ".join(
        f"{k} {v:.4g}"
        for k, v in record.items()
        if k not in ("epoch", "step", "wall_s", "compile_s") and not k.endswith("_per_sec")
    )
    return (
        f"epoch {record['epoch']}/{num_epochs} (step {record['step']}): {metrics} | "
        f"{record['examples_per_sec']:,.0f} examples/s | {format_duration(record['wall_s'])}"
    )


def check_finite(record: Mapping[str, Any], seed_label: str = "") -> None:
    """Stops before a non-finite evaluation (e.g. from the epoch's last update) is recorded or
    checkpointed. ``seed_label`` (``'Seed 1 (WORKDIR): '``) names the seed of several."""
    bad = [k for k, v in record.items() if isinstance(v, float) and not np.isfinite(v)]
    if bad:
        raise UserError(
            f"{seed_label}Training diverged: {', '.join(bad)} became non-finite after epoch "
            f"{record['epoch']} (step {record['step']}). Nothing was written for this epoch; "
            f"checkpoints of earlier epochs are kept. {_ADVICE[0].upper()}{_ADVICE[1:]}."
        )


def loss_diverged(
    value: float, epoch: int, step: int, *, seed: int, workdir: Path, num_seeds: int
) -> UserError:
    """The error of a non-finite training loss at ``step`` of ``epoch`` (of ``seed``'s run in
    ``workdir`` when ``num_seeds`` seeds train together)."""
    if num_seeds == 1:
        whose, stopped, who, retry = "the loss", "The run", "The same command", ""
    else:
        whose = f"the loss of seed {seed} ({workdir})"
        stopped, who = f"The run of all {num_seeds} seeds", "This seed"
        retry = (
            "Train the other seeds one after the other (scripts/compare.py does so by itself "
            "after this error). "
        )
    return UserError(
        f"Training diverged: {whose} became {value} at epoch {epoch}, step {step}. {stopped} "
        f"stopped and wrote nothing for epoch {epoch}; checkpoints of earlier epochs are kept. "
        f"{retry}{who} would diverge the same way: {_ADVICE} (or in this one if no "
        "checkpoint was written yet)."
    )


def loss_scale_collapsed(
    scale: float,
    minimum: float,
    epoch: int,
    step: int,
    *,
    seed: int,
    workdir: Path,
    num_seeds: int,
) -> UserError:
    """The error of a float16 step that overflowed at a loss scale already at or below
    ``config.loss_scale.minimum``: lowering the scale cannot save it."""
    whose = "" if num_seeds == 1 else f" of seed {seed} ({workdir})"
    return UserError(
        f"Training diverged in float16: the gradients{whose} overflowed at epoch {epoch}, step "
        f"{step}, at loss scale {scale:g}, already at or below config.loss_scale.minimum="
        f"{minimum:g}: float16 cannot hold them. Nothing was written for epoch "
        f"{epoch}; checkpoints of earlier epochs are kept. Train in --config.dtype=bfloat16 "
        f"(float32's range) or float32, or {_ADVICE}."
    )
