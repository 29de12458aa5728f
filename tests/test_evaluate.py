"""lnexp.studies.skipthought (evaluate, report) and lnexp.data.senteval: the SentEval protocol on
synthetic and real data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, data_root, load_config, write_tiny_books
from sklearn.model_selection import StratifiedKFold

from lnexp import training
from lnexp.data import senteval
from lnexp.errors import UserError
from lnexp.studies.skipthought import evaluate

WORDS = ["good", "bad", "fine", "poor", "nice", "awful", "movie", "plot", "actor", "scene"]


def bag_of_words(sentences: list[str]) -> np.ndarray:
    """A fixed encoder: counts of ten words, plus a constant."""
    return np.array(
        [[s.lower().split().count(w) for w in WORDS] + [1.0] for s in sentences], np.float64
    )


def write_binary(directory: Path, names=("rt-polarity.pos", "rt-polarity.neg"), n=60, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, words in zip(
        names, (["good", "fine", "nice"], ["bad", "poor", "awful"]), strict=True
    ):
        lines = [f"the {rng.choice(words)} movie with a {rng.choice(WORDS[6:])}" for _ in range(n)]
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


def write_sick(directory: Path, seed=0):
    """Pairs whose relatedness grows with the number of shared words (plus noise)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for name, n in (
        ("SICK_train.txt", 300),
        ("SICK_trial.txt", 60),
        ("SICK_test_annotated.txt", 100),
    ):
        rows = ["pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"]
        for i in range(n):
            a = list(rng.choice(WORDS, 4, replace=False))
            shared = int(rng.integers(0, 5))
            others = [w for w in WORDS if w not in a]
            b = a[:shared] + list(rng.choice(others, 4 - shared, replace=False))
            score = np.clip(1 + shared + rng.normal(0, 0.5), 1, 5)
            rows.append(f"{i}\t{' '.join(a)}\t{' '.join(b)}\t{score:.2f}\tNEUTRAL")
        (directory / name).write_bytes(("\r\n".join(rows) + "\r\n").encode())
    return directory


def write_trec(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    kinds = {"HUM:ind": "who", "LOC:city": "where", "NUM:date": "when", "DESC:def": "what"}
    for name, n in (("train_5500.label", 30), ("TREC_10.label", 8)):
        lines = [
            f"{label} {word} is the caf\xe9 {i} ?"
            for i in range(n)
            for label, word in kinds.items()
        ]
        (directory / name).write_bytes("\r\n".join(lines).encode("latin-1") + b"\r\n")
    return directory


# --------------------------------------------------------------------------------------------
# Parsing.


def test_read_lines_keeps_blank_lines_and_handles_latin1_and_crlf(tmp_path):
    path = tmp_path / "x.pos"
    path.write_bytes(b"caf\xe9 one\r\n\r\n   \r\nlast \x85 line\r\n")
    assert senteval.read_lines(path) == ["caf\xe9 one", "", "   ", "last \x85 line"]


def test_read_lines_utf8_with_bom(tmp_path):
    path = tmp_path / "x.neg"
    path.write_bytes("\ufeffna\u00efve\nb".encode())
    assert senteval.read_lines(path) == ["na\u00efve", "b"]


def test_binary_task_labels_positive_first(tmp_path):
    d = write_binary(tmp_path / "MR", n=5)
    (d / "rt-polarity.neg").write_text("x\n\ny\n")
    data = senteval.load_binary(d)
    assert len(data.sentences) == 8 and data.sentences[6] == ""
    np.testing.assert_array_equal(data.labels, [1] * 5 + [0] * 3)


def test_any_folder_with_pos_and_neg_files_is_a_binary_task(tmp_path):
    d = write_binary(tmp_path / "MYTASK", names=("mytask.pos", "mytask.neg"), n=4)
    assert len(senteval.load_binary(d).sentences) == 8
    (tmp_path / "EMPTY").mkdir()
    with pytest.raises(UserError, match="not a binary SentEval task"):
        senteval.load_binary(tmp_path / "EMPTY")


def test_trec_coarse_labels_latin1_crlf(tmp_path):
    data = senteval.load_trec(write_trec(tmp_path / "TREC"))
    assert len(data.sentences) == 120 and len(data.test_sentences) == 32
    assert data.sentences[0] == "who is the caf\xe9 0 ?"
    assert {data.classes[i] for i in data.labels} == {"HUM", "LOC", "NUM", "DESC"}


def test_trec_malformed_line_is_a_clear_error(tmp_path):
    d = write_trec(tmp_path / "TREC")
    (d / "TREC_10.label").write_text("WHAT is this\n")
    with pytest.raises(UserError, match="TREC_10.label:1"):
        senteval.load_trec(d)


def test_sick_reads_columns_by_header(tmp_path):
    d = tmp_path / "SICK"
    write_sick(d)
    swapped = "relatedness_score\tsentence_B\tpair_ID\tsentence_A\r\n4.5\tb b\t1\ta a\r\n\r\n"
    (d / "SICK_trial.txt").write_text(swapped)
    a, b, scores = senteval.load_sick(d).splits["trial"]
    assert (a, b, list(scores)) == (["a a"], ["b b"], [4.5])


# --------------------------------------------------------------------------------------------
# The protocol.


def test_separable_task_is_nearly_perfect(tmp_path):
    d = write_binary(tmp_path / "MR")
    result = evaluate.run(bag_of_words, tmp_path, ["MR"])["MR"]
    assert result["accuracy"] > 98 and len(result["fold_accuracies"]) == 10
    assert set(result["penalties"]) <= set(evaluate.PENALTIES)
    del d


def test_random_labels_are_near_chance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 20))
    y = rng.integers(0, 2, 400)
    result = evaluate.nested_cv_accuracy(X, y, folds=5, inner_folds=5)
    assert 35 < result["accuracy"] < 65


def test_nested_cv_never_chooses_the_penalty_on_the_test_fold(monkeypatch):
    rng = np.random.default_rng(1)
    X = np.c_[np.arange(100), rng.normal(size=(100, 3))]  # Column 0 identifies the row.
    y = (X[:, 1] > 0).astype(int)
    seen = []
    real = evaluate.fit_with_cv

    def spy(X_fit, y_fit, **kwargs):
        seen.append(set(X_fit[:, 0].astype(int)))
        return real(X_fit, y_fit, **kwargs)

    monkeypatch.setattr(evaluate, "fit_with_cv", spy)
    evaluate.nested_cv_accuracy(X, y, folds=5, inner_folds=3, seed=7)
    outer = StratifiedKFold(5, shuffle=True, random_state=7).split(X, y)
    for rows, (_, test) in zip(seen, outer, strict=True):
        assert rows.isdisjoint(test) and len(rows) == 100 - len(test)


def test_raw_vectors_match_scikit_learns_cross_val_score():
    """With one C, nested CV is plain CV: the same folds and C give cross_val_score's accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 12)) * np.geomspace(0.1, 30, 12)  # Raw, badly scaled features.
    y = (X[:, 0] / 0.1 + X[:, 5] + rng.normal(0, 2, 300) > 0).astype(int)
    for C in (1.0, 16.0):
        ours = evaluate.nested_cv_accuracy(X, y, folds=5, inner_folds=3, seed=4, penalties=(C,))
        solver, max_iter = evaluate.solver_for(X.shape[1])
        theirs = cross_val_score(
            LogisticRegression(C=C, solver=solver, max_iter=max_iter),
            X,
            y,
            cv=StratifiedKFold(5, shuffle=True, random_state=4),
        )
        np.testing.assert_allclose(ours["fold_accuracies"], 100 * theirs, atol=1e-9)
        assert ours["unconverged_fits"] == 0 and ours["grid_edge"] is None


def test_features_are_raw_by_default_and_standardized_on_request(monkeypatch):
    """The default pipeline is the classifier alone; standardize=True puts a scaler first."""
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(80, 4)), np.r_[np.zeros(40), np.ones(40)].astype(int)
    raw = evaluate.fit_with_cv(X, y, folds=3, seed=0)
    scaled = evaluate.fit_with_cv(X, y, folds=3, seed=0, standardize=True)
    assert [name for name, _ in raw.steps] == ["logisticregressioncv"]
    assert [name for name, _ in scaled.steps] == ["standardscaler", "logisticregressioncv"]


def test_grid_edge_is_reported_when_most_folds_choose_it():
    assert evaluate.grid_edge([1.0, 1.0, 4.0]) == (
        "C = 1, the grid's smallest value, was chosen in 2 of 3 folds: the best penalty may "
        "lie outside the grid."
    )
    assert "largest" in evaluate.grid_edge([256.0] * 6 + [2.0] * 4)
    assert evaluate.grid_edge([1.0, 256.0, 4.0, 8.0]) is None
    # Random labels: the strongest penalty wins in most folds, and the result says so.
    rng = np.random.default_rng(0)
    result = evaluate.nested_cv_accuracy(
        rng.normal(size=(200, 30)), rng.integers(0, 2, 200), folds=5, inner_folds=5
    )
    if sum(c == 1.0 for c in result["penalties"]) > 2:
        assert result["grid_edge"].startswith("C = 1,")


@pytest.mark.parametrize("score", [1.0, 1.3, 2.0, 3.75, 4.99, 5.0])
def test_sick_soft_labels_round_trip(score):
    p = evaluate.sick_soft_labels(np.array([score]))[0]
    assert p.min() >= 0 and p.sum() == pytest.approx(1.0)
    assert p @ np.arange(1, 6) == pytest.approx(score)
    assert np.count_nonzero(p) <= 2


def test_sick_relatedness_learns_a_linear_relation(tmp_path):
    write_sick(tmp_path / "SICK")
    result = evaluate.run(bag_of_words, tmp_path, ["SICK"])["SICK"]
    assert result["pearson"] > 0.8 and result["spearman"] > 0.8
    test_scores = senteval.load_sick(tmp_path / "SICK").splits["test"][2]
    assert result["mse"] < 0.7 * np.var(test_scores)  # Well below predicting the mean.


def test_trec_through_run(tmp_path):
    write_trec(tmp_path / "TREC")

    def encode(sentences):
        first = [s.split()[0] for s in sentences]
        return np.array([[w == k for k in ("who", "where", "when", "what")] for w in first], float)

    result = evaluate.run(encode, tmp_path, ["TREC"], folds=3)["TREC"]
    assert result["accuracy"] == 100.0 and result["test_examples"] == 32


def test_bad_encoder_output_and_missing_task_are_clear(tmp_path):
    write_binary(tmp_path / "MR")
    with pytest.raises(ValueError, match="expected \\(num_sentences, dim\\)"):
        evaluate.run(lambda s: np.zeros(len(s)), tmp_path, ["MR"])
    with pytest.raises(UserError, match="No folder"):
        evaluate.run(bag_of_words, tmp_path, ["CR"])


def test_real_senteval_files_parse():
    root = data_root() / "senteval"
    if not root.is_dir():
        pytest.skip(f"SentEval data not found at {root}")
    mr, subj = senteval.load_binary(root / "MR"), senteval.load_binary(root / "SUBJ")
    assert np.bincount(mr.labels).tolist() == [5331, 5331]
    assert np.bincount(subj.labels).tolist() == [5000, 5000]
    trec = senteval.load_trec(root / "TREC")
    assert (len(trec.sentences), len(trec.test_sentences)) == (5452, 500)
    sick = senteval.load_sick(root / "SICK").splits
    assert [len(sick[k][2]) for k in ("train", "trial", "test")] == [4500, 500, 4927]
    assert all(1 <= s <= 5 for k in sick for s in sick[k][2])


def test_public_paths_are_the_senteval_modules():
    import lnexp.studies.skipthought.encode
    import lnexp.studies.skipthought.evaluate
    from lnexp.studies.skipthought import encode

    assert (
        lnexp.studies.skipthought.evaluate.run is evaluate.run
        and lnexp.studies.skipthought.evaluate.PENALTIES is evaluate.PENALTIES
    )
    assert (
        lnexp.encode is encode.encode and lnexp.studies.skipthought.encode.encode is encode.encode
    )
    assert lnexp.studies.skipthought.encode.SentenceEncoder is encode.SentenceEncoder


def test_command_line_on_a_trained_run(tmp_path):
    books = write_tiny_books(tmp_path / "books")
    config = load_config("skipthought", "tiny", data__dir=str(books), num_epochs=1)
    config.data.cache_dir = str(tmp_path / "cache")
    config.steps_per_epoch = 20
    training.train_and_evaluate(config, tmp_path / "run")
    data = tmp_path / "senteval"
    write_binary(data / "SUBJ", names=("subj.objective", "subj.subjective"), n=20)
    write_sick(data / "SICK")
    cmd = [sys.executable, "-m", "lnexp.studies.skipthought.evaluate",
           f"--workdir={tmp_path / 'run'}",
           f"--data_dir={data}", "--tasks=SUBJ,SICK", "--folds=2"]  # fmt: skip
    out = subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu"}
    )
    assert out.returncode == 0, out.stderr
    (result_file,) = (tmp_path / "run" / "eval").glob("*.json")
    record = json.loads(result_file.read_text())
    assert record["step"] == 20 and set(record["results"]) == {"SUBJ", "SICK"}
    assert "| SUBJ |" in out.stdout and "| SICK |" in out.stdout
    (tmp_path / "empty").mkdir()  # A directory without the tasks' folders.
    bad = subprocess.run(cmd[:4] + [f"--data_dir={tmp_path / 'empty'}"], cwd=REPO,
                         capture_output=True, text=True, env={"JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert bad.returncode == 2 and "error: No folder" in bad.stderr


# --------------------------------------------------------------------------------------------
# The comparison report.


def test_paper_table3_is_shipped():
    from lnexp.studies.skipthought.task import reference_table

    rows = reference_table()
    assert len(rows) == 4 and rows[2]["MR"] == 79.5 and rows[2]["SICK r"] == 0.854


def test_report_evaluates_each_checkpoint_once_and_writes_the_table(tmp_path, monkeypatch):
    from lnexp.studies.skipthought import report as senteval_report

    calls = []

    def fake_evaluate_run(workdir, data_dir, tasks, *, step, folds, standardize):
        calls.append((Path(workdir).name, step))
        edge = (
            "C = 1, the grid's smallest value, was chosen in 9 of 10 folds" if step == 200 else None
        )
        results = {
            "MR": {"accuracy": 60.0 + step / 100, "grid_edge": edge},
            "SICK": {"pearson": 0.5, "spearman": 0.4, "mse": 0.9},
        }
        out = Path(workdir) / "eval" / f"{step}.json"
        out.parent.mkdir(exist_ok=True)
        record = {"step": step, **evaluate.protocol(folds, standardize), "results": results}
        out.write_text(json.dumps(record))
        return step, results

    monkeypatch.setattr(evaluate, "evaluate_run", fake_evaluate_run)
    runs = {}
    for name in ("plain", "ln"):
        for step in (100, 200):
            (tmp_path / name / "checkpoints" / str(step)).mkdir(parents=True)
        runs[name] = tmp_path / name
    # A result cached by the earlier protocol (standardized features, no "features" key) is
    # evaluated again under the raw-vector protocol.
    legacy = {"step": 100, "folds": 10, "results": {"MR": {"accuracy": 1.0}}}
    (tmp_path / "ln" / "eval").mkdir()
    (tmp_path / "ln" / "eval" / "100.json").write_text(json.dumps(legacy))
    for _ in range(2):  # The second report reads every result from the cache.
        curves = senteval_report.report(runs, tmp_path, ["MR", "SICK"], tmp_path / "out")
    assert sorted(calls) == [("ln", 100), ("ln", 200), ("plain", 100), ("plain", 200)]
    assert curves["ln"][200]["MR"] == 62.0 and curves["ln"][100]["MR"] == 61.0
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| ln (ours) | 200 | 0.500 | 0.400 | 0.900 | 62.0 |" in table
    assert "(paper)" in table and (tmp_path / "out" / "figure.png").stat().st_size > 0
    assert "Protocol: raw sentence vectors" in table
    # The second run against the first along training, with the verdicts.
    assert "ln against plain at the steps both were evaluated at" in table
    assert "| MR | 200 | 62.0 | 62.0 | +0.0 |" in table and "- **ln ahead of plain" in table
    assert "ln (ours), MR: C = 1, the grid's smallest value" in table
    # Asking for standardized features is another protocol: evaluated again.
    senteval_report.report(runs, tmp_path, ["MR"], tmp_path / "out", standardize=True)
    assert (
        len(calls) == 8 and "Protocol: standardized" in (tmp_path / "out" / "table.md").read_text()
    )
    # A saved evaluation cut short (or not a record) is evaluated again, never a traceback.
    saved = tmp_path / "ln" / "eval" / "200.json"
    saved.write_text(saved.read_text()[:20])
    (tmp_path / "plain" / "eval" / "200.json").write_text("[]")
    senteval_report.report(runs, tmp_path, ["MR"], tmp_path / "out", standardize=True)
    assert sorted(calls[8:]) == [("ln", 200), ("plain", 200)]


def test_report_reads_an_exported_run_from_its_evaluations(tmp_path, monkeypatch):
    """A run exported without checkpoints (results/) reports from its eval/<step>.json; a step
    it has no evaluation of is one error naming what it has."""
    from lnexp.studies.skipthought import report as senteval_report

    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **k: pytest.fail("evaluated"))
    run = tmp_path / "plain"
    (run / "eval").mkdir(parents=True)
    for step in (100, 300):
        results = {"MR": {"accuracy": 50.0 + step / 100}}
        record = {"step": step, **evaluate.protocol(10, False), "results": results}
        (run / "eval" / f"{step}.json").write_text(json.dumps(record))
    curves = senteval_report.report({"plain": run}, tmp_path, ["MR"], tmp_path / "out")
    assert curves == {"plain": {100: {"MR": 51.0}, 300: {"MR": 53.0}}}
    with pytest.raises(UserError, match=r"no checkpoint of step 200 .*at steps 100, 300"):
        senteval_report.report({"plain": run}, tmp_path, ["MR"], tmp_path / "out", steps=[100, 200])


def _results(mr: float, trec: float, r: float) -> dict:
    return {
        "MR": {"accuracy": mr, "examples": 10_662},
        "TREC": {"accuracy": trec, "test_examples": 500},
        "SICK": {"pearson": r, "spearman": r, "mse": 0.5, "test_pairs": 4_927},
    }


def test_along_training_reads_the_papers_figure_3():
    """Gaps with their standard errors per step, the half-the-steps reading, the gap's trend."""
    from lnexp.studies.skipthought.report import along_training, standard_error

    # Binomial: MR 60 % on 10,662 sentences: 0.47 points; r 0.6 on 4,927 pairs: 0.0091.
    assert standard_error("MR", _results(60.0, 70.0, 0.6)) == pytest.approx(0.4744, abs=1e-4)
    assert standard_error("SICK r", _results(60.0, 70.0, 0.6)) == pytest.approx(0.00912, 1e-3)
    assert standard_error("SICK MSE", _results(60.0, 70.0, 0.6)) is None
    evaluated = {
        "plain": {
            3000: _results(55.0, 70.0, 0.50),
            10000: _results(58.0, 74.0, 0.60),
            30000: _results(62.0, 78.0, 0.70),
        },
        "LN": {
            3000: _results(58.0, 72.0, 0.60),
            10000: _results(63.0, 79.0, 0.70),
            15000: _results(64.0, 79.0, 0.72),
            30000: _results(63.0, 80.0, 0.72),
        },
    }
    result = along_training(evaluated, "plain", "LN")
    assert result["steps"] == [3000, 10000, 30000]  # 15000 only for LN: not a common step.
    by_score = {t["score"]: t for t in result["tasks"]}
    assert [g["gap"] for g in by_score["MR"]["gaps"]] == [3.0, 5.0, 1.0]
    assert by_score["MR"]["reaches_at"] == 10000 and by_score["TREC"]["reaches_at"] == 10000
    assert by_score["SICK r"]["reaches_at"] == 10000
    ahead, half, trend = result["verdicts"]
    # TREC's gaps (2, 5, 2 points on 500 questions, se 2.6-2.9) and MR's last (1.0 ± 0.7) are
    # within the noise.
    assert "ahead of plain on every task at equal steps: inconclusive**" in ahead
    assert "(5 of 9 gaps above 2 se" in ahead
    assert "at most half the steps: holds on every task**" in half
    assert "MR: holds (plain's 62.0 at step 30,000; LN first at or above it at step 10,000)" in half
    assert "SICK r shrinks (+0.100 at step 3,000 to +0.020 at 30,000" in trend
    assert "TREC about the same" in trend and "MR shrinks" in trend
    # LN behind beyond the noise somewhere: does not hold; never reaching: does not hold.
    evaluated["LN"][30000] = _results(58.0, 80.0, 0.65)
    result = along_training(evaluated, "plain", "LN")
    assert "equal steps: does not hold**" in result["verdicts"][0]
    evaluated["LN"] = {s: _results(50.0, 60.0, 0.4) for s in (3000, 10000, 30000)}
    half = along_training(evaluated, "plain", "LN")["verdicts"][1]
    assert "not on every task**" in half
    assert "MR: does not hold (plain's 62.0 at step 30,000; LN first at or above it never)" in half
    # Evaluated only at the same last step: LN above there, but not evaluated at half of it.
    only = {name: {3000: _results(mr, 70.0, 0.5)} for name, mr in (("plain", 55.0), ("LN", 59.0))}
    half = along_training(only, "plain", "LN")["verdicts"][1]
    assert "half the steps: inconclusive**" in half
    assert "MR: inconclusive (plain's 55.0 at step 3,000; LN first at or above it at " in half
    assert "at step 3,000; not evaluated from step 1,500 until then)" in half


def test_along_training_without_common_steps_or_with_partial_tasks():
    """No step in common: one verdict line, no error (the report is still written); a score
    missing at a common step is left out and named."""
    from lnexp.studies.skipthought.report import along_training

    apart = {"plain": {1000: _results(55.0, 70.0, 0.5)}, "LN": {2000: _results(58.0, 72.0, 0.6)}}
    assert along_training(apart, "plain", "LN")["verdicts"] == [
        "No score evaluated for both plain and LN at the same steps."
    ]
    partial = {"plain": {1000: _results(55.0, 70.0, 0.5)}, "LN": {1000: _results(60.0, 80.0, 0.6)}}
    del partial["LN"][1000]["TREC"]["test_examples"]  # TREC's scored, its se unknown.
    del partial["plain"][1000]["SICK"]
    result = along_training(partial, "plain", "LN")
    assert result["left_out"] == ["SICK r"]
    ahead = result["verdicts"][0]
    assert "every task (of those evaluated at every common step; left out: SICK r)" in ahead
    assert "1 of 2 gaps above 2 se, 1 without a standard error" in ahead
