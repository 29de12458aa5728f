"""The valid values of every config field, declared once: :data:`RANGES` for the numbers,
:data:`CHOICES` and :data:`TEXTS` for the strings.

:func:`check_ranges` checks a whole config against the tables before any work (through
:func:`lnexp.studies.check_config`, which the flag parsing of every command with a ``--config``
and the training loop call before any run directory exists), and
refuses the first value out of range with one :class:`~lnexp.errors.UserError` naming the field
and its range. A field is named by its dotted key (``optimizer.learning_rate``); the same key
means the same thing in every config of ``configs/``. A tuple value (``model.hidden_sizes``,
``optimizer.tuned_rates``) has each of its numbers checked; booleans and strings are not numbers
here. tests/test_faults.py fails for a numeric field of any config without an entry, so a new
field gets its range when it is added.

Every number must also be finite and fit the type it is computed in: a float within float32's
range, an integer within int32's (``inf``, ``nan`` and ``1e400`` are never a value), and a tuple
of numbers holds numbers only (``--config.model.hidden_sizes=(a,b)`` is refused here, not deep
inside JAX).

The string fields that name a choice have their valid names declared in :data:`CHOICES` (those
of the loop, the optimizer and the MNIST data) and in each study's ``CHOICES`` (its model's
names, in ``lnexp/studies/<name>/task.py``, from the layers' own tables), checked by the same
:func:`check_ranges`, so a misspelt ``optimizer.schedule`` (or ``model.norm=Layer``) is refused
before any work too. The other string fields (a directory, a URL, a label) are declared in
:data:`TEXTS`: never empty. tests/test_faults.py fails for a string field of any config that is
in neither table.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ml_collections

from lnexp.errors import UserError

INF = math.inf
FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(numpy.float32).max: computed in float32.
INT32_MAX = 2**31 - 1  # Sizes, counts and seeds become int32 arrays and indices.


@dataclasses.dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` where ``open_low``/``open_high``); ``integer``: whole
    numbers only; ``optional``: ``None`` is allowed (a placeholder left unset)."""

    low: float = -INF
    high: float = INF
    open_low: bool = False
    open_high: bool = False
    integer: bool = False
    optional: bool = False
    what: str = ""  # What the field is, for the message.

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.integer and not isinstance(value, int):
            return False
        if not representable(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def describe(self) -> str:
        """``'an integer >= 1'``, ``'a number in [0, 1)'``, ``'a number > 0'``."""
        kind = "an integer" if self.integer else "a number"
        if self.low > -INF and self.high < INF:
            text = (
                f"{kind} in {'(' if self.open_low else '['}{_num(self.low)}, "
                f"{_num(self.high)}{')' if self.open_high else ']'}"
            )
        elif self.low > -INF:
            text = f"{kind} {'>' if self.open_low else '>='} {_num(self.low)}"
        elif self.high < INF:
            text = f"{kind} {'<' if self.open_high else '<='} {_num(self.high)}"
        else:
            text = kind
        return text + (" (or None)" if self.optional else "")


def representable(value: int | float) -> bool:
    """Finite, and within the range of the type it is computed in (float32, int32)."""
    if isinstance(value, int):
        return -INT32_MAX - 1 <= value <= INT32_MAX
    return math.isfinite(value) and abs(value) <= FLOAT32_MAX


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def count(what: str, low: int = 1, optional: bool = False) -> Range:
    return Range(low=low, integer=True, optional=optional, what=what)


def positive(what: str, optional: bool = False) -> Range:
    return Range(low=0.0, open_low=True, optional=optional, what=what)


def fraction(what: str) -> Range:
    """In ``[0, 1)``: decay rates, momenta, probabilities of dropping."""
    return Range(low=0.0, high=1.0, open_high=True, what=what)


# Every numeric field of every config in configs/, by dotted key.
RANGES: dict[str, Range] = {
    # The loop (configs/common.py: loop_fields, checkpoint).
    "seed": count("the random seed", low=0),
    "num_epochs": count("the number of epochs (evaluation periods)"),
    "batch_size": count("the global batch size"),
    "steps_per_call": count("training steps fused into one call"),
    "steps_per_epoch": count("training steps per evaluation period", optional=True),
    "eval_batch_size": count("examples per evaluation step"),
    "log_every_s": Range(low=0.0, what="seconds between progress lines"),
    "checkpoint.keep": count("checkpoints kept"),
    "checkpoint.keep_every_steps": count("steps between checkpoints kept for good", optional=True),
    "checkpoint.every_epochs": count("epochs between checkpoints"),
    # float16's dynamic loss scaling (configs/common.py: loss_scale).
    "loss_scale.initial": positive("the initial float16 loss scale"),
    "loss_scale.growth_interval": count("finite steps before the loss scale grows"),
    "loss_scale.factor": Range(low=1.0, open_low=True, what="the loss scale's growth factor"),
    "loss_scale.minimum": positive("the smallest float16 loss scale"),
    # The optimizer (configs/common.py: optimizer, use_tuned_rates).
    "optimizer.learning_rate": positive("the learning rate", optional=True),
    "optimizer.tuned_rates": positive("each tuned learning rate"),
    "optimizer.b1": fraction("Adam's first-moment decay"),
    "optimizer.b2": fraction("Adam's second-moment decay"),
    "optimizer.eps": positive("Adam's epsilon"),
    "optimizer.momentum": fraction("SGD's momentum"),
    "optimizer.grad_clip_norm": Range(low=0.0, what="the gradient-norm clip (0: none)"),
    "optimizer.warmup_steps": count("steps of learning-rate warmup (0: none)", low=0),
    "optimizer.decay_steps": count("steps of the cosine decay after the warmup", optional=True),
    "optimizer.end_learning_rate_factor": Range(
        low=0.0, high=1.0, what="the cosine's final learning rate as a fraction of the peak"
    ),
    "optimizer.weight_decay": Range(low=0.0, what="AdamW's weight decay (0: none)"),
    # The data.
    "data.limit_train": count("training examples used", optional=True),
    "data.vocab_size": count("the vocabulary size"),
    "data.max_tokens": count("words kept per sentence"),
    "data.valid_books": count("books held out for validation"),
    "data.valid_examples": count("validation examples evaluated"),
    "data.stride": count("characters between the starts of training windows"),
    "data.valid_windows": count("validation windows evaluated"),
    "data.binarize_seed": count("the seed of the validation and test binarization", low=0),
    # The models.
    "model.hidden_sizes": count("each hidden layer's size"),
    "model.hidden_size": count("the hidden size"),
    "model.embed_dim": count("the embedding size"),
    "model.epsilon": positive("the normalization epsilon"),
    "model.bn_momentum": fraction("batch norm's running-average momentum"),
    "model.data_init_examples": count("examples of the data-dependent initialization"),
    "model.unroll": count("time steps unrolled per scan iteration"),
    "model.context": count("the Transformer's context length"),
    "model.width": count("the Transformer's width"),
    "model.depth": count("the Transformer's number of blocks"),
    "model.num_heads": count("attention heads per block"),
    "model.mlp_ratio": count("the MLP's hidden width over the model width"),
    "model.dropout": fraction("the dropout rate"),
    "model.init_std": positive("the initial weights' standard deviation"),
    "model.glimpses": count("DRAW's number of glimpses"),
    "model.latent_size": count("DRAW's latent size per glimpse"),
    "model.read_size": count("the side of DRAW's read grid"),
    "model.write_size": count("the side of DRAW's write grid"),
}


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of ``names``, the names a string field accepts (``optional``: or ``None``).
    ``names`` may be a function giving them, read at each check (a registry that grows)."""

    names: tuple[str, ...] | Callable[[], tuple[str, ...]]
    what: str = ""  # What the field is, for the message.
    optional: bool = False

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self.names() if callable(self.names) else self.names)


# The string fields whose names the training machinery reads, by dotted key. A study's model
# names (model.norm, ...) are declared in its task module's CHOICES (study_choices).
CHOICES: dict[str, Choice] = {
    "experiment": Choice(
        ("pimnist", "seqmnist", "skipthought", "transformer", "draw"), "the experiment"
    ),
    "dtype": Choice(("float32", "bfloat16", "float16"), "the computation dtype"),
    "optimizer.name": Choice(("adam", "adamw", "sgd"), "the optimizer"),
    "optimizer.schedule": Choice(("constant", "cosine"), "the learning-rate schedule"),
    "data.source": Choice(("cache", "tfds"), "where MNIST comes from"),
}


@dataclasses.dataclass(frozen=True)
class Text:
    """A string field that is not a choice: never empty; ``url``: an ``http(s)://`` or
    ``file://`` address; ``optional``: ``None`` is allowed (left unset)."""

    what: str
    url: bool = False
    optional: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is no value of the field, or ``None``."""
        if not isinstance(value, str):
            return f"{self.what} must be a string"
        if not value.strip():
            unset = " (leave the field out to leave it unset)" if self.optional else ""
            return f"{self.what} must not be empty{unset}"
        if self.url and not value.startswith(("http://", "https://", "file://")):
            return f"{self.what} must be an http://, https:// or file:// address"
        return None


# Every other string field of every config in configs/, by dotted key.
TEXTS: dict[str, Text] = {
    "data.dir": Text("the data directory", optional=True),
    "data.url": Text("the address MNIST is downloaded from", url=True),
    "data.binarized_dir": Text("the binarized MNIST directory", optional=True),
    "data.cache_dir": Text("the corpus cache directory", optional=True),
}


def study_choices(experiment: Any) -> Mapping[str, Choice]:
    """The choices a study declares for its fields (its task module's ``CHOICES``, e.g. the
    normalizations its model takes), or none for an unknown experiment (refused by
    :data:`CHOICES`' ``experiment``)."""
    if experiment not in CHOICES["experiment"].values:
        return {}
    module = importlib.import_module(f"lnexp.studies.{experiment}.task")
    return getattr(module, "CHOICES", {})


def check_choice(key: str, value: Any, choices: Mapping[str, Choice] | None = None) -> None:
    """Refuses ``value`` for the field ``key`` unless it is one of its names (in ``choices``,
    by default :data:`CHOICES`).

    Raises:
        UserError: naming the field, its value, the valid values and the fix.
    """
    choice = (CHOICES if choices is None else choices)[key]
    if value is None and choice.optional:
        return
    if value not in choice.values:
        names = ", ".join(repr(v) for v in choice.values)
        near = difflib.get_close_matches(str(value).strip().lower(), choice.values, n=1)
        raise UserError(
            f"config.{key}={value!r} is not a valid name for {choice.what}: expected one of "
            f"{names}. Set one with --config.{key}={(near or choice.values)[0]}."
        )


def flat_items(config: ml_collections.ConfigDict | dict, prefix: str = "") -> Iterator[tuple]:
    """``(dotted key, value)`` of every leaf of ``config``."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict | dict):
            yield from flat_items(value, name + ".")
        else:
            yield name, value


def numbers(value: Any) -> list[Any]:
    """The numbers in a leaf: itself, or those inside a (nested) tuple or list; booleans and
    strings are not numbers here."""
    if isinstance(value, tuple | list):
        return [n for v in value for n in numbers(v)]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return []


def is_numeric(value: Any) -> bool:
    return bool(numbers(value))


def check_ranges(config: ml_collections.ConfigDict) -> None:
    """Refuses the first field of ``config`` out of its declared range (:data:`RANGES`), or not
    one of its declared names (:data:`CHOICES`).

    Raises:
        UserError: naming the field, its value and the valid range or names.
    """
    choices = {**CHOICES, **study_choices(config.get("experiment"))}
    for key, value in flat_items(config):
        if key in choices:
            check_choice(key, value, choices)
        elif key in TEXTS:
            text = TEXTS[key]
            why = None if value is None and text.optional else text.problem(value)
            if why:
                raise UserError(
                    f"config.{key}={value!r} is not valid: {why}. Set it with --config.{key}=VALUE."
                )
        elif key in RANGES and not (value is None and RANGES[key].optional):
            _check_range(key, value, RANGES[key])
        # Else not a field of a config in configs/ (tests/test_faults.py).


def _check_range(key: str, value: Any, allowed: Range) -> None:
    is_tuple = isinstance(value, tuple | list)
    values = _elements(key, value) if is_tuple else [value]
    bad = [v for v in values if not allowed.contains(v)]
    if bad:
        number = isinstance(bad[0], int | float) and not isinstance(bad[0], bool)
        also = ""
        if number and not representable(bad[0]):
            also = (
                f", at most {INT32_MAX}" if allowed.integer else ", finite and in float32's range"
            )
        raise UserError(
            f"config.{key}={value!r} is out of range: {allowed.what} must be "
            f"{allowed.describe()}{also}{f' (not {bad[0]!r})' if is_tuple else ''}. "
            f"Set a valid value with --config.{key}=VALUE."
        )


def _elements(key: str, value: tuple | list) -> list[Any]:
    """The numbers of a tuple field: its elements, or for ``optimizer.tuned_rates`` (pairs of
    a condition and a rate) the rates, a malformed pair being a bad element itself."""
    if key != "optimizer.tuned_rates":
        return list(value)
    pairs = [p for p in value if isinstance(p, tuple | list) and len(p) == 2]
    malformed = [p for p in value if p not in pairs or not isinstance(p[0], str)]
    return malformed[:1] + [rate for _, rate in pairs]
