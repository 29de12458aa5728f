"""The paper's Figure 6 claims, tested on a grid of PI-MNIST runs: evidence and a verdict per claim.

:func:`fig6_claims` reads a grid of run directories (:func:`lnexp.reporting.runs.find_runs`)
with one cell per method (``model.norm`` in ``none``, ``batch``, ``layer``, ``weight``) and batch
size (128 and 4), and tests what the paper says about its Figure 6 (Section 6.1):

1. **Final test error** per method and batch size against the paper's curve at the same epoch.
2. **"LN is robust to the batch size"** (and BN is not): each method's test error at batch size
   4 minus its error at batch size 128, at the last epoch and, as a second measure, averaged
   over the last 20 epochs (one epoch of an unstable method is a noisy draw).
3. **"LN converges faster than BN applied to all layers"**: the epochs until the training NLL and
   the test error first fall below a threshold, per method and batch size.
4. **"BN is unstable at batch size 4"**: the spread of the test error over the last 20 epochs.

Each test gives a :class:`Claim` with the measured numbers, a verdict (``holds``, ``does not
hold``, ``inconclusive``, or ``n/a`` for a row the paper has no value for) and the reason, in
words and numbers. :func:`claims_markdown` writes them as a table that states every rule;
:func:`write_claims` writes ``claims.md`` and ``claims.json`` beside ``summary.md``.

Epochs: every number at a batch size is taken at (or up to) the last epoch that all runs of that
batch size have reached, so that methods are compared after the same training; the robustness
test compares both batch sizes at the earlier of the two (e.g. 10 when the batch-4 runs have 10
epochs and the batch-128 runs 64). The tables state the epoch used.

Statistics: an error rate ``p`` measured on the 10,000 test images has the binomial standard
error ``sqrt(p (1 - p) / 10,000)`` (the *test-set SE*). A cell's mean test error over ``n`` seeds
with sample standard deviation ``s`` (0 for one seed) has
``se = sqrt(s**2 / n + p (1 - p) / 10,000)``: the seeds' spread plus the test set's sampling
noise, which averaging over seeds evaluated on the same images does not reduce. The difference of
two independent quantities has ``se = sqrt(se1**2 + se2**2)``; a difference is *significant* when
its size exceeds 2 se.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lnexp.errors import UserError
from lnexp.norms import REGISTRY
from lnexp.reporting.runs import Run, find_runs
from lnexp.studies.pimnist import task as pimnist

EXPERIMENT = "pimnist"  # The claims are Figure 6's: PI-MNIST runs (lnexp.studies.pimnist.task).
TEST_SET_SIZE = 10_000  # MNIST's test images: the binomial noise of every test error.
BATCH_SIZES = (128, 4)  # The paper's two columns of Fig. 6.
METHOD_NAMES = {"none": "baseline", "batch": "BN", "layer": "LN", "weight": "WN"}
DEFAULT_NLL_THRESHOLD = 1e-2
DEFAULT_ERROR_THRESHOLD = 0.02
WINDOW = 20  # The last epochs over which the instability test measures the spread.
SPIKE = 0.005  # A spike: an epoch's test error more than 0.5 points above the window's median.
MARGIN_EPOCHS = 1.0  # "Earlier" in the convergence test: by more than this many epochs.
VERDICTS = ("holds", "does not hold", "inconclusive", "n/a")

RULE_TEST_ERROR = (
    "Ours: the test error at the last epoch all runs of that batch size reached, mean ± sample "
    "std over seeds. Test-set SE = sqrt(p(1 − p)/10,000), the binomial standard error of an "
    "error rate p on the 10,000 test images. se = sqrt(s²/n + p(1 − p)/10,000), with s the std "
    "over the n seeds (0 for one seed). The paper's value q is read off its curve at the same "
    "epoch; the difference has se_d = sqrt(se² + q(1 − q)/10,000) (the paper does not give the "
    "spread of its seeds). **Holds** (matches the paper) when |ours − paper| ≤ 2 se_d, **does "
    "not hold** otherwise; **n/a** where the paper has no curve for the method."
)
RULE_ROBUSTNESS = (
    "Δ = test error at batch size 4 − test error at batch size 128, both at the last epoch all "
    "runs of both batch sizes reached, with se(Δ) = sqrt(se₄² + se₁₂₈²) (se as in the first "
    "table). **Holds** when Δ_LN < Δ_BN by more than 2 sqrt(se(Δ_LN)² + se(Δ_BN)²) and Δ_LN is "
    "not above the baseline's Δ by more than 2 se of that difference; **does not hold** when "
    "Δ_LN is above Δ_BN, or above the baseline's Δ, by more than 2 se of the difference; "
    "**inconclusive** otherwise (the difference from BN's is within the noise)."
)
RULE_ROBUSTNESS_WINDOW = (
    f"The same test and verdict rule with each seed's test error averaged over the last {WINDOW} "
    "epochs in place of its error at the last epoch (the window ends at the last epoch all runs "
    "of both batch sizes reached). One epoch's error is a draw from the epoch-to-epoch swings "
    "that test 4 measures, which are points wide for BN at batch size 4; the mean over the "
    "window measures the level a method trains at. se as in the first table, over the per-seed "
    "means, with the test-set SE of the mean kept whole (averaging epochs evaluated on the same "
    "images does not reduce it). The paper's Δ is the same mean over its curves. "
    f"**Inconclusive** when the runs have fewer than {WINDOW} epochs."
)
RULE_INSTABILITY = (
    f"Per seed, over the test error of the last {WINDOW} epochs (up to the last epoch all runs "
    "of the batch size reached): the sample std over those epochs, and the number of epochs "
    f"more than {100 * SPIKE:.1f} points above that seed's median over them; both averaged "
    f"over seeds. **Holds** when BN's std at batch size 4 is the largest of all methods there "
    "and at least twice LN's; **does not hold** when BN's std ≤ LN's; **inconclusive** "
    f"otherwise, and when the batch-4 runs have fewer than {WINDOW} epochs. The paper's values "
    "are the same statistics of its curve over the same epochs (its last 20 epochs, 45–64, when "
    "ours are too short)."
)


def check_experiment(experiment: str | None, config_path: str) -> None:
    """Before training a grid for the claims: its config must be of the Figure 6 experiment."""
    if experiment != EXPERIMENT:
        raise UserError(
            f"--claims tests the claims of the paper's Figure 6 (PI-MNIST), but {config_path} "
            f"is experiment {experiment!r}; drop --claims or use configs/pimnist.py."
        )


def rule_convergence(nll_threshold: float, error_threshold: float) -> str:
    """The convergence test's rule, with its thresholds, as the markdown states it."""
    return (
        f"Per seed, the first epoch whose training NLL is below {nll_threshold:g} and the first "
        f"whose test error is below {100 * error_threshold:g} %, within the epochs all runs of "
        "the batch size reached (E); the mean over seeds. A seed that never gets there counts as "
        "E + 1, so such a mean is a lower bound (≥). LN is *earlier* than BN when LN's mean, "
        f"from seeds that all got there, is below BN's by more than {MARGIN_EPOCHS:g} epoch "
        "(and *later* the other way round). Per batch size: **holds** when LN is earlier on "
        "both thresholds, **does not hold** when later on both, **inconclusive** otherwise "
        "(mixed, within an epoch, or neither gets there). BN here is applied to all layers, "
        "the logits included, as in the paper (lnexp.norms.REGISTRY's normalizes_logits: BN yes, "
        "LN no, unless model.normalize_logits says otherwise). The paper's epochs are read off its "
        "curves, whose epoch axis starts at 0."
    )


@dataclasses.dataclass
class Claim:
    """One claim of the paper with the measured evidence and the verdict.

    Attributes:
        group: Which test: ``test_error``, ``robustness``, ``convergence`` or ``instability``.
        claim: The claim in words (for ``test_error``, the method, batch size and paper value).
        rule: How the verdict is reached, with the thresholds used.
        evidence: The numbers behind the verdict in one line.
        rows: The measurements, one dict per method (and batch size), numbers as fractions
            (``None`` where there is none).
        verdict: One of :data:`VERDICTS`.
        reason: Why, with the numbers.
    """

    group: str
    claim: str
    rule: str
    evidence: str
    rows: list[dict[str, Any]]
    verdict: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The claim as a JSON-able dict."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# Statistics.


def binomial_se(p: float, test_set_size: int = TEST_SET_SIZE) -> float:
    """The binomial standard error ``sqrt(p (1 - p) / N)`` of an error rate on ``N`` images."""
    return math.sqrt(p * (1.0 - p) / test_set_size)


def mean_error(values: Sequence[float], test_set_size: int = TEST_SET_SIZE) -> dict[str, float]:
    """Mean, std and standard errors of one cell's test error over its seeds.

    Args:
        values: The test error (a fraction) of each seed.
        test_set_size: The number of test images.

    Returns:
        ``{'mean': p, 'std': s, 'n': n, 'test_se': sqrt(p(1-p)/N),
        'se': sqrt(s**2/n + p(1-p)/N)}`` with ``s`` the sample std (0 when ``n == 1``).
    """
    a = np.asarray(values, np.float64)
    n = len(a)
    p = float(a.mean())
    s = float(a.std(ddof=1)) if n > 1 else 0.0
    binomial = binomial_se(p, test_set_size)
    return {
        "mean": p,
        "std": s,
        "n": n,
        "test_se": binomial,
        "se": math.sqrt(s**2 / n + binomial**2),
    }


def first_epoch_below(
    epochs: np.ndarray, values: np.ndarray, threshold: float, last_epoch: int
) -> int | None:
    """The first epoch ``<= last_epoch`` whose value is below ``threshold`` (``None``: never)."""
    hits = [
        int(e) for e, v in zip(epochs, values, strict=True) if e <= last_epoch and v < threshold
    ]
    return hits[0] if hits else None


def spread(values: Sequence[float], spike: float = SPIKE) -> tuple[float, int]:
    """``(sample std, number of values more than spike above the median)`` of a window."""
    a = np.asarray(values, np.float64)
    return float(a.std(ddof=1)), int(np.sum(a > np.median(a) + spike))


# --------------------------------------------------------------------------------------------
# The grid.


@dataclasses.dataclass
class _Grid:
    """The runs by ``(batch_size, norm)``, the last common epoch per batch size, the paper."""

    cells: dict[tuple[int, str], list[Run]]
    epochs: dict[int, int]
    paper: dict[tuple[int, str], dict[str, np.ndarray]]

    def methods(self, batch_size: int | None = None) -> list[str]:
        norms = {n for b, n in self.cells if batch_size is None or b == batch_size}
        return _ordered(norms)

    def missing(self, batch_size: int, norms: Sequence[str] = ("layer", "batch")) -> str | None:
        """Why a test that needs ``norms`` at ``batch_size`` cannot run, or ``None``."""
        if batch_size not in self.epochs:
            return f"no runs at batch size {batch_size}"
        for norm in norms:
            if (batch_size, norm) not in self.cells:
                return f"no runs of {_name(norm)} at batch size {batch_size}"
        return None


def _name(norm: str) -> str:
    return METHOD_NAMES.get(norm, norm)


def _ordered(norms: Sequence[str] | set[str]) -> list[str]:
    known = [n for n in METHOD_NAMES if n in norms]
    return known + sorted(set(norms) - set(known))


def _run_name(run: Run) -> str:
    return f"{run.cell}/seed={run.seed}"


def _last_epoch(run: Run) -> int:
    epochs, _ = run.curve("test_error")
    return int(epochs.max())


def _grid(runs: Sequence[Run]) -> _Grid:
    if not runs:
        raise UserError("No runs to test the Figure 6 claims on.")
    others = [r for r in runs if r.config.get("experiment") != EXPERIMENT]
    if others:
        raise UserError(
            f"The claims are the paper's Figure 6 claims (experiment {EXPERIMENT!r}), but "
            f"{_run_name(others[0])} has experiment {others[0].config.get('experiment')!r}; "
            "report a directory of PI-MNIST runs (configs/pimnist.py)."
        )
    cells: dict[tuple[int, str], list[Run]] = {}
    for run in runs:
        batch_size, norm = run.config.get("batch_size"), run.config.get("model.norm")
        if batch_size not in BATCH_SIZES:
            continue
        for metric in ("test_error", "train_nll"):
            if not len(run.curve(metric)[0]):
                raise UserError(
                    f"{_run_name(run)} has no {metric} records in its metrics.jsonl; the claims "
                    "need the test error and the training NLL of every epoch."
                )
        cells.setdefault((batch_size, norm), []).append(run)
    if not cells:
        raise UserError(
            "None of the runs has batch size 128 or 4, the batch sizes of the paper's Figure 6."
        )
    for (batch_size, norm), cell_runs in cells.items():
        names = sorted({r.cell for r in cell_runs})
        if len(names) > 1:
            raise UserError(
                f"Several cells have model.norm={norm} and batch_size={batch_size} "
                f"({', '.join(names)}); the claims need one cell per method and batch size: "
                "report a directory holding only the runs at the chosen learning rates."
            )
    for cell_runs in cells.values():
        cell_runs.sort(key=lambda r: r.seed)
    epochs: dict[int, int] = {}
    for (batch_size, _), cell_runs in cells.items():
        last = min(_last_epoch(r) for r in cell_runs)
        epochs[batch_size] = min(epochs.get(batch_size, last), last)
    return _Grid(cells, epochs, pimnist.reference_curves())


def _value_at(run: Run, metric: str, epoch: int) -> float:
    """The run's ``metric`` at ``epoch`` (its last record at or before it)."""
    epochs, values = run.curve(metric)
    return float(values[epochs <= epoch][-1])


def _in_window(epochs: np.ndarray, values: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """The ``values`` of the epochs ``window[0]..window[1]`` (both included)."""
    return values[(epochs >= window[0]) & (epochs <= window[1])]


def _paper_at(curve: dict[str, np.ndarray], metric: str, epoch: int) -> float | None:
    epochs = list(curve[f"{metric}_epoch"])
    return float(curve[metric][epochs.index(epoch)]) if epoch in epochs else None


# --------------------------------------------------------------------------------------------
# Formatting.


def _pct(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{100 * value:{'+' if sign else ''}.{digits}f}"


def _epochs(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


# --------------------------------------------------------------------------------------------
# 1. The final test error against the paper's.


def _test_error_claims(grid: _Grid) -> list[Claim]:
    claims = []
    for batch_size in BATCH_SIZES:
        norms = _ordered(
            {n for b, n in grid.paper if b == batch_size} | set(grid.methods(batch_size))
        )
        for norm in norms:
            claims.append(_test_error_claim(grid, batch_size, norm))
    return claims


def _test_error_claim(grid: _Grid, batch_size: int, norm: str) -> Claim:
    name = _name(norm)
    curve = grid.paper.get((batch_size, norm))
    row: dict[str, Any] = {"method": norm, "batch_size": batch_size}
    if (batch_size, norm) not in grid.cells:
        epoch = grid.epochs.get(batch_size, 64)
        paper = _paper_at(curve, "test_error", epoch) if curve else None
        row.update(epoch=None, seeds=[], paper=paper)
        reason = grid.missing(batch_size, [norm])
        claim = f"{name} at batch size {batch_size}: the paper's test error"
        if paper is not None:
            claim += f" at epoch {epoch} is {_pct(paper)} %"
        return Claim(
            "test_error",
            claim,
            RULE_TEST_ERROR,
            "no runs",
            [row],
            "inconclusive",
            reason,
        )
    epoch = grid.epochs[batch_size]
    runs = grid.cells[(batch_size, norm)]
    estimate = mean_error([_value_at(r, "test_error", epoch) for r in runs])
    paper = _paper_at(curve, "test_error", epoch) if curve else None
    row.update(epoch=epoch, seeds=sorted(r.seed for r in runs), paper=paper)
    row.update(estimate)
    seeds = f"{estimate['n']} seed{'s' * (estimate['n'] > 1)}"
    ours = (
        f"{_pct(estimate['mean'])} ± {_pct(estimate['std'])} % ({seeds}, epoch {epoch}; "
        f"test-set SE {_pct(estimate['test_se'])})"
    )
    if curve is None:
        verdict, reason = "n/a", f"the paper's Figure 6 has no {name} curve"
        claim = f"{name} at batch size {batch_size} (not in the paper)"
        evidence = ours
    elif paper is None:
        verdict = "inconclusive"
        reason = f"the paper's curve has no epoch {epoch} (it runs over epochs 0–64)"
        claim = f"{name} at batch size {batch_size}: the paper's test error at epoch {epoch}"
        evidence = ours
    else:
        difference = estimate["mean"] - paper
        se = math.sqrt(estimate["se"] ** 2 + binomial_se(paper) ** 2)
        row.update(paper_test_se=binomial_se(paper), difference=difference, difference_se=se)
        holds = abs(difference) <= 2 * se
        verdict = "holds" if holds else "does not hold"
        reason = (
            f"ours − paper = {_pct(difference, sign=True)} points, "
            f"{'within' if holds else 'beyond'} 2 se_d = ±{_pct(2 * se)} points"
        )
        claim = (
            f"{name} at batch size {batch_size}: the paper's test error at epoch {epoch} is "
            f"{_pct(paper)} %"
        )
        evidence = f"{ours} vs the paper's {_pct(paper)} %"
    return Claim("test_error", claim, RULE_TEST_ERROR, evidence, [row], verdict, reason)


# --------------------------------------------------------------------------------------------
# 2. Robustness to the batch size.


def _level(run: Run, epoch: int, window: tuple[int, int] | None) -> float:
    """The run's test error at ``epoch``, or its mean over the epochs of ``window``."""
    if window is None:
        return _value_at(run, "test_error", epoch)
    epochs, values = run.curve("test_error")
    return float(_in_window(epochs, values, window).mean())


def _paper_level(
    curve: dict[str, np.ndarray], epoch: int, window: tuple[int, int] | None
) -> float | None:
    """The paper's test error at ``epoch`` or its mean over ``window`` (``None``: not on it)."""
    if window is None:
        return _paper_at(curve, "test_error", epoch)
    values = [_paper_at(curve, "test_error", e) for e in range(window[0], window[1] + 1)]
    return None if None in values else float(np.mean(values))


def _robustness_claim(grid: _Grid, *, over_window: bool = False) -> Claim:
    """Test 2 at the last common epoch, or (``over_window``) over the last :data:`WINDOW`."""
    claim = "LN is robust to the batch size (BN is not)"
    rule = RULE_ROBUSTNESS
    if over_window:
        claim += f", mean over the last {WINDOW} epochs"
        rule = RULE_ROBUSTNESS_WINDOW
    missing = grid.missing(128) or grid.missing(4)
    if missing:
        return Claim("robustness", claim, rule, "–", [], "inconclusive", missing)
    epoch = min(grid.epochs[128], grid.epochs[4])
    window = _window(epoch) if over_window else None
    if over_window and window is None:
        reason = f"the last epoch all runs reached is {epoch}; the test needs {WINDOW} epochs"
        return Claim("robustness", claim, rule, f"{epoch} epochs", [], "inconclusive", reason)
    rows, deltas = [], {}
    for norm in grid.methods():
        if (128, norm) not in grid.cells or (4, norm) not in grid.cells:
            continue
        large, small = (
            mean_error([_level(r, epoch, window) for r in grid.cells[(b, norm)]]) for b in (128, 4)
        )
        delta = small["mean"] - large["mean"]
        se = math.sqrt(small["se"] ** 2 + large["se"] ** 2)
        deltas[norm] = (delta, se)
        row = {
            "method": norm,
            "epoch": epoch,
            "window": list(window) if window else None,
            "error_128": large["mean"],
            "se_128": large["se"],
            "seeds_128": large["n"],
            "error_4": small["mean"],
            "se_4": small["se"],
            "seeds_4": small["n"],
            "delta": delta,
            "delta_se": se,
            "paper_delta": None,
        }
        papers = [grid.paper.get((b, norm)) for b in (128, 4)]
        if all(papers):
            values = [_paper_level(c, epoch, window) for c in papers]
            if None not in values:
                row["paper_delta"] = values[1] - values[0]
        rows.append(row)
    where = f"epochs {window[0]}–{window[1]}" if window else f"epoch {epoch}"
    evidence = (
        f"batch 4 − batch 128 {'over' if window else 'at'} {where}: "
        + ", ".join(
            f"{_name(r['method'])} {_pct(r['delta'], sign=True)} ± {_pct(r['delta_se'])}"
            for r in rows
        )
        + " points"
    )
    verdict, reason = _robustness_verdict(deltas)
    return Claim("robustness", claim, rule, evidence, rows, verdict, reason)


def _robustness_verdict(deltas: dict[str, tuple[float, float]]) -> tuple[str, str]:
    """The verdict and its reason from each method's ``(Δ, se(Δ))`` (the rule of test 2)."""
    (ln, ln_se), (bn, bn_se) = deltas["layer"], deltas["batch"]
    gap, gap_se = ln - bn, math.sqrt(ln_se**2 + bn_se**2)
    numbers = (
        f"Δ_LN = {_pct(ln, sign=True)}, Δ_BN = {_pct(bn, sign=True)}; Δ_LN − Δ_BN = "
        f"{_pct(gap, sign=True)}, 2 se = {_pct(2 * gap_se)}"
    )
    if "none" in deltas:
        base, base_se = deltas["none"]
        worse, worse_se = ln - base, math.sqrt(ln_se**2 + base_se**2)
        numbers += f"; Δ_LN − Δ_baseline = {_pct(worse, sign=True)}, 2 se = {_pct(2 * worse_se)}"
        worse_than_base = worse > 2 * worse_se
    else:
        numbers += "; no baseline at both batch sizes to compare with"
        worse_than_base = False
    if gap > 2 * gap_se:
        verdict, why = "does not hold", "LN's error rises significantly more than BN's"
    elif worse_than_base:
        verdict, why = "does not hold", "LN's error rises significantly more than the baseline's"
    elif -gap > 2 * gap_se:
        verdict, why = "holds", "LN's change is significantly smaller than BN's"
    else:
        verdict, why = "inconclusive", "LN's and BN's changes differ by less than the noise"
    return verdict, f"{why}: {numbers} points"


# --------------------------------------------------------------------------------------------
# 3. Convergence speed.


def _epochs_summary(per_seed: Sequence[int | None], last_epoch: int) -> dict[str, Any]:
    reached = [e for e in per_seed if e is not None]
    bound = float(np.mean([last_epoch + 1 if e is None else e for e in per_seed]))
    return {
        "per_seed": list(per_seed),
        "reached": len(reached),
        "mean": bound if len(reached) == len(per_seed) else None,
        "lower_bound": bound,
    }


def _fmt_epochs(summary: dict[str, Any], last_epoch: int) -> str:
    n = len(summary["per_seed"])
    if summary["reached"] == n:
        return _epochs(summary["mean"])
    if summary["reached"] == 0:
        return f"never within {last_epoch}"
    return f"≥ {summary['lower_bound']:.1f} ({n - summary['reached']} of {n} never)"


def _compare_epochs(ln: dict[str, Any], bn: dict[str, Any]) -> tuple[str, float | None]:
    """``(outcome, by how many epochs)``: ``earlier``, ``later``, ``within`` or ``undetermined``.

    LN is earlier when all its seeds got there and its mean is more than :data:`MARGIN_EPOCHS`
    below BN's (a lower bound where some BN seeds never got there); later the other way round.
    The epochs are the (positive) lead or lag, or BN's mean minus LN's for ``within``.
    """
    if ln["mean"] is not None and bn["lower_bound"] - ln["mean"] > MARGIN_EPOCHS:
        return "earlier", bn["lower_bound"] - ln["mean"]
    if bn["mean"] is not None and ln["lower_bound"] - bn["mean"] > MARGIN_EPOCHS:
        return "later", ln["lower_bound"] - bn["mean"]
    if ln["mean"] is not None and bn["mean"] is not None:
        return "within", bn["mean"] - ln["mean"]
    return "undetermined", None


def _convergence_claim(
    grid: _Grid, batch_size: int, nll_threshold: float, error_threshold: float
) -> Claim:
    claim = f"LN converges faster than BN applied to all layers (batch size {batch_size})"
    rule = rule_convergence(nll_threshold, error_threshold)
    if batch_size not in grid.epochs:
        reason = grid.missing(batch_size)
        return Claim("convergence", claim, rule, "–", [], "inconclusive", reason)
    last = grid.epochs[batch_size]
    thresholds = {"train_nll": nll_threshold, "test_error": error_threshold}
    rows = []
    for norm in grid.methods(batch_size):
        runs = grid.cells[(batch_size, norm)]
        row: dict[str, Any] = {
            "method": norm,
            "batch_size": batch_size,
            "epoch": last,
            "seeds": [r.seed for r in runs],
            "nll_threshold": nll_threshold,
            "error_threshold": error_threshold,
            "normalize_logits": [_normalizes_logits(r) for r in runs],
        }
        curve = grid.paper.get((batch_size, norm))
        row["in_paper"] = curve is not None
        for metric, threshold in thresholds.items():
            per_seed = [first_epoch_below(*r.curve(metric), threshold, last) for r in runs]
            row[metric] = _epochs_summary(per_seed, last)
            row[f"paper_{metric}"] = (
                first_epoch_below(curve[f"{metric}_epoch"], curve[metric], threshold, last)
                if curve
                else None
            )
        rows.append(row)
    by_norm = {r["method"]: r for r in rows}
    labels = {
        "train_nll": f"train NLL < {nll_threshold:g}",
        "test_error": f"test error < {_pct(error_threshold, 2)} %",
    }
    evidence = (
        "; ".join(
            f"{labels[m]}: "
            + ", ".join(f"{_name(r['method'])} {_fmt_epochs(r[m], last)}" for r in rows)
            for m in thresholds
        )
        + f" epochs (mean over seeds, within {last})"
    )
    missing = grid.missing(batch_size)
    if missing:
        return Claim("convergence", claim, rule, evidence, rows, "inconclusive", missing)
    outcomes, parts = [], []
    for metric in thresholds:
        ln, bn = by_norm["layer"][metric], by_norm["batch"][metric]
        outcome, lead = _compare_epochs(ln, bn)
        outcomes.append(outcome)
        said = {
            "earlier": f"LN earlier by {'at least ' * (bn['mean'] is None)}{_epochs(lead)} epochs",
            "later": f"LN later by {'at least ' * (ln['mean'] is None)}{_epochs(lead)} epochs",
            "within": "within 1 epoch",
            "undetermined": "cannot tell",
        }[outcome]
        parts.append(
            f"{labels[metric]}: LN {_fmt_epochs(ln, last)}, BN {_fmt_epochs(bn, last)} ({said})"
        )
    if outcomes == ["earlier", "earlier"]:
        verdict, why = "holds", "LN gets below both thresholds earlier"
    elif outcomes == ["later", "later"]:
        verdict, why = "does not hold", "LN gets below both thresholds later"
    elif sorted(outcomes) == ["earlier", "later"]:
        verdict, why = "inconclusive", "LN is earlier on one threshold and later on the other"
    else:
        verdict, why = "inconclusive", "not earlier on both thresholds"
    reason = f"{why}: {'; '.join(parts)}"
    bn_logits = by_norm["batch"]["normalize_logits"]
    if not all(bn_logits):
        reason += (
            "; note: these BN runs do not normalize the logits (model.normalize_logits=False), "
            "unlike the paper's BN"
        )
    return Claim("convergence", claim, rule, evidence, rows, verdict, reason)


def _normalizes_logits(run: Run) -> bool:
    value = run.config.get("model.normalize_logits")
    norm = run.config.get("model.norm")
    if value is None:
        return norm in REGISTRY and REGISTRY[norm].normalizes_logits
    return bool(value)


# --------------------------------------------------------------------------------------------
# 4. Instability at batch size 4.


def _window(last_epoch: int) -> tuple[int, int] | None:
    return (last_epoch - WINDOW + 1, last_epoch) if last_epoch >= WINDOW else None


def _spread_row(grid: _Grid, batch_size: int, norm: str) -> dict[str, Any]:
    runs = grid.cells[(batch_size, norm)]
    last = grid.epochs[batch_size]
    window = _window(last)
    row: dict[str, Any] = {"method": norm, "batch_size": batch_size, "epoch": last}
    row["window"] = list(window) if window else None
    if window:
        stats = []
        for run in runs:
            epochs, values = run.curve("test_error")
            stats.append(spread(_in_window(epochs, values, window)))
        row["std_per_seed"] = [s for s, _ in stats]
        row["spikes_per_seed"] = [k for _, k in stats]
        row["std"] = float(np.mean(row["std_per_seed"]))
        row["spikes"] = float(np.mean(row["spikes_per_seed"]))
    else:
        row.update(std_per_seed=None, spikes_per_seed=None, std=None, spikes=None)
    curve = grid.paper.get((batch_size, norm))
    paper_window = window if window and last <= 64 else (64 - WINDOW + 1, 64)
    if curve:
        chosen = _in_window(curve["test_error_epoch"], curve["test_error"], paper_window)
        row["paper_window"] = list(paper_window)
        row["paper_std"], row["paper_spikes"] = spread(chosen)
    else:
        row.update(paper_window=None, paper_std=None, paper_spikes=None)
    return row


def _instability_claim(grid: _Grid) -> Claim:
    claim = "BN is unstable at batch size 4"
    rows = [_spread_row(grid, b, n) for b in (4, 128) if b in grid.epochs for n in grid.methods(b)]
    small = {r["method"]: r for r in rows if r["batch_size"] == 4}
    missing = grid.missing(4)
    if missing:
        return Claim("instability", claim, RULE_INSTABILITY, "–", rows, "inconclusive", missing)
    last = grid.epochs[4]
    if _window(last) is None:
        reason = (
            f"the runs at batch size 4 have only {last} epochs; the test needs the last {WINDOW}"
        )
        evidence = f"batch size 4: {last} epochs"
        return Claim("instability", claim, RULE_INSTABILITY, evidence, rows, "inconclusive", reason)
    first = last - WINDOW + 1
    evidence = (
        f"std of the test error over epochs {first}–{last} at batch size 4: "
        + ", ".join(f"{_name(n)} {_pct(r['std'], 3)}" for n, r in small.items())
        + " points; epochs > median + 0.5: "
        + ", ".join(f"{_name(n)} {r['spikes']:.1f}" for n, r in small.items())
    )
    bn, ln = small["batch"]["std"], small["layer"]["std"]
    largest = max(small, key=lambda n: small[n]["std"])
    numbers = f"std BN {_pct(bn, 3)}, LN {_pct(ln, 3)} points"
    if bn <= ln:
        verdict, why = "does not hold", "BN's test error varies no more than LN's"
    elif largest == "batch" and bn >= 2 * ln:
        verdict, why = "holds", "BN's test error varies the most, at least twice as much as LN's"
    elif largest != "batch":
        verdict = "inconclusive"
        why = f"BN varies more than LN, but {_name(largest)} varies the most"
        numbers += f", {_name(largest)} {_pct(small[largest]['std'], 3)}"
    else:
        verdict, why = "inconclusive", "BN varies more than LN, but less than twice as much"
    reason = f"{why} ({numbers}; ratio {bn / ln:.1f})" if ln > 0 else f"{why} ({numbers})"
    return Claim("instability", claim, RULE_INSTABILITY, evidence, rows, verdict, reason)


# --------------------------------------------------------------------------------------------
# The report.


def fig6_claims(
    runs: Sequence[Run],
    *,
    nll_threshold: float = DEFAULT_NLL_THRESHOLD,
    error_threshold: float = DEFAULT_ERROR_THRESHOLD,
) -> list[Claim]:
    """Tests the paper's Figure 6 claims on a grid of PI-MNIST runs.

    The rules are stated in the module docstring and in each claim's ``rule``. The convergence
    thresholds' defaults, a training NLL of 1e-2 and a test error of 2 %, are the levels every
    method passes early on the curves of ``results/fig6`` at batch size 128 (within 2-17 epochs
    for the NLL, 2-15 for the error) and that LN, the baseline and WN pass within the 10 epochs
    of its batch-4 runs, so they measure the speed of the initial descent at both batch sizes;
    the paper's curves pass both within its first 7 epochs at batch size 128. Lower levels
    (an NLL of 1e-3, an error of 1.6 %) are not reached by most methods within 10 epochs at
    batch size 4 and would leave nothing to compare.

    Args:
        runs: Runs of ``configs/pimnist.py`` (:func:`lnexp.reporting.runs.find_runs`), one cell per
            ``model.norm`` and ``batch_size``; runs at batch sizes other than 128 and 4 are left
            out.
        nll_threshold: The training NLL of the convergence test.
        error_threshold: The test error (a fraction) of the convergence test.

    Returns:
        The claims: the final test error per batch size (128, 4) and method (the paper's three,
        then the others), the robustness to the batch size (at the last epoch, then over the
        last 20), the convergence at batch sizes 128 and 4, and the instability at batch size 4.

    Raises:
        UserError: No runs, runs of another experiment, no run at batch size 128 or 4, a run
            without test error or training NLL, or two cells with the same method and batch size.
    """
    grid = _grid(runs)
    return [
        *_test_error_claims(grid),
        _robustness_claim(grid),
        _robustness_claim(grid, over_window=True),
        *(_convergence_claim(grid, b, nll_threshold, error_threshold) for b in BATCH_SIZES),
        _instability_claim(grid),
    ]


def claims_json(claims: Sequence[Claim]) -> list[dict[str, Any]]:
    """The claims as JSON-able dicts (:meth:`Claim.to_json`)."""
    return [c.to_json() for c in claims]


_TITLES = {
    "test_error": "1. Final test error against the paper's",
    "robustness": "2. LN is robust to the batch size",
    "convergence": "3. LN converges faster than BN applied to all layers",
    "instability": "4. BN is unstable at batch size 4",
}


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims as markdown: one summary row per claim, then each test's rule and numbers."""
    epochs = {
        r["batch_size"]: r["epoch"]
        for c in claims
        if c.group == "test_error"
        for r in c.rows
        if r["epoch"] is not None
    }
    used = ", ".join(f"{e} at batch size {b}" for b, e in epochs.items()) or "none"
    lines = [
        "# The paper's Figure 6 claims, tested on these runs",
        "",
        "Errors in percent of the 10,000 test images; differences in percentage points. "
        f"Epochs used (the last all runs of the batch size reached): {used}. "
        "Each section below states the rule behind its verdicts.",
        "",
        "| claim | evidence | verdict | reason |",
        "|---|---|---|---|",
    ]
    for c in claims:
        cells = [_cell(c.claim), _cell(c.evidence), f"**{c.verdict}**", _cell(c.reason)]
        lines.append(f"| {' | '.join(cells)} |")
    for group, title in _TITLES.items():
        chosen = [c for c in claims if c.group == group]
        if not chosen:
            continue
        lines += ["", f"## {title}", ""]
        for rule in dict.fromkeys(c.rule for c in chosen):
            lines += [rule, ""]
        lines += _TABLES[group](chosen)
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text for a markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def _test_error_table(claims: Sequence[Claim]) -> list[str]:
    lines = [
        "| method | batch size | epoch | seeds | ours (mean ± std) | test-set SE | se | paper "
        "| ours − paper (± se_d) | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in claims:
        (r,) = c.rows
        if not r["seeds"]:
            ours = ["–"] * 4
        else:
            ours = [
                str(r["epoch"]),
                str(len(r["seeds"])),
                f"{_pct(r['mean'])} ± {_pct(r['std'])}",
                _pct(r["test_se"]),
            ]
        difference = (
            f"{_pct(r['difference'], sign=True)} ± {_pct(r['difference_se'])}"
            if "difference" in r
            else "–"
        )
        lines.append(
            f"| {_name(r['method'])} | {r['batch_size']} | {' | '.join(ours)} | "
            f"{_pct(r.get('se'))} | {_pct(r['paper'])} | {difference} | {c.verdict} |"
        )
    return lines


def _robustness_table(claims: Sequence[Claim]) -> list[str]:
    lines: list[str] = []
    for c in claims:
        if lines:
            lines.append("")
        if not c.rows:
            lines.append(f"**{c.verdict}** ({c.claim}): {c.reason}.")
            continue
        lines += [
            "| method | epoch | batch 128 (± se) | batch 4 (± se) "
            "| Δ = batch 4 − batch 128 (± se) | paper's Δ |",
            "|---|---|---|---|---|---|",
        ]
        for r in c.rows:
            w = r["window"]
            where = f"mean of {w[0]}–{w[1]}" if w else str(r["epoch"])
            lines.append(
                f"| {_name(r['method'])} | {where} | {_pct(r['error_128'])} ± "
                f"{_pct(r['se_128'])} | {_pct(r['error_4'])} ± {_pct(r['se_4'])} "
                f"| {_pct(r['delta'], sign=True)} ± {_pct(r['delta_se'])} "
                f"| {_pct(r['paper_delta'], sign=True)} |"
            )
        lines += ["", f"**{c.verdict}** ({c.claim}): {c.reason}."]
    return lines


def _convergence_table(claims: Sequence[Claim]) -> list[str]:
    rows = [r for c in claims for r in c.rows]
    nll = f"NLL < {rows[0]['nll_threshold']:g}" if rows else "NLL"
    error = f"error < {_pct(rows[0]['error_threshold'])} %" if rows else "error"
    lines = [
        f"| method | batch size | epochs (E) | {nll}: first epoch per seed | {nll}: mean "
        f"| {error}: first epoch per seed | {error}: mean | paper ({nll}, {error}) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def seeds(per_seed):
        return ", ".join("never" if e is None else str(e) for e in per_seed)

    def paper(e):
        return "never" if e is None else str(e)

    for c in claims:
        for r in c.rows:
            last = r["epoch"]
            ref = (
                f"{paper(r['paper_train_nll'])}, {paper(r['paper_test_error'])}"
                if r["in_paper"]
                else "–"
            )
            lines.append(
                f"| {_name(r['method'])} | {r['batch_size']} | {last} "
                f"| {seeds(r['train_nll']['per_seed'])} | {_fmt_epochs(r['train_nll'], last)} "
                f"| {seeds(r['test_error']['per_seed'])} | {_fmt_epochs(r['test_error'], last)} "
                f"| {ref} |"
            )
    lines.append("")
    for c in claims:
        lines.append(f"- {c.claim}: **{c.verdict}**: {c.reason}.")
    return lines


def _instability_table(claims: Sequence[Claim]) -> list[str]:
    (c,) = claims
    lines = [
        "| method | batch size | epochs | std over epochs | epochs > median + 0.5 "
        "| paper: epochs | paper: std | paper: epochs > median + 0.5 |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def window(w):
        return f"{w[0]}–{w[1]}" if w else "–"

    for r in c.rows:
        ours = (
            [window(r["window"]), _pct(r["std"], 3), f"{r['spikes']:.1f}"]
            if r["window"]
            else [f"only {r['epoch']}", "–", "–"]
        )
        paper = (
            [window(r["paper_window"]), _pct(r["paper_std"], 3), str(r["paper_spikes"])]
            if r["paper_window"]
            else ["–"] * 3
        )
        lines.append(
            f"| {_name(r['method'])} | {r['batch_size']} | {' | '.join(ours)} | "
            f"{' | '.join(paper)} |"
        )
    return [*lines, "", f"**{c.verdict}**: {c.reason}."]


_TABLES = {
    "test_error": _test_error_table,
    "robustness": _robustness_table,
    "convergence": _convergence_table,
    "instability": _instability_table,
}


def write_claims(
    workdir: Path,
    *,
    nll_threshold: float = DEFAULT_NLL_THRESHOLD,
    error_threshold: float = DEFAULT_ERROR_THRESHOLD,
) -> list[Claim]:
    """Tests the claims on the runs under ``workdir``; writes ``claims.md`` and ``claims.json``.

    Args:
        workdir: A grid's directory (``WORKDIR/<cell>/seed=<s>/``).
        nll_threshold: See :func:`fig6_claims`.
        error_threshold: See :func:`fig6_claims`.

    Returns:
        The claims written.

    Raises:
        UserError: As :func:`fig6_claims`.
    """
    runs = find_runs(workdir)
    if not runs:
        raise UserError(
            f"No run directories with metrics under {workdir} (expected "
            f"{workdir}/<cell>/seed=<s>/metrics.jsonl)."
        )
    claims = fig6_claims(runs, nll_threshold=nll_threshold, error_threshold=error_threshold)
    (workdir / "claims.md").write_text(claims_markdown(claims))
    (workdir / "claims.json").write_text(json.dumps(claims_json(claims), indent=2) + "\n")
    return claims
