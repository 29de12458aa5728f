"""Tests for lnexp.studies.pimnist.claims and ``scripts/compare.py --claims`` on synthetic run
directories.

Every grid here is written by hand (config.json + metrics.jsonl, no training) with curves whose
answers are known: the epoch a curve first falls below a threshold, the error at the last epoch,
the spread over the last 20 epochs.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from test_compare import run_cli

from lnexp.errors import UserError
from lnexp.reporting.runs import find_runs
from lnexp.studies.pimnist import claims
from lnexp.studies.pimnist import task as pimnist

REPO = Path(__file__).resolve().parents[1]
N = 10_000  # test images


def write_run(
    workdir: Path,
    norm: str,
    batch_size: int,
    seed: int,
    test_error: list[float],
    train_nll: list[float] | None = None,
    *,
    experiment: str = "pimnist",
    normalize_logits: bool | None = None,
    cell: str | None = None,
) -> Path:
    """A run directory with one record per epoch (1, 2, ...)."""
    cell = cell or f"model.norm={norm},batch_size={batch_size}"
    run_dir = workdir / cell / f"seed={seed}"
    run_dir.mkdir(parents=True)
    config = {
        "batch_size": batch_size,
        "experiment": experiment,
        "seed": seed,
        "model": {"norm": norm, "normalize_logits": normalize_logits},
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    if train_nll is None:
        train_nll = [0.1] * len(test_error)
    records = [
        {"epoch": e, "step": 100 * e, "train_nll": nll, "test_error": err, "wall_s": 10.0 * e}
        for e, (err, nll) in enumerate(zip(test_error, train_nll, strict=True), 1)
    ]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def ending_at(final: float, epochs: int) -> list[float]:
    """A test error curve of ``epochs`` epochs that ends at ``final``."""
    return [0.05] * (epochs - 1) + [final]


def crossing(epoch: int | None, epochs: int, high: float, low: float) -> list[float]:
    """``high`` before ``epoch``, ``low`` from it on (``None``: never below)."""
    return [low if epoch is not None and e >= epoch else high for e in range(1, epochs + 1)]


def by_claim(result: list[claims.Claim]) -> dict[str, claims.Claim]:
    """Claims keyed ``test_error/<norm>/<batch size>``, ``convergence/<bs>``,
    ``robustness/window`` (the mean over the last 20 epochs) or the group."""
    keyed = {}
    for c in result:
        if c.group == "test_error":
            (row,) = c.rows
            keyed[f"test_error/{row['method']}/{row['batch_size']}"] = c
        elif c.group == "convergence":
            keyed[f"convergence/{c.claim.split('batch size ')[1].rstrip(')')}"] = c
        elif c.group == "robustness" and "mean over the last" in c.claim:
            keyed["robustness/window"] = c
        else:
            keyed[c.group] = c
    return keyed


def se_of(values: list[float]) -> float:
    """The design's standard error of a cell's mean, computed with the statistics module."""
    p = statistics.mean(values)
    s2 = statistics.variance(values) if len(values) > 1 else 0.0
    return math.sqrt(s2 / len(values) + p * (1 - p) / N)


# --------------------------------------------------------------------------------------------
# The statistics.


def test_mean_error_and_the_test_sets_standard_error():
    assert claims.binomial_se(0.02) == pytest.approx(0.0014, rel=1e-12)  # sqrt(.02 * .98 / 1e4)
    assert claims.binomial_se(0.5, 100) == pytest.approx(0.05, rel=1e-12)
    two = claims.mean_error([0.01, 0.02])
    assert two["mean"] == pytest.approx(0.015, rel=1e-12)
    assert two["n"] == 2
    assert two["std"] == pytest.approx(math.sqrt(0.00005), rel=1e-12)
    assert two["test_se"] == pytest.approx(math.sqrt(0.015 * 0.985 / N), rel=1e-12)
    assert two["se"] == pytest.approx(math.sqrt(0.00005 / 2 + 0.015 * 0.985 / N), rel=1e-12)
    one = claims.mean_error([0.02])
    assert one["std"] == 0.0 and one["se"] == pytest.approx(0.0014, rel=1e-12)


def test_first_epoch_below_and_spread():
    epochs = np.arange(1, 7)
    values = np.array([0.3, 0.2, 0.05, 0.2, 0.01, 0.01])
    assert claims.first_epoch_below(epochs, values, 0.1, last_epoch=6) == 3  # the first dip
    assert claims.first_epoch_below(epochs, values, 0.02, last_epoch=6) == 5
    assert claims.first_epoch_below(epochs, values, 0.02, last_epoch=4) is None
    assert claims.first_epoch_below(epochs, values, 0.01, last_epoch=6) is None  # not below
    window = [0.02] * 17 + [0.03] * 3
    std, spikes = claims.spread(window)
    assert std == pytest.approx(math.sqrt(2.55e-4 / 19), rel=1e-9)
    assert spikes == 3
    assert claims.spread([0.02] * 19 + [0.0249]) == (
        pytest.approx(statistics.stdev([0.02] * 19 + [0.0249])),
        0,
    )


# --------------------------------------------------------------------------------------------
# 1. The final test error, and a grid without batch size 4.


def test_test_error_claims_and_missing_batch_size(tmp_path):
    paper = pimnist.reference_curves()
    write_run(tmp_path, "layer", 128, 0, ending_at(0.0125, 64))
    write_run(tmp_path, "layer", 128, 1, ending_at(0.0135, 64))
    write_run(tmp_path, "batch", 128, 0, ending_at(0.02, 64))
    write_run(tmp_path, "weight", 128, 0, ending_at(0.014, 64))
    write_run(tmp_path, "weight", 128, 1, ending_at(0.014, 64) + [0.03])  # common epoch: 64
    result = claims.fig6_claims(find_runs(tmp_path))
    keyed = by_claim(result)
    assert [c.group for c in result] == ["test_error"] * 7 + [
        "robustness",
        "robustness",
        "convergence",
        "convergence",
        "instability",
    ]
    # Batch size 128 first, the paper's methods in order, then the others.
    assert list(keyed)[:4] == [
        "test_error/none/128",
        "test_error/batch/128",
        "test_error/layer/128",
        "test_error/weight/128",
    ]

    ln = keyed["test_error/layer/128"]
    (row,) = ln.rows
    q = paper[(128, "layer")]["test_error"][64]
    assert q == 0.01295
    assert row["epoch"] == 64 and row["seeds"] == [0, 1] and row["paper"] == q
    assert row["mean"] == pytest.approx(0.013, rel=1e-12)
    assert row["std"] == pytest.approx(statistics.stdev([0.0125, 0.0135]), rel=1e-12)
    assert row["test_se"] == pytest.approx(math.sqrt(0.013 * 0.987 / N), rel=1e-12)
    assert row["se"] == pytest.approx(se_of([0.0125, 0.0135]), rel=1e-12)
    assert row["difference"] == pytest.approx(0.00005, abs=1e-15)
    se_d = math.sqrt(se_of([0.0125, 0.0135]) ** 2 + q * (1 - q) / N)
    assert row["difference_se"] == pytest.approx(se_d, rel=1e-12)
    assert ln.verdict == "holds"
    assert ln.claim == "LN at batch size 128: the paper's test error at epoch 64 is 1.29 %"
    assert ln.evidence == (
        "1.30 ± 0.07 % (2 seeds, epoch 64; test-set SE 0.11) vs the paper's 1.29 %"
    )
    assert ln.reason == f"ours − paper = +0.01 points, within 2 se_d = ±{200 * se_d:.2f} points"

    bn = keyed["test_error/batch/128"]
    q = paper[(128, "batch")]["test_error"][64]
    se_d = math.sqrt(0.02 * 0.98 / N + q * (1 - q) / N)
    assert bn.rows[0]["difference"] == pytest.approx(0.02 - q, rel=1e-12)
    assert bn.rows[0]["difference_se"] == pytest.approx(se_d, rel=1e-12)
    assert abs(0.02 - q) > 2 * se_d
    assert bn.verdict == "does not hold"
    assert "beyond 2 se_d" in bn.reason

    wn = keyed["test_error/weight/128"]
    assert wn.verdict == "n/a" and wn.reason == "the paper's Figure 6 has no WN curve"
    assert wn.rows[0]["mean"] == pytest.approx(0.014) and wn.rows[0]["paper"] is None

    base = keyed["test_error/none/128"]
    assert base.verdict == "inconclusive"
    assert base.reason == "no runs of baseline at batch size 128"

    # No runs at batch size 4: every claim that needs them is inconclusive, saying so.
    for key in (
        "test_error/none/4",
        "test_error/batch/4",
        "test_error/layer/4",
        "robustness",
        "robustness/window",
        "convergence/4",
        "instability",
    ):
        assert keyed[key].verdict == "inconclusive", key
        assert keyed[key].reason == "no runs at batch size 4", key
    assert keyed["test_error/layer/4"].rows[0]["paper"] == paper[(4, "layer")]["test_error"][64]

    # The markdown: every claim a row of the summary table, the rules, the epochs used.
    markdown = claims.claims_markdown(result)
    lines = markdown.splitlines()
    start = lines.index("| claim | evidence | verdict | reason |")
    table = lines[start + 2 : start + 2 + len(result)]
    assert all(line.startswith("| ") for line in table)
    assert all(line.replace("\\|", "").count("|") == 5 for line in table)  # 4 cells each
    assert (
        "| LN at batch size 128: the paper's test error at epoch 64 is 1.29 % | 1.30 ± 0.07 % "
        "(2 seeds, epoch 64; test-set SE 0.11) vs the paper's 1.29 % | **holds** |"
    ) in markdown
    assert "| WN | 128 | 64 | 2 | 1.40 ± 0.00 | 0.12 | 0.12 | – | – | n/a |" in lines
    assert "| baseline | 4 | – | – | – | – | – | 1.58 | – | inconclusive |" in lines
    assert "Epochs used (the last all runs of the batch size reached): 64 at batch size 128." in (
        markdown
    )
    for rule in (
        claims.RULE_TEST_ERROR,
        claims.RULE_ROBUSTNESS,
        claims.RULE_ROBUSTNESS_WINDOW,
        claims.RULE_INSTABILITY,
    ):
        assert rule in markdown
    assert claims.rule_convergence(0.01, 0.02) in markdown
    # The JSON form is plain JSON.
    as_json = claims.claims_json(result)
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json[2]["rows"][0]["mean"] == pytest.approx(0.013)


def test_a_run_longer_than_the_papers_curves_is_inconclusive(tmp_path):
    write_run(tmp_path, "layer", 128, 0, ending_at(0.013, 70))
    keyed = by_claim(claims.fig6_claims(find_runs(tmp_path)))
    assert keyed["test_error/layer/128"].verdict == "inconclusive"
    assert "no epoch 70" in keyed["test_error/layer/128"].reason


# --------------------------------------------------------------------------------------------
# 2. Robustness to the batch size.


@pytest.mark.parametrize(
    "ln_4, baseline, verdict, reason",
    [
        (0.0135, True, "holds", "LN's change is significantly smaller than BN's"),
        (0.024, True, "does not hold", "significantly more than the baseline's"),
        (0.024, False, "inconclusive", "differ by less than the noise"),
        (0.027, False, "inconclusive", "differ by less than the noise"),  # Above BN's, in noise.
        (0.04, False, "does not hold", "significantly more than BN's"),
    ],
)
def test_robustness_to_the_batch_size(tmp_path, ln_4, baseline, verdict, reason):
    errors = {  # (norm, batch size) -> final test error per seed
        ("batch", 128): [0.013, 0.013],
        ("batch", 4): [0.025],
        ("layer", 128): [0.013, 0.015],
        ("layer", 4): [ln_4],
    }
    if baseline:
        errors[("none", 128)] = [0.015, 0.017]
        errors[("none", 4)] = [0.016]
    for (norm, batch_size), finals in errors.items():
        for seed, final in enumerate(finals):
            write_run(tmp_path, norm, batch_size, seed, ending_at(final, 10))
    write_run(tmp_path, "weight", 128, 0, ending_at(0.014, 12))  # no batch 4: no Δ
    claim = by_claim(claims.fig6_claims(find_runs(tmp_path)))["robustness"]

    rows = {r["method"]: r for r in claim.rows}
    assert list(rows) == (["none", "batch", "layer"] if baseline else ["batch", "layer"])
    assert all(r["epoch"] == 10 for r in rows.values())
    deltas = {
        norm: (
            statistics.mean(errors[(norm, 4)]) - statistics.mean(errors[(norm, 128)]),
            math.sqrt(se_of(errors[(norm, 4)]) ** 2 + se_of(errors[(norm, 128)]) ** 2),
        )
        for norm in rows
    }
    for norm, (delta, se) in deltas.items():
        assert rows[norm]["delta"] == pytest.approx(delta, rel=1e-9, abs=1e-15), norm
        assert rows[norm]["delta_se"] == pytest.approx(se, rel=1e-12), norm
    assert rows["batch"]["delta"] == pytest.approx(0.012, rel=1e-9)
    assert rows["layer"]["delta"] == pytest.approx(ln_4 - 0.014, rel=1e-9)
    assert rows["layer"]["error_128"] == pytest.approx(0.014, rel=1e-12)
    assert rows["layer"]["seeds_128"] == 2 and rows["layer"]["seeds_4"] == 1
    assert rows["batch"]["paper_delta"] == pytest.approx(
        pimnist.reference_curves()[(4, "batch")]["test_error"][10]
        - pimnist.reference_curves()[(128, "batch")]["test_error"][10]
    )
    assert claim.verdict == verdict
    assert reason in claim.reason
    gap = deltas["layer"][0] - deltas["batch"][0]
    gap_se = math.sqrt(deltas["layer"][1] ** 2 + deltas["batch"][1] ** 2)
    assert f"Δ_LN − Δ_BN = {100 * gap:+.2f}, 2 se = {200 * gap_se:.2f}" in claim.reason
    if baseline:
        worse = deltas["layer"][0] - deltas["none"][0]
        assert f"Δ_LN − Δ_baseline = {100 * worse:+.2f}" in claim.reason
    else:
        assert "no baseline at both batch sizes" in claim.reason
    assert "| LN | 10 | 1.40 ± " in claims.claims_markdown([claim])
    # 10 epochs: too few for the second measure, the mean over the last 20.
    window = by_claim(claims.fig6_claims(find_runs(tmp_path)))["robustness/window"]
    assert window.verdict == "inconclusive" and window.rows == []
    assert window.reason == "the last epoch all runs reached is 10; the test needs 20 epochs"
    markdown = claims.claims_markdown([window])
    assert "| method | epoch |" not in markdown  # no empty table
    assert f"**inconclusive** ({window.claim}): {window.reason}." in markdown


def plateau(level: float, last: float, epochs: int = 30) -> list[float]:
    """A curve at 5 % for ``epochs - 20`` epochs, then at ``level``, with ``last`` at the end."""
    return [0.05] * (epochs - 20) + [level] * 19 + [last]


def test_robustness_over_the_last_20_epochs(tmp_path):
    """BN's batch-4 runs sit at 3 % but end on a dip: one epoch misses what 20 show."""
    curves = {  # (norm, batch size) -> per seed (level over the window, the last epoch)
        ("none", 128): [(0.015, 0.015), (0.017, 0.017)],
        ("none", 4): [(0.016, 0.016), (0.018, 0.018)],
        ("batch", 128): [(0.013, 0.013), (0.013, 0.013)],
        ("batch", 4): [(0.030, 0.014), (0.034, 0.013)],
        ("layer", 128): [(0.014, 0.014), (0.015, 0.015)],
        ("layer", 4): [(0.015, 0.015), (0.016, 0.016)],
    }
    for (norm, batch_size), seeds in curves.items():
        for seed, (level, last) in enumerate(seeds):
            write_run(tmp_path, norm, batch_size, seed, plateau(level, last))
    keyed = by_claim(claims.fig6_claims(find_runs(tmp_path)))
    at_last, over = keyed["robustness"], keyed["robustness/window"]
    assert at_last.verdict == "inconclusive"  # BN's Δ at epoch 30 is +0.05 points: no signal.

    def means(norm, batch_size):
        return [(19 * level + last) / 20 for level, last in curves[(norm, batch_size)]]

    assert means("batch", 4) == pytest.approx([0.0292, 0.03295])
    rows = {r["method"]: r for r in over.rows}
    assert list(rows) == ["none", "batch", "layer"]
    for norm, row in rows.items():
        small, large = means(norm, 4), means(norm, 128)
        assert row["epoch"] == 30 and row["window"] == [11, 30], norm
        assert row["error_4"] == pytest.approx(statistics.mean(small), rel=1e-9), norm
        assert row["se_4"] == pytest.approx(se_of(small), rel=1e-9), norm
        assert row["delta"] == pytest.approx(
            statistics.mean(small) - statistics.mean(large), rel=1e-9
        ), norm
        assert row["delta_se"] == pytest.approx(
            math.sqrt(se_of(small) ** 2 + se_of(large) ** 2), rel=1e-9
        ), norm
    assert rows["batch"]["delta"] == pytest.approx(0.031075 - 0.013, rel=1e-9)
    paper = pimnist.reference_curves()
    paper_means = [
        statistics.mean(paper[(b, "batch")]["test_error"][11:31].tolist()) for b in (4, 128)
    ]
    assert rows["batch"]["paper_delta"] == pytest.approx(paper_means[0] - paper_means[1])
    assert over.verdict == "holds"
    assert over.reason.startswith("LN's change is significantly smaller than BN's: Δ_LN = +0.10")
    assert over.evidence.startswith("batch 4 − batch 128 over epochs 11–30: baseline +0.10 ± ")
    assert over.claim == "LN is robust to the batch size (BN is not), mean over the last 20 epochs"
    markdown = claims.claims_markdown([at_last, over])
    assert "| BN | mean of 11–30 | 1.30 ± " in markdown
    assert "| BN | 30 | 1.30 ± " in markdown
    assert claims.RULE_ROBUSTNESS in markdown and claims.RULE_ROBUSTNESS_WINDOW in markdown


# --------------------------------------------------------------------------------------------
# 3. Convergence speed.


def test_convergence_holds_at_one_batch_size_and_not_at_the_other(tmp_path):
    epochs = 10
    first = {  # (norm, batch size) -> per seed (first epoch NLL < 1e-2, first error < 2 %)
        ("layer", 128): [(3, 2), (4, 2)],
        ("batch", 128): [(6, 5), (7, None)],
        ("none", 128): [(5, 3), (5, 4)],
        ("layer", 4): [(8, 9)],
        ("batch", 4): [(3, 4)],
    }
    for (norm, batch_size), seeds in first.items():
        for seed, (nll_epoch, error_epoch) in enumerate(seeds):
            nll = crossing(nll_epoch, epochs, 0.05, 0.005)
            error = crossing(error_epoch, epochs, 0.03, 0.015)
            write_run(tmp_path, norm, batch_size, seed, error, nll)
    keyed = by_claim(claims.fig6_claims(find_runs(tmp_path)))

    fast = keyed["convergence/128"]
    rows = {r["method"]: r for r in fast.rows}
    assert list(rows) == ["none", "batch", "layer"]
    assert rows["layer"]["train_nll"] == {
        "per_seed": [3, 4],
        "reached": 2,
        "mean": 3.5,
        "lower_bound": 3.5,
    }
    assert rows["batch"]["test_error"] == {
        "per_seed": [5, None],
        "reached": 1,
        "mean": None,  # one seed never got there within 10 epochs
        "lower_bound": 8.0,  # (5 + 11) / 2
    }
    assert rows["none"]["train_nll"]["mean"] == 5.0 and rows["none"]["test_error"]["mean"] == 3.5
    assert rows["layer"]["epoch"] == 10
    assert rows["batch"]["normalize_logits"] == [True, True]  # None follows the paper: BN yes
    assert rows["layer"]["normalize_logits"] == [False, False]
    assert rows["layer"]["nll_threshold"] == 0.01 and rows["layer"]["error_threshold"] == 0.02
    # The paper's curves, read the same way (its epoch axis starts at 0).
    paper = pimnist.reference_curves()[(128, "layer")]
    expected = claims.first_epoch_below(paper["train_nll_epoch"], paper["train_nll"], 0.01, 10)
    assert rows["layer"]["paper_train_nll"] == expected == 6
    assert fast.verdict == "holds"
    assert fast.reason == (
        "LN gets below both thresholds earlier: train NLL < 0.01: LN 3.5, BN 6.5 (LN earlier by "
        "3.0 epochs); test error < 2.00 %: LN 2.0, BN ≥ 8.0 (1 of 2 never) (LN earlier by at "
        "least 6.0 epochs)"
    )

    slow = keyed["convergence/4"]
    assert slow.verdict == "does not hold"
    assert slow.reason == (
        "LN gets below both thresholds later: train NLL < 0.01: LN 8.0, BN 3.0 (LN later by "
        "5.0 epochs); test error < 2.00 %: LN 9.0, BN 4.0 (LN later by 5.0 epochs)"
    )
    markdown = claims.claims_markdown([fast, slow])
    assert "| BN | 128 | 10 | 6, 7 | 6.5 | 5, never | ≥ 8.0 (1 of 2 never) | 4, 0 |" in markdown

    # Other thresholds, other epochs: an NLL threshold nothing reaches.
    keyed = by_claim(claims.fig6_claims(find_runs(tmp_path), nll_threshold=1e-3))
    rows = {r["method"]: r for r in keyed["convergence/128"].rows}
    assert rows["layer"]["train_nll"]["per_seed"] == [None, None]
    assert keyed["convergence/128"].verdict == "inconclusive"
    assert "train NLL < 0.001: LN never within 10, BN never within 10 (cannot tell)" in (
        keyed["convergence/128"].reason
    )


def test_convergence_within_an_epoch_is_inconclusive(tmp_path):
    epochs = 12
    write_run(
        tmp_path, "layer", 128, 0, crossing(None, epochs, 0.03, 0.015), crossing(5, epochs, 1, 0)
    )
    write_run(
        tmp_path,
        "batch",
        128,
        0,
        crossing(None, epochs, 0.03, 0.015),
        crossing(6, epochs, 1, 0),
        normalize_logits=False,
    )
    keyed = by_claim(claims.fig6_claims(find_runs(tmp_path)))
    claim = keyed["convergence/128"]
    assert claim.verdict == "inconclusive"
    assert claim.reason == (
        "not earlier on both thresholds: train NLL < 0.01: LN 5.0, BN 6.0 (within 1 epoch); "
        "test error < 2.00 %: LN never within 12, BN never within 12 (cannot tell); note: these "
        "BN runs do not normalize the logits (model.normalize_logits=False), unlike the paper's BN"
    )
    assert keyed["convergence/4"].verdict == "inconclusive"
    assert keyed["convergence/4"].reason == "no runs at batch size 4"
    # Earlier on one threshold, later on the other: inconclusive.
    mixed = tmp_path / "mixed"
    for norm, nll_epoch, error_epoch in (("layer", 3, 8), ("batch", 6, 2)):
        error, nll = crossing(error_epoch, 10, 0.03, 0.015), crossing(nll_epoch, 10, 1, 0)
        write_run(mixed, norm, 128, 0, error, nll)
    claim = by_claim(claims.fig6_claims(find_runs(mixed)))["convergence/128"]
    assert claim.verdict == "inconclusive"
    assert claim.reason == (
        "LN is earlier on one threshold and later on the other: train NLL < 0.01: LN 3.0, BN 6.0 "
        "(LN earlier by 3.0 epochs); test error < 2.00 %: LN 8.0, BN 2.0 (LN later by 6.0 epochs)"
    )
    # LN without BN: nothing to compare with.
    only_ln = [r for r in find_runs(tmp_path) if r.config["model.norm"] == "layer"]
    claim = by_claim(claims.fig6_claims(only_ln))["convergence/128"]
    assert (claim.verdict, claim.reason) == ("inconclusive", "no runs of BN at batch size 128")
    assert [r["method"] for r in claim.rows] == ["layer"]


# --------------------------------------------------------------------------------------------
# 4. Instability at batch size 4.

BN_WINDOWS = ([0.02] * 17 + [0.03] * 3, [0.02] * 19 + [0.04])  # seeds 0 and 1 at batch size 4
LN_WINDOW = [0.014, 0.015] * 10


def write_instability_grid(workdir: Path, bn_windows=BN_WINDOWS, weight_window=None) -> None:
    """Batch size 4: 24 epochs (window 5-24); batch size 128: 30 epochs (window 11-30)."""
    early4 = [0.5] * 4  # outside the window: would dominate the spread if it were counted
    for seed, window in enumerate(bn_windows):
        write_run(workdir, "batch", 4, seed, early4 + list(window))
    write_run(workdir, "layer", 4, 0, early4 + LN_WINDOW)
    write_run(workdir, "none", 4, 0, early4 + [0.016] * 20)
    if weight_window is not None:
        write_run(workdir, "weight", 4, 0, early4 + weight_window)
    write_run(workdir, "layer", 128, 0, [0.5] * 10 + [0.013] * 20)
    write_run(workdir, "layer", 128, 1, [0.5] * 10 + [0.013] * 22)  # the common epoch is 30
    write_run(workdir, "batch", 128, 0, [0.5] * 10 + [0.012, 0.014] * 10)


def test_instability_holds_with_exact_spreads(tmp_path):
    write_instability_grid(tmp_path)
    claim = by_claim(claims.fig6_claims(find_runs(tmp_path)))["instability"]
    rows = {(r["method"], r["batch_size"]): r for r in claim.rows}
    assert list(rows) == [("none", 4), ("batch", 4), ("layer", 4), ("batch", 128), ("layer", 128)]

    bn = rows[("batch", 4)]
    assert bn["window"] == [5, 24] and bn["epoch"] == 24
    assert bn["std_per_seed"] == pytest.approx(
        [math.sqrt(2.55e-4 / 19), math.sqrt(3.8e-4 / 19)], rel=1e-9
    )
    assert bn["std_per_seed"] == pytest.approx([statistics.stdev(w) for w in BN_WINDOWS])
    assert bn["spikes_per_seed"] == [3, 1]
    assert bn["spikes"] == 2.0
    assert bn["std"] == pytest.approx(statistics.mean(statistics.stdev(w) for w in BN_WINDOWS))
    ln = rows[("layer", 4)]
    assert ln["std"] == pytest.approx(math.sqrt(5e-6 / 19), rel=1e-9) and ln["spikes"] == 0.0
    assert rows[("none", 4)]["std"] == pytest.approx(0.0, abs=1e-15)
    assert rows[("batch", 128)]["window"] == [11, 30]
    assert rows[("batch", 128)]["std"] == pytest.approx(statistics.stdev([0.012, 0.014] * 10))
    # The paper's curve over the same epochs.
    paper = pimnist.reference_curves()[(4, "batch")]
    chosen = [
        v
        for e, v in zip(paper["test_error_epoch"], paper["test_error"], strict=True)
        if 5 <= e <= 24
    ]
    assert bn["paper_window"] == [5, 24]
    assert bn["paper_std"] == pytest.approx(statistics.stdev(chosen), rel=1e-12)
    median = statistics.median(chosen)
    assert bn["paper_spikes"] == sum(v > median + 0.005 for v in chosen)

    assert claim.verdict == "holds"
    ratio = bn["std"] / ln["std"]
    assert claim.reason == (
        "BN's test error varies the most, at least twice as much as LN's (std BN "
        f"{100 * bn['std']:.3f}, LN {100 * ln['std']:.3f} points; ratio {ratio:.1f})"
    )
    markdown = claims.claims_markdown([claim])
    assert f"| BN | 4 | 5–24 | {100 * bn['std']:.3f} | 2.0 | 5–24 |" in markdown


def test_instability_inconclusive_and_does_not_hold(tmp_path):
    # WN varies more than BN: inconclusive.
    weight = [0.01, 0.03] * 10
    write_instability_grid(tmp_path / "a", weight_window=weight)
    claim = by_claim(claims.fig6_claims(find_runs(tmp_path / "a")))["instability"]
    wn = next(r for r in claim.rows if r["method"] == "weight")
    assert wn["spikes"] == 10.0 and wn["std"] == pytest.approx(statistics.stdev(weight))
    assert wn["paper_std"] is None
    assert claim.verdict == "inconclusive"
    assert claim.reason.startswith("BN varies more than LN, but WN varies the most")

    # BN above LN but less than twice: inconclusive.
    write_instability_grid(tmp_path / "b", bn_windows=([0.014, 0.0155] * 10,))
    claim = by_claim(claims.fig6_claims(find_runs(tmp_path / "b")))["instability"]
    assert claim.verdict == "inconclusive"
    assert claim.reason.startswith("BN varies more than LN, but less than twice as much")

    # BN flat: does not hold.
    write_instability_grid(tmp_path / "c", bn_windows=([0.02] * 20,))
    claim = by_claim(claims.fig6_claims(find_runs(tmp_path / "c")))["instability"]
    assert claim.verdict == "does not hold"
    assert claim.reason.startswith("BN's test error varies no more than LN's (std BN 0.000")


def test_instability_needs_20_epochs(tmp_path):
    for norm in ("batch", "layer"):
        write_run(tmp_path, norm, 4, 0, [0.02] * 10)
        write_run(tmp_path, norm, 128, 0, [0.02] * 25)
    claim = by_claim(claims.fig6_claims(find_runs(tmp_path)))["instability"]
    assert claim.verdict == "inconclusive"
    assert (
        claim.reason == "the runs at batch size 4 have only 10 epochs; the test needs the last 20"
    )
    rows = {(r["method"], r["batch_size"]): r for r in claim.rows}
    assert rows[("batch", 4)]["std"] is None and rows[("batch", 4)]["window"] is None
    assert rows[("batch", 4)]["paper_window"] == [45, 64]  # the paper's last 20 epochs
    assert rows[("batch", 128)]["window"] == [6, 25] and rows[("batch", 128)]["std"] < 1e-15
    assert "| BN | 4 | only 10 | – | – | 45–64 |" in claims.claims_markdown([claim])


# --------------------------------------------------------------------------------------------
# Inputs the claims do not apply to.


def test_fig6_claims_rejects_other_grids(tmp_path):
    with pytest.raises(UserError, match="No runs"):
        claims.fig6_claims([])
    write_run(tmp_path / "other", "layer", 128, 0, [0.1] * 3, experiment="seqmnist")
    with pytest.raises(UserError, match="Figure 6 claims .*'seqmnist'"):
        claims.fig6_claims(find_runs(tmp_path / "other"))
    write_run(tmp_path / "bs", "layer", 32, 0, [0.1] * 3)
    with pytest.raises(UserError, match="batch size 128 or 4"):
        claims.fig6_claims(find_runs(tmp_path / "bs"))
    write_run(tmp_path / "two", "layer", 128, 0, [0.1] * 3)
    write_run(tmp_path / "two", "layer", 128, 0, [0.1] * 3, cell="lr=1e-3,model.norm=layer")
    with pytest.raises(UserError, match="Several cells have model.norm=layer and batch_size=128"):
        claims.fig6_claims(find_runs(tmp_path / "two"))
    with pytest.raises(UserError, match="No run directories"):
        claims.write_claims(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# The command line.


def test_cli_report_writes_and_exports_the_claims(tmp_path):
    workdir = tmp_path / "grid"
    write_instability_grid(workdir)
    result = run_cli(
        f"--workdir={workdir}",
        "--report",
        "--claims",
        "--error_threshold=0.016",
        f"--export={tmp_path / 'export'}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads((workdir / "claims.json").read_text())
    expected = claims.claims_json(claims.fig6_claims(find_runs(workdir), error_threshold=0.016))
    assert written == json.loads(json.dumps(expected))
    markdown = (workdir / "claims.md").read_text()
    assert markdown.startswith("# The paper's Figure 6 claims, tested on these runs\n")
    assert markdown in result.stdout
    assert "test error < 1.60 %" in markdown
    assert f"Wrote {workdir / 'claims.md'}, {workdir / 'claims.json'}" in result.stdout
    for name in ("claims.md", "claims.json", "summary.md", "figure.png"):
        assert (tmp_path / "export" / name).read_bytes() == (workdir / name).read_bytes()

    # Without --claims: no claims, and an export without them still works.
    (workdir / "claims.md").unlink()
    (workdir / "claims.json").unlink()
    result = run_cli(f"--workdir={workdir}", "--report", f"--export={tmp_path / 'export2'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        not (workdir / "claims.md").exists() and not (tmp_path / "export2" / "claims.md").exists()
    )
    assert "Figure 6 claims" not in result.stdout


def test_cli_claims_on_other_experiments_is_an_error(tmp_path):
    workdir = tmp_path / "grid"
    write_run(workdir, "layer", 128, 0, [0.1] * 3, experiment="seqmnist")
    result = run_cli(f"--workdir={workdir}", "--report", "--claims")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: ") and "Figure 6 claims" in result.stderr
    assert not (workdir / "claims.md").exists()
    # Running a grid: refused before anything is trained.
    result = run_cli("--config=configs/seqmnist.py", f"--workdir={tmp_path / 'new'}", "--claims")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: --claims tests the claims of the paper's Figure 6" in result.stderr
    assert not (tmp_path / "new").exists()
