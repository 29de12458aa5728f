"""Sentence encoders evaluated the way skip-thoughts were (Kiros et al., 2015; paper Table 3).

Command line (a skip-thought run directory; its latest checkpoint unless ``--checkpoint``)::

    python -m lnexp.studies.skipthought.evaluate --workdir runs/st-ln --data_dir PATH/senteval \\
        --tasks MR,SUBJ,TREC,SICK

writes ``WORKDIR/eval/<step>.json`` and prints a table. From Python any encoder can be evaluated:
``lnexp.studies.skipthought.evaluate.run(encode_fn, data_dir, tasks)`` with
``encode_fn(list[str]) -> (n, d) array``.

The protocol, on frozen sentence vectors:

* Binary tasks (MR, CR, SUBJ, MPQA, or any folder with a ``*.pos`` and a ``*.neg`` file):
  logistic regression on the vectors **as they are** (the skip-thought protocol; standardizing
  them first is an option, off by default, see :func:`fit_with_cv`) with nested 10-fold
  cross-validation: for each outer fold the L2 penalty ``C`` in ``2^0 .. 2^8`` is chosen by
  10-fold cross-validation on the other nine folds only, then the model refit on them is scored
  on the held-out fold; accuracy mean ± std over the outer folds. When most folds choose a ``C``
  at an edge of the grid, the result says so (``grid_edge``): the grid was made for raw vectors.
* TREC (6 coarse classes, multinomial): ``C`` by 10-fold cross-validation on the training
  questions, then accuracy on the 500 test questions.
* SICK relatedness: features ``[|u - v|, u * v]``; a softmax over the scores 1..5 trained
  (Adam, minibatches) on Tai et al.'s soft labels, stopped early on the trial split's Pearson
  r; the prediction is the expected score. Test Pearson r, Spearman rho and MSE.

Logistic regression is scikit-learn's (the standard tool; ``LogisticRegressionCV`` walks the
``C`` path with warm starts); the SICK softmax is a few lines of JAX/optax because scikit-learn
has no soft-label classifier.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags, logging

from lnexp import cli, flag_kinds
from lnexp.data import senteval
from lnexp.errors import UserError, command_line
from lnexp.training.durable import write_atomically
from lnexp.training.metric_writers import quiet_library_logs

EncodeFn = Callable[[list[str]], np.ndarray]
PENALTIES = tuple(2.0**k for k in range(9))
NEWTON_MAX_DIM = 1024  # Up to this many features, Newton's method (see solver_for).
BINARY_TASKS = ("MR", "CR", "SUBJ", "MPQA")
TASKS = (*BINARY_TASKS, "TREC", "SICK")


# --------------------------------------------------------------------------------------------
# Classification.


def solver_for(dim: int) -> tuple[str, int]:
    """``(solver, max_iter)`` that converge on raw sentence vectors of ``dim`` features.

    Newton's method (``newton-cholesky``) converges in a few iterations whatever the scaling of
    the features, and its ``dim x dim`` Hessian is cheap up to ~1,000 features (our small
    skip-thought models have 256). Beyond that (the paper's 2,400) L-BFGS with a large
    iteration budget. Fits that still stop at ``max_iter`` are counted (``unconverged_fits``).
    """
    return ("newton-cholesky", 100) if dim <= NEWTON_MAX_DIM else ("lbfgs", 10_000)


def fit_with_cv(
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int,
    seed: int,
    penalties: Sequence[float] = PENALTIES,
    standardize: bool = False,
):
    """Logistic regression whose ``C`` is chosen by stratified ``folds``-fold cross-validation
    on ``(X, y)`` only, refit on all of it; a scikit-learn pipeline (``pipe[-1].C_``).

    Args:
        X, y: Training features and labels (only ever the training part of an outer split).
        folds: Inner cross-validation folds.
        seed: Seed of the fold assignment.
        penalties: The grid of ``C`` (inverse L2 strength).
        standardize: Scale each feature to zero mean and unit variance with the statistics of
            ``X`` first. Off by default: the skip-thought evaluation fed the frozen vectors as
            they are, and ``PENALTIES`` was chosen for raw vectors (with standardized features
            most folds pick the grid's smallest ``C``).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    smallest = int(np.min(np.unique(y, return_counts=True)[1])) if len(y) else 0
    if folds > smallest:
        raise UserError(
            f"--folds={folds}: the smallest class of this task's training part has {smallest} "
            f"examples, fewer than the folds; use --folds={max(2, min(10, smallest))} or fewer."
        )
    solver, max_iter = solver_for(X.shape[1])
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    clf = LogisticRegressionCV(
        Cs=list(penalties),
        cv=cv,
        scoring="accuracy",
        solver=solver,
        max_iter=max_iter,
        n_jobs=-1,
        refit=True,
    )
    steps = [StandardScaler(), clf] if standardize else [clf]
    with warnings.catch_warnings():
        # scikit-learn 1.9 announces a change of the fitted attributes; only C_ and n_iter_
        # are read here, in forms that both versions give. Unconverged fits are counted
        # (unconverged_fits) instead of warned about one by one.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return make_pipeline(*steps).fit(X, y)


def _chosen_penalty(clf) -> float:
    return float(np.ravel(clf[-1].C_)[0])


def _unconverged(clf) -> int:
    """Fits (inner folds x ``C`` and the refit) that stopped at the iteration budget."""
    return int((np.asarray(clf[-1].n_iter_) >= clf[-1].max_iter).sum())


def grid_edge(chosen: Sequence[float], penalties: Sequence[float] = PENALTIES) -> str | None:
    """A note when most choices of ``C`` sit at an edge of the grid, else ``None``."""
    for edge, side in ((min(penalties), "smallest"), (max(penalties), "largest")):
        n = sum(c == edge for c in chosen)
        if 2 * n > len(chosen):
            return (
                f"C = {edge:g}, the grid's {side} value, was chosen in {n} of {len(chosen)} "
                "folds: the best penalty may lie outside the grid."
            )
    return None


def nested_cv_accuracy(
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 10,
    inner_folds: int = 10,
    seed: int = 0,
    penalties: Sequence[float] = PENALTIES,
    standardize: bool = False,
) -> dict:
    """Accuracy (%) of nested cross-validation: mean and std over the outer folds, the
    penalty each outer fold chose without seeing its test examples, and ``grid_edge`` (a note,
    or ``None``) when most of them sit at an edge of ``penalties``."""
    from sklearn.model_selection import StratifiedKFold

    outer = StratifiedKFold(folds, shuffle=True, random_state=seed)
    accuracies, chosen, unconverged = [], [], 0
    for train, test in outer.split(X, y):
        clf = fit_with_cv(
            X[train],
            y[train],
            folds=inner_folds,
            seed=seed,
            penalties=penalties,
            standardize=standardize,
        )
        accuracies.append(100.0 * clf.score(X[test], y[test]))
        chosen.append(_chosen_penalty(clf))
        unconverged += _unconverged(clf)
    return {
        "accuracy": float(np.mean(accuracies)),
        "std": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "penalties": chosen,
        "grid_edge": grid_edge(chosen, penalties) if len(penalties) > 1 else None,
        "unconverged_fits": unconverged,
        "examples": len(y),
    }


def evaluate_binary(
    encode: EncodeFn, task_dir: Path, *, folds: int, seed: int, standardize: bool = False
) -> dict:
    data = senteval.load_binary(task_dir)
    X = np.asarray(encode(data.sentences), np.float64)
    return nested_cv_accuracy(
        X, data.labels, folds=folds, inner_folds=folds, seed=seed, standardize=standardize
    )


def evaluate_trec(
    encode: EncodeFn, task_dir: Path, *, folds: int, seed: int, standardize: bool = False
) -> dict:
    data = senteval.load_trec(task_dir)
    X = np.asarray(encode(data.sentences), np.float64)
    X_test = np.asarray(encode(data.test_sentences), np.float64)
    clf = fit_with_cv(X, data.labels, folds=folds, seed=seed, standardize=standardize)
    return {
        "accuracy": 100.0 * float(clf.score(X_test, data.test_labels)),
        "penalty": _chosen_penalty(clf),
        "grid_edge": grid_edge([_chosen_penalty(clf)]),
        "unconverged_fits": _unconverged(clf),
        "train_examples": len(data.labels),
        "test_examples": len(data.test_labels),
    }


# --------------------------------------------------------------------------------------------
# SICK relatedness.


def sick_soft_labels(scores: np.ndarray) -> np.ndarray:
    """Tai et al. (2015): a score ``s`` in ``[1, 5]`` as a distribution over ``1..5`` whose
    expectation is ``s`` (mass split between ``floor(s)`` and ``floor(s) + 1``)."""
    scores = np.asarray(scores, np.float64)
    p = np.zeros((len(scores), 5))
    low = np.clip(np.floor(scores), 1, 5).astype(int)
    upper = scores - low
    p[np.arange(len(scores)), low - 1] = 1.0 - upper
    inside = low < 5
    p[np.flatnonzero(inside), low[inside]] = upper[inside]
    return p


def pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[|u - v|, u * v]``."""
    return np.concatenate([np.abs(u - v), u * v], axis=1)


def expected_score(logits: jax.Array) -> jax.Array:
    return jax.nn.softmax(logits) @ jnp.arange(1.0, 6.0)


def train_relatedness(
    train: tuple[np.ndarray, np.ndarray],
    trial: tuple[np.ndarray, np.ndarray],
    *,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    max_epochs: int = 200,
    patience: int = 10,
    tolerance: float = 1e-3,
) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """Softmax regression on soft labels, early-stopped on the trial Pearson r.

    The chosen epoch is the last one whose trial r is within ``tolerance`` of the best so far;
    training stops ``patience`` epochs after it. (Taking the first best epoch instead picks
    early models whose r is as good but whose predictions still huddle around the mean, which
    the MSE punishes; ``tests/test_evaluate.py`` checks the MSE on synthetic pairs.)

    Args:
        train, trial: ``(features, scores)``.

    Returns:
        ``(predict, info)``: ``predict(features) -> expected scores`` with the best epoch's
        parameters, and ``{'best_epoch', 'trial_pearson'}``.
    """
    X, targets = jnp.asarray(train[0], jnp.float32), jnp.asarray(sick_soft_labels(train[1]))
    X_trial = jnp.asarray(trial[0], jnp.float32)
    params = {"w": jnp.zeros((X.shape[1], 5)), "b": jnp.zeros(5)}
    tx = optax.adam(learning_rate)
    steps = max(len(X) // batch_size, 1)

    @jax.jit
    def epoch(params, opt_state, key):
        order = jax.random.permutation(key, len(X))[: steps * batch_size].reshape(steps, -1)

        def step(carry, idx):
            params, opt_state = carry

            def loss(p):
                logits = X[idx] @ p["w"] + p["b"]
                return optax.softmax_cross_entropy(logits, targets[idx]).mean()

            grads = jax.grad(loss)(params)
            updates, opt_state = tx.update(grads, opt_state)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), order)
        return params, opt_state, expected_score(X_trial @ params["w"] + params["b"])

    opt_state = tx.init(params)
    best_r, chosen, chosen_r, chosen_epoch, key = -np.inf, params, -np.inf, 0, jax.random.key(seed)
    for e in range(1, max_epochs + 1):
        key, sub = jax.random.split(key)
        params, opt_state, trial_pred = epoch(params, opt_state, sub)
        r = _pearson(np.asarray(trial_pred), trial[1])
        best_r = max(best_r, r)
        if r >= best_r - tolerance:
            chosen, chosen_r, chosen_epoch = params, r, e
        elif e - chosen_epoch >= patience:
            break
    best = chosen

    def predict(features: np.ndarray) -> np.ndarray:
        x = jnp.asarray(features, jnp.float32)
        return np.asarray(expected_score(x @ best["w"] + best["b"]))

    return predict, {"best_epoch": chosen_epoch, "trial_pearson": float(chosen_r)}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if np.std(a) == 0 or np.std(b) == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def evaluate_sick(
    encode: EncodeFn, task_dir: Path, *, folds: int, seed: int, standardize: bool = False
) -> dict:
    del folds, standardize  # Its own protocol: a softmax on [|u - v|, u * v], no C to choose.
    from scipy.stats import spearmanr

    data = senteval.load_sick(task_dir)
    feats = {
        name: (pair_features(encode(a), encode(b)), scores)
        for name, (a, b, scores) in data.splits.items()
    }
    predict, info = train_relatedness(feats["train"], feats["trial"], seed=seed)
    pred, scores = predict(feats["test"][0]), feats["test"][1]
    return {
        "pearson": _pearson(pred, scores),
        "spearman": float(spearmanr(pred, scores).statistic),
        "mse": float(np.mean((pred - scores) ** 2)),
        **info,
        "test_pairs": len(scores),
    }


# --------------------------------------------------------------------------------------------
# Any encoder, any tasks.


def run(
    encode_fn: EncodeFn,
    data_dir: str | Path,
    tasks: Sequence[str] = ("MR", "SUBJ", "TREC", "SICK"),
    *,
    folds: int = 10,
    seed: int = 0,
    standardize: bool = False,
) -> dict[str, dict]:
    """Evaluates ``encode_fn`` on SentEval ``tasks`` under ``data_dir``.

    Args:
        encode_fn: ``list[str] -> (n, d)`` array of sentence vectors.
        data_dir: SentEval's ``data/downstream`` directory (one folder per task).
        tasks: Folder names; ``TREC`` and ``SICK`` have their own protocols, every other name
            is a binary task (MR, CR, SUBJ, MPQA, or any folder with ``*.pos``/``*.neg``).
        folds: Cross-validation folds (10 in the protocol).
        seed: Seed of the fold assignment and of the SICK training.
        standardize: Standardize the vectors before the logistic regressions (off: the
            skip-thought protocol feeds them as they are).

    Returns:
        Task name -> its results (accuracies in percent; SICK ``pearson``, ``spearman``,
        ``mse``), each with the ``seconds`` it took.
    """
    data_dir = Path(data_dir)
    encode = _checked(encode_fn)
    results = {}
    for task in tasks:
        task_dir = data_dir / task
        if not task_dir.is_dir():
            raise UserError(
                f"No folder {task_dir} for task {task!r}: --data_dir must be SentEval's "
                "data/downstream directory, with one folder per task (MR, SUBJ, TREC, SICK, ...)."
            )
        kind = task.upper()
        evaluate = {"TREC": evaluate_trec, "SICK": evaluate_sick}.get(kind, evaluate_binary)
        start = time.perf_counter()
        results[task] = evaluate(encode, task_dir, folds=folds, seed=seed, standardize=standardize)
        results[task]["seconds"] = time.perf_counter() - start
        logging.info("%s: %s", task, _headline(task, results[task]))
    return results


def _checked(encode_fn: EncodeFn) -> EncodeFn:
    def encode(sentences: list[str]) -> np.ndarray:
        out = np.asarray(encode_fn(list(sentences)))
        if out.ndim != 2 or len(out) != len(sentences):
            raise ValueError(
                f"encode_fn returned shape {out.shape} for {len(sentences)} sentences; "
                "expected (num_sentences, dim)."
            )
        return out

    return encode


def protocol(folds: int = 10, standardize: bool = False) -> dict:
    """What a result depends on besides the encoder (stored with it; a cached result with
    another protocol is evaluated again)."""
    return {"folds": folds, "features": "standardized" if standardize else "raw"}


def _headline(task: str, r: dict) -> str:
    if "pearson" in r:
        return f"r {r['pearson']:.3f}, rho {r['spearman']:.3f}, MSE {r['mse']:.3f}"
    if "std" in r:
        return f"{r['accuracy']:.1f} ± {r['std']:.1f} %"
    return f"{r['accuracy']:.1f} %"


def results_table(results: dict[str, dict]) -> str:
    """A markdown table of :func:`run`'s results."""
    lines = ["| task | result | seconds |", "|---|---|---|"]
    notes = []
    for task, r in results.items():
        lines.append(f"| {task} | {_headline(task, r)} | {r['seconds']:.0f} |")
        if r.get("grid_edge"):
            notes.append(f"{task}: {r['grid_edge']}")
        if r.get("unconverged_fits"):
            notes.append(f"{task}: {r['unconverged_fits']} fits stopped at the iteration budget.")
    return "\n".join(lines + [""] + notes).rstrip() + "\n"


def evaluate_run(
    workdir: str | Path,
    data_dir: str | Path,
    tasks: Sequence[str],
    *,
    step: int | None = None,
    folds: int = 10,
    seed: int = 0,
    standardize: bool = False,
) -> tuple[int, dict]:
    """Evaluates a skip-thought run's checkpoint and writes ``WORKDIR/eval/<step>.json``
    (with the :func:`protocol` it was evaluated under)."""
    from lnexp.studies.skipthought.encode import SentenceEncoder

    encoder = SentenceEncoder(workdir, step)
    results = run(encoder, data_dir, tasks, folds=folds, seed=seed, standardize=standardize)
    out = Path(workdir) / "eval" / f"{encoder.step}.json"
    out.parent.mkdir(exist_ok=True)
    record = {
        "step": encoder.step,
        "tasks": list(tasks),
        **protocol(folds, standardize),
        "results": results,
    }
    write_atomically(out, json.dumps(record, indent=2) + "\n")
    return encoder.step, results


@command_line
def main(argv: list[str]) -> None:
    del argv
    quiet_library_logs()
    FLAGS = flags.FLAGS
    step, results = evaluate_run(
        FLAGS.workdir,
        FLAGS.data_dir,
        FLAGS.tasks,
        step=FLAGS.checkpoint,
        folds=FLAGS.folds,
        seed=FLAGS.seed,
        standardize=FLAGS.standardize,
    )
    print(f"{FLAGS.workdir}, step {step}:\n")
    print(results_table(results))
    print(f"Wrote {Path(FLAGS.workdir) / 'eval' / f'{step}.json'}")


def define_flags() -> None:
    """The command line's flags (defined only when the module runs as a program)."""
    flag_kinds.path(
        "workdir", None, "Skip-thought run directory (or a checkpoint in it).", must_exist=True
    )
    flag_kinds.path("data_dir", None, "SentEval's data/downstream directory.", must_exist=True)
    flag_kinds.names("tasks", ["MR", "SUBJ", "TREC", "SICK"], "Task folders to evaluate.", TASKS)
    flag_kinds.count("checkpoint", None, "Checkpoint step (default: the latest).", low=0)
    flag_kinds.count("folds", 10, "Cross-validation folds.", low=2)
    flag_kinds.count("seed", 0, "Seed of the folds and of the SICK training.", low=0)
    flags.DEFINE_bool(
        "standardize",
        False,
        "Standardize the vectors before the logistic regressions (the skip-thought protocol "
        "feeds them as they are).",
    )
    flags.mark_flags_as_required(["workdir", "data_dir"])


if __name__ == "__main__":
    define_flags()
    cli.run(main)
