"""The transformer section: training tokens/s of the character Transformer against PyTorch and
the machine.

Times a training step of the Transformer language model of ``configs/transformer.py`` (the
default variant: vocabulary of 174 characters, context 64, width 128, 4 pre-LN blocks of 4
heads, MLP ratio 4, learned positions, an untied output layer, biases; AdamW with a linear
warmup and a cosine decay, the global gradient norm clipped to 1, batch 32) in three rows:

* **lnexp**: the training loop's own jitted chunk (:class:`lnexp.training.Trainer`): a
  ``lax.scan`` of ``transformer_steps`` steps, each cutting its batch of windows from the
  device-resident text (:func:`lnexp.studies.transformer.task.make_batch`), forward, backward,
  the clip and the optimizer of :func:`lnexp.training.make_optimizer` (the config's own), the
  state donated;
* **PyTorch eager** doing the same work: the same windows gathered from a uint8 tensor, the same
  model (:func:`torch_transformer`, a copy of the lnexp model's parameters: ``nn.LayerNorm``,
  ``F.scaled_dot_product_attention(is_causal=True)``, GELU's tanh form as ``jax.nn.gelu``), the
  same clip, ``torch.optim.AdamW`` with the config's hyperparameters, weight decay on the
  matrices only, and the same learning rate at every step (a ``LambdaLR`` of the schedule
  :func:`lnexp.training.learning_rate_schedule` gives);
* **torch.compile** of the forward pass and the loss, with the fused AdamW (``fused=True``);

on synthetic text (random uint8 character ids: the speed does not depend on the characters, and
no book corpus is needed). Steady state: compile time is reported apart, each call is timed
round-robin with the other rows (:func:`lnexp.bench.timing.time_interleaved`). Tokens/s is
``batch * context * steps / seconds``.

The machine's limit (:mod:`lnexp.bench.machine`, measured in the same run) is its float32
matmul rate ``R``; the row's fraction of it is ``tokens/s * F / R`` with ``F`` the FLOPs of a
training step per token in PaLM's accounting (Chowdhery et al., 2022, appendix B; Kaplan et al.,
2020, count the same ``6 N``)::

    F = 6 N + 12 L T d

* ``N``: the parameters that multiply activations, every weight matrix of the model (each
  block's ``4 d^2 + 2 r d^2``, the output layer's ``d V``; the transposed token embedding
  instead when tied); the token and position embeddings are looked up, not multiplied, and
  the biases and normalization parameters act elementwise, so neither is counted. ``6 N``:
  2 FLOPs per weight forward, 4 backward (the input's and the weight's gradients);
* ``12 L T d``: attention's two products per layer, ``q k^T`` and the weighted sum of ``v``
  (``2 T d`` FLOPs a token each forward, three times that with the backward pass), over the
  whole ``T x T`` score matrix (the causal mask's half is not discounted), ``L`` blocks.

The default model's ``F`` is 5.2 MFLOP per token (``N`` = 808,704).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from lnexp.bench.machine import machine_limits
from lnexp.bench.section import CommonSettings, setting
from lnexp.bench.timing import (
    TORCH_INSTALL,
    Prepared,
    Row,
    first_line,
    import_torch,
    note_row,
    prepare_chunk,
    time_rows,
)
from lnexp.config import load_config
from lnexp.errors import UserError
from lnexp.models.transformer import Transformer
from lnexp.studies import Task, check_config
from lnexp.studies.transformer import task as experiment
from lnexp.training.batches import Chunk, Schedule

VOCAB = 174  # Characters of the book corpus (the training books' vocabulary, id 0 unknown).
MIN_TEXT = 2**20  # Characters of synthetic text at least (1 MiB of uint8 ids).

LNEXP = "lnexp"
TORCH_EAGER = "torch eager, AdamW"
TORCH_COMPILED = "torch.compile, fused AdamW"
FRAMEWORKS = (LNEXP, TORCH_EAGER, TORCH_COMPILED)
ATTENTION_LNEXP = "attention alone: lnexp (jax.nn.dot_product_attention)"
ATTENTION_TORCH = "attention alone: torch (F.scaled_dot_product_attention)"
ATTENTION_ROWS = (ATTENTION_LNEXP, ATTENTION_TORCH)
"""The profile's rows: a step's attention alone, forward and backward (:func:`attention_rows`)."""

TWIN = {
    "norm": "layer",
    "placement": "pre",
    "qk_norm": "none",
    "positions": "learned",
    "tie_embeddings": False,
    "use_bias": True,
}
"""The ``config.model`` fields :func:`torch_transformer` builds (the default variant's); a
config with other values gets its PyTorch rows skipped with a note."""


@dataclasses.dataclass(frozen=True)
class Settings(CommonSettings):
    """The model's config, the steps per timed call and the timed calls."""

    transformer_config: str = setting(
        "configs/transformer.py",
        "transformer: the model's config file[:variant], relative to the working directory "
        "(configs/transformer.py:tiny for a quick run).",
    )
    transformer_steps: int = setting(
        10, "transformer: training steps per timed call (one fused chunk of the loop)."
    )
    transformer_repeats: int = setting(5, "transformer: timed calls per row.")
    transformer_norms: str = setting(
        "rms,none",
        "transformer: comma-separated other values of model.norm, each an extra lnexp row timed "
        "round-robin with the others (RMSNorm's speed claim; empty for none).",
        allow_empty=True,
    )


def check(settings: Settings) -> None:
    """Before any section runs: ``--transformer_config`` loads, and is a Transformer's."""
    load_model_config(settings)


def load_model_config(settings: Settings) -> ml_collections.ConfigDict:
    """The config of ``--transformer_config``, its seed replaced by ``--seed``."""
    path = settings.transformer_config.partition(":")[0]
    if not Path(path).is_file():
        raise UserError(
            f"The transformer section reads {path}: run it from the repository root, or pass "
            "--transformer_config=PATH."
        )
    try:
        config = load_config(settings.transformer_config, {"seed": settings.seed})
        check_config(config)
    except UserError as e:
        raise UserError(f"--transformer_config={settings.transformer_config}: {e}") from None
    except Exception as e:  # noqa: BLE001 (whatever get_config raises: a bad variant, say)
        raise UserError(
            f"--transformer_config={settings.transformer_config}: the config cannot be loaded "
            f"({first_line(e)})."
        ) from None
    if config.get("experiment") != "transformer":
        raise UserError(
            f"--transformer_config={settings.transformer_config} is a "
            f"{config.get('experiment')!r} config, not configs/transformer.py[:variant]."
        )
    return config


def matmul_params(model: Transformer) -> int:
    """``N``: the weights that multiply activations (every ``nnx.Linear`` kernel; the token
    embedding too when the logits are its transpose)."""
    kernels = sum(m.kernel.size for _, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear))
    return kernels + (model.embed.embedding.size if model.tie_embeddings else 0)


def flops_per_token(model: Transformer) -> int:
    """``6 N + 12 L T d``: float32 FLOPs of a training step per token (see the module)."""
    return 6 * matmul_params(model) + 12 * len(model.blocks) * model.context * model.width


def parameter_count(model) -> int:
    """Trainable parameters of an lnexp model (``nnx.Param``) or a PyTorch module."""
    if isinstance(model, nnx.Module):
        return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def synthetic_text(config: ml_collections.ConfigDict, steps: int, seed: int) -> np.ndarray:
    """Random uint8 character ids, long enough for ``steps`` batches of distinct windows."""
    needed = config.data.stride * steps * config.batch_size + config.model.context + 1
    rng = np.random.default_rng(seed)
    return rng.integers(0, VOCAB, max(MIN_TEXT, needed), dtype=np.uint8)


def lnexp_task(config: ml_collections.ConfigDict, text: np.ndarray) -> Task:
    """The task :func:`lnexp.studies.transformer.task.build_task` builds, over ``text`` (a
    window every ``config.data.stride`` characters, no evaluation splits)."""
    context = config.model.context
    return Task(
        model=experiment.build_model(config, VOCAB, nnx.Rngs(config.seed)),
        train_data={"start": experiment.window_starts(len(text), context, config.data.stride)},
        eval_data={},
        loss_fn=experiment.loss_fn,
        eval_fn=experiment.eval_fn,
        constants={"text": text},
        make_batch=functools.partial(experiment.make_batch, context=context),
        unit="windows",
        tokens_per_example=context,
    )


def batch_indices(task: Task, batch: int, steps: int, seed: int) -> np.ndarray:
    """``(steps, batch)`` window indices: the start of the loop's first pass."""
    schedule = Schedule(task.num_train, batch, steps_per_call=steps, seed=seed)
    return schedule.epoch_chunks(1)[0].indices[:steps]


def total_steps(config: ml_collections.ConfigDict) -> int:
    """The run's training steps, which the cosine decay spans (as :func:`make_optimizer`)."""
    return config.num_epochs * config.steps_per_epoch


def norm_row(norm: str) -> str:
    """The name of the lnexp row of another ``model.norm``."""
    return f"{LNEXP}, norm={norm}"


def prepare_lnexp(
    config: ml_collections.ConfigDict,
    task: Task,
    indices: np.ndarray,
    tokens: int,
    name: str = LNEXP,
) -> Prepared:
    """The training loop's chunk of ``len(indices)`` steps, compiled and warmed up."""
    from lnexp.training import Trainer, make_mesh, make_optimizer

    trainer = Trainer(task, make_optimizer(config), make_mesh(), config.seed)
    return prepare_chunk(
        name,
        trainer,
        Chunk(indices, None),
        items=tokens,
        steps=len(indices),
        unit="tokens",
        extra={"method": LNEXP, "optimizer": config.optimizer.name, "norm": config.model.norm},
    )


@functools.cache
def _torch_transformer_class():
    import torch

    F = torch.nn.functional

    class TorchBlock(torch.nn.Module):
        """lnexp's pre-LN ``Block``: ``x = x + Attn(LN(x)); x = x + MLP(LN(x))``."""

        def __init__(self, width, num_heads, mlp_ratio, epsilon, dropout):
            super().__init__()
            self.num_heads, self.dropout = num_heads, dropout
            self.attn_norm = torch.nn.LayerNorm(width, eps=epsilon)
            self.qkv = torch.nn.Linear(width, 3 * width)
            self.out = torch.nn.Linear(width, width)
            self.mlp_norm = torch.nn.LayerNorm(width, eps=epsilon)
            self.fc = torch.nn.Linear(width, mlp_ratio * width)
            self.proj = torch.nn.Linear(mlp_ratio * width, width)

        def forward(self, x):
            b, t, d = x.shape
            h = self.num_heads
            # (b, t, 3 * d) -> q, k, v of (b, heads, t, d / heads): lnexp's split of its qkv.
            q, k, v = self.qkv(self.attn_norm(x)).view(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            y = self.out(y.transpose(1, 2).reshape(b, t, d))
            x = x + F.dropout(y, self.dropout, self.training)
            y = self.proj(F.gelu(self.fc(self.mlp_norm(x)), approximate="tanh"))
            return x + F.dropout(y, self.dropout, self.training)

    class TorchTransformer(torch.nn.Module):
        """lnexp's pre-LN ``Transformer`` (learned positions, untied output layer, biases)."""

        def __init__(self, model: Transformer):
            super().__init__()
            first = model.blocks[0]
            width, epsilon = model.width, first.attn_norm.epsilon
            self.dropout = model.dropout.rate
            self.embed = torch.nn.Embedding(model.embed.num_embeddings, width)
            self.positions = torch.nn.Parameter(torch.empty(model.context, width))
            self.blocks = torch.nn.ModuleList(
                TorchBlock(
                    width,
                    first.attn.num_heads,
                    first.mlp.fc.out_features // width,
                    epsilon,
                    self.dropout,
                )
                for _ in model.blocks
            )
            self.final_norm = torch.nn.LayerNorm(width, eps=epsilon)
            self.head = torch.nn.Linear(width, model.embed.num_embeddings)
            self.load_lnexp(model)

        @torch.no_grad()
        def load_lnexp(self, model: Transformer) -> TorchTransformer:
            """Copies every parameter of ``model`` (kernels ``(in, out)`` transposed)."""

            def copy(dst, src, transpose=False):
                value = np.array(src[...], np.float32)
                dst.copy_(torch.from_numpy(value.T if transpose else value))

            def linear(dst, src):
                copy(dst.weight, src.kernel, transpose=True)
                copy(dst.bias, src.bias)

            def norm(dst, src):
                copy(dst.weight, src.scale)
                copy(dst.bias, src.bias)

            copy(self.embed.weight, model.embed.embedding)
            copy(self.positions, model.positions)
            for mine, theirs in zip(self.blocks, model.blocks, strict=True):
                norm(mine.attn_norm, theirs.attn_norm)
                linear(mine.qkv, theirs.attn.qkv)
                linear(mine.out, theirs.attn.out)
                norm(mine.mlp_norm, theirs.mlp_norm)
                linear(mine.fc, theirs.mlp.fc)
                linear(mine.proj, theirs.mlp.proj)
            norm(self.final_norm, model.final_norm)
            linear(self.head, model.head)
            return self

        def forward(self, ids):  # (batch, time) int64 -> logits (batch, time, vocab)
            x = self.embed(ids) + self.positions[: ids.shape[1]]
            x = F.dropout(x, self.dropout, self.training)
            for block in self.blocks:
                x = block(x)
            return self.head(self.final_norm(x))

    return TorchTransformer


def torch_transformer(model: Transformer):
    """The lnexp ``model`` in PyTorch, with its parameters (a config of :data:`TWIN`)."""
    return _torch_transformer_class()(model)


def twin_mismatch(config: ml_collections.ConfigDict) -> str | None:
    """Why :func:`torch_transformer` cannot build the config's model, or ``None``."""
    for key, value in TWIN.items():
        if config.model[key] != value:
            return f"no PyTorch twin of config.model.{key}={config.model[key]!r}"
    return None


def torch_optimizer(parameters, config: ml_collections.ConfigDict, *, fused: bool):
    """``config.optimizer`` in PyTorch: Adam or AdamW (weight decay on the matrices only with
    ``decay_matrices_only``, as lnexp's mask), and a ``LambdaLR`` with lnexp's schedule."""
    import torch

    from lnexp.training import learning_rate_schedule

    opt = config.optimizer
    if opt.name not in ("adam", "adamw"):
        raise UserError(f"The transformer section times Adam or AdamW, not {opt.name!r}.")
    parameters = list(parameters)
    decay = opt.weight_decay if opt.name == "adamw" else 0.0
    if opt.get("decay_matrices_only", True):
        groups = [
            {"params": [p for p in parameters if p.ndim >= 2], "weight_decay": decay},
            {"params": [p for p in parameters if p.ndim < 2], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": parameters, "weight_decay": decay}]
    kind = torch.optim.AdamW if opt.name == "adamw" else torch.optim.Adam
    optimizer = kind(
        groups, lr=opt.learning_rate, betas=(opt.b1, opt.b2), eps=opt.eps, fused=fused or None
    )
    steps = total_steps(config)
    schedule = learning_rate_schedule(opt, steps)
    factors = np.asarray(jax.vmap(schedule)(np.arange(steps + 1))) / opt.learning_rate
    factor = lambda step: float(factors[min(step, steps)])  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def prepare_torch(
    method: str,
    config: ml_collections.ConfigDict,
    model: Transformer,
    text: np.ndarray,
    starts: np.ndarray,
    tokens: int,
) -> Prepared | Row:
    """PyTorch's training loop over the same windows; a note row if ``torch.compile`` fails."""
    import torch

    twin = torch_transformer(model).train()
    compiled = method == TORCH_COMPILED
    optimizer, scheduler = torch_optimizer(twin.parameters(), config, fused=compiled)
    text_t = torch.from_numpy(text)
    starts_t = torch.from_numpy(starts.astype(np.int64))  # (steps, batch)
    offsets = torch.arange(config.model.context + 1)
    vocab, clip = model.embed.num_embeddings, config.optimizer.grad_clip_norm

    def loss_fn(inputs, targets):
        logits = twin(inputs)
        return torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))

    if compiled:
        torch._dynamo.reset()
        loss_fn = torch.compile(loss_fn)

    def step(s):
        ids = text_t[s[:, None] + offsets].long()  # (batch, context + 1)
        loss = loss_fn(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(twin.parameters(), clip)
        optimizer.step()
        scheduler.step()

    def call():
        for s in starts_t:
            step(s)

    compile_s = None
    if compiled:
        start = time.perf_counter()
        try:
            step(starts_t[0])
        except Exception as e:  # Inductor needs a C++ compiler; report, don't crash.
            return note_row(method, "torch", error=f"torch.compile failed: {first_line(e)}")
        compile_s = time.perf_counter() - start
    call()  # Warms up.
    extra = {"method": method, "optimizer": config.optimizer.name}
    extra["torch_threads"] = torch.get_num_threads()
    return Prepared(method, "torch", call, compile_s, tokens, len(starts), "tokens", extra)


def torch_rows(
    config: ml_collections.ConfigDict,
    settings: Settings,
    model: Transformer,
    text: np.ndarray,
    starts: np.ndarray,
    tokens: int,
) -> list[Prepared | Row]:
    """The two PyTorch rows, or note rows saying why one is not timed."""
    torch = import_torch()
    rows: list[Prepared | Row] = []
    for method in FRAMEWORKS[1:]:
        skipped = None
        if torch is None:
            skipped = f"PyTorch is not installed ({TORCH_INSTALL})"
        elif twin_mismatch(config):
            skipped = twin_mismatch(config)
        elif method == TORCH_COMPILED and not settings.torch_compile:
            skipped = "not run (--notorch_compile)"
        if skipped:
            rows.append(note_row(method, "torch", skipped=skipped) | {"method": method})
        else:
            rows.append(prepare_torch(method, config, model, text, starts, tokens))
    return rows


def attention_rows(config: ml_collections.ConfigDict, settings: Settings) -> list[Prepared | Row]:
    """A training step's attention alone, in lnexp and in PyTorch: forward and backward of the
    causal attention of one block at the model's ``(batch, context, heads, head_dim)``, called
    once per block, so that a row's ms/step is what attention costs a step (the projections
    around it excluded). The split shows where the step's time goes: XLA:CPU has no fused
    attention kernel (its ``dot_product_attention`` is batched products of ``context x
    head_dim`` matrices, a mask and a softmax), PyTorch's CPU ``scaled_dot_product_attention``
    is one fused kernel."""
    from lnexp.models.transformer import causal_attention

    m = config.model
    batch, tokens = config.batch_size, config.batch_size * m.context
    shape = (batch, m.context, m.num_heads, m.width // m.num_heads)
    q, k, v, w = (jax.random.normal(key, shape) for key in jax.random.split(jax.random.key(0), 4))

    def loss(q, k, v):
        return (causal_attention(q, k, v) * w).sum()

    start = time.perf_counter()
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile()
    compile_s = time.perf_counter() - start

    def call():
        for _ in range(m.depth):
            jax.block_until_ready(grad(q, k, v))

    call()
    extra = {"part": "attention", "method": ATTENTION_LNEXP}
    rows: list[Prepared | Row] = [
        Prepared(ATTENTION_LNEXP, "jax", call, compile_s, tokens, 1, "tokens", extra)
    ]
    torch = import_torch()
    if torch is None:
        return rows + [note_row(ATTENTION_TORCH, "torch", skipped=f"PyTorch is not installed "
                                f"({TORCH_INSTALL})") | {"part": "attention"}]  # fmt: skip
    # PyTorch's layout, (batch, heads, context, head_dim), as the twin's blocks call it.
    qt, kt, vt = (
        torch.from_numpy(np.asarray(a)).transpose(1, 2).contiguous().requires_grad_()
        for a in (q, k, v)
    )
    wt = torch.from_numpy(np.asarray(w)).transpose(1, 2).contiguous()
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def torch_call():
        for _ in range(m.depth):
            out = sdpa(qt, kt, vt, is_causal=True)
            torch.autograd.grad((out * wt).sum(), (qt, kt, vt))

    torch_call()
    extra = {"part": "attention", "method": ATTENTION_TORCH}
    return rows + [Prepared(ATTENTION_TORCH, "torch", torch_call, None, tokens, 1, "tokens", extra)]


@functools.cache
def limits(settings: Settings, width: int, mlp: int, vocab: int, tokens: int, params: int):
    """The machine's matmul rate (at square sizes and this model's shapes) and bandwidth."""
    shapes = [(1024, 1024, 1024), (2048, 2048, 2048)]
    shapes += [(tokens, width, 3 * width), (tokens, width, mlp), (tokens, mlp, width)]
    shapes += [(tokens, width, vocab)]
    beyond_cache = 32 * 2**20  # 128 MiB arrays.
    return machine_limits(shapes, [params, beyond_cache], settings.torch_threads)


def run(settings: Settings) -> dict[str, Any]:
    """Times the lnexp and PyTorch rows; ratios to torch.compile and to the matmul limit."""
    torch = import_torch()
    if torch is not None:
        torch.set_num_threads(settings.torch_threads or os.cpu_count() or 1)
    config = load_model_config(settings)
    batch, context, steps = config.batch_size, config.model.context, settings.transformer_steps
    text = synthetic_text(config, steps, settings.seed)
    task = lnexp_task(config, text)
    model = task.model
    indices = batch_indices(task, batch, steps, settings.seed)
    tokens = steps * batch * context
    flops, num_params, num_matmul = (
        flops_per_token(model),
        parameter_count(model),
        matmul_params(model),
    )
    mlp = model.blocks[0].mlp.fc.out_features
    lim = limits(settings, model.width, mlp, VOCAB, batch * context, num_params)
    # The PyTorch rows first: their twins copy the model's initial parameters, which the lnexp
    # row's donated training state then takes over.
    starts = task.train_data["start"][indices]
    torch_prepared = torch_rows(config, settings, model, text, starts, tokens)
    rows = [prepare_lnexp(config, task, indices, tokens), *torch_prepared]
    for norm in [n.strip() for n in settings.transformer_norms.split(",") if n.strip()]:
        other = config.copy_and_resolve_references()
        other.model.norm = norm
        rows.append(prepare_lnexp(other, lnexp_task(other, text), indices, tokens, norm_row(norm)))
    rows += attention_rows(config, settings)
    timed = time_rows(rows, settings.transformer_repeats)
    add_comparisons(timed, lim, flops)
    m = config.model
    return {
        "rows": timed,
        "limits": lim,
        "goals": goals(timed),
        "setup": (
            f"Transformer LM ({settings.transformer_config}): vocabulary {VOCAB}, context "
            f"{context}, width {m.width}, {m.depth} blocks of {m.num_heads} heads, MLP ratio "
            f"{m.mlp_ratio}, {m.placement}-LN ({m.norm}), {num_params:,} parameters; "
            f"{config.optimizer.name}, gradient clip {config.optimizer.grad_clip_norm}, batch "
            f"{batch}; synthetic uint8 text; {steps} steps per timed call, median of "
            f"{settings.transformer_repeats} calls, rows timed round-robin; "
            f"{flops / 1e6:.3f} MFLOP per token (6 N + 12 L T d, N = "
            f"{num_matmul:,}); machine's matmul limit "
            f"{lim['matmul_flops_per_s'] / 1e9:.0f} GFLOP/s, measured."
        ),
    }


def add_comparisons(rows: list[Row], lim: dict[str, Any], flops: int) -> None:
    """Adds ``x_torch_compiled`` (tokens/s over the torch.compile row's), the matmul limit's
    tokens/s and the fraction of it reached."""
    compiled = next((r.get("tokens_per_s") for r in rows if r["name"] == TORCH_COMPILED), None)
    limit = lim["matmul_flops_per_s"] / flops
    for row in rows:
        rate = row.get("tokens_per_s")
        if row.get("part") == "attention":  # A part of a step: no step's ratios.
            rate = None
        row["x_torch_compiled"] = rate / compiled if rate and compiled else None
        row["flops_per_token"] = flops
        row["limit_tokens_per_s"] = limit
        row["fraction_of_matmul_limit"] = rate / limit if rate else None


GOAL_X_COMPILED = 1.1
"""Issue 29's goal: every lnexp row (``norm=layer``, ``rms``, ``none``) at least this many times
``torch.compile``'s tokens/s."""


def goals(rows: list[Row]) -> list[str]:
    """Issue 29's goal for each lnexp row, with the measured ratio to ``torch.compile``."""
    lines = []
    for row in rows:
        name = row["name"]
        if name != LNEXP and not name.startswith(f"{LNEXP}, norm="):
            continue
        goal = f"Goal {name} >= {GOAL_X_COMPILED}x torch.compile's tokens/s"
        ratio = row.get("x_torch_compiled")
        if ratio is None:
            compiled = next((r for r in rows if r["name"] == TORCH_COMPILED), {})
            reason = compiled.get("skipped") or compiled.get("error") or "no rate"
            lines.append(f"{goal}: not measured ({reason}).")
            continue
        verdict = "met" if ratio >= GOAL_X_COMPILED else "NOT met"
        lines.append(f"{goal}: {verdict} ({ratio:.2f}x).")
    return lines + profile(rows)


def profile(rows: list[Row]) -> list[str]:
    """Where lnexp's step goes against torch.compile's, from the attention-alone rows."""
    ms = {r["name"]: r.get("median_ms") for r in rows}
    step, compiled = ms.get(LNEXP), ms.get(TORCH_COMPILED)
    attention, torch_attention = ms.get(ATTENTION_LNEXP), ms.get(ATTENTION_TORCH)
    if step is None or attention is None:
        return []
    line = (
        f"Profile: attention (forward and backward, every block) takes {attention:.1f} ms of "
        f"lnexp's {step:.1f} ms step ({attention / step:.0%})"
    )
    if torch_attention is not None:
        line += f", against {torch_attention:.1f} ms in PyTorch's fused kernel"
    line += f"; the rest of lnexp's step is {step - attention:.1f} ms"
    if compiled is not None:
        line += (
            f", {(step - attention) / compiled:.2f}x torch.compile's whole step ({compiled:.1f} ms)"
        )
    return [line + "."]


COLUMNS = [
    ("compile_s", "compile s", ".2f"),
    ("median_ms", "ms/step", ".1f"),
    ("tokens_per_s", "tokens/s", ",.0f"),
    ("x_torch_compiled", "x torch.compile", ".2fx"),
    ("limit_tokens_per_s", "matmul limit tokens/s", ",.0f"),
    ("fraction_of_matmul_limit", "of limit", ".0%"),
]
