"""The skip-thought model, its training through the shared loop, and lnexp.encode."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, load_config, story_sentence
from flax import nnx

import lnexp
from lnexp import training
from lnexp.errors import UserError
from lnexp.models.skipthought import SkipThought, token_mean_loss, token_nll
from lnexp.studies.skipthought import task as skipthought
from lnexp.studies.skipthought.encode import SentenceEncoder


def tiny_config(books, cache, **overrides):
    """The ':tiny' config on ``books`` with its corpus cache in ``cache``."""
    return load_config(
        "skipthought", "tiny", data__dir=str(books), data__cache_dir=str(cache), **overrides
    )


def random_ids(rng, batch, width, vocab):
    lengths = rng.integers(1, width + 1, batch)
    ids = rng.integers(3, vocab, (batch, width))
    ids[np.arange(width)[None] >= lengths[:, None]] = 0
    ids[np.arange(batch), lengths - 1] = 2
    return jnp.asarray(ids)


@pytest.mark.parametrize("norm", ["layer", "none"])
@pytest.mark.parametrize("condition_every_step", [False, True])
def test_padding_changes_neither_loss_nor_encoding(norm, condition_every_step):
    model = SkipThought(40, 8, 12, norm=norm, condition_every_step=condition_every_step,
                        rngs=nnx.Rngs(0))  # fmt: skip
    rng = np.random.default_rng(0)
    prev, cur, nxt = (random_ids(rng, 5, 7, 40) for _ in range(3))
    wide = [jnp.pad(a, ((0, 0), (0, 6))) for a in (prev, cur, nxt)]
    out, out_wide = model(prev, cur, nxt), model(*wide)
    for key in out:
        np.testing.assert_allclose(out[key], out_wide[key], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.encode(cur), model.encode(wide[1]), rtol=1e-6, atol=1e-6)
    # Garbage behind the <eos> would change it if padding were read: it is not read.
    assert float(jnp.sum(out["prev_tokens"])) == float(jnp.sum(prev != 0))


def test_tied_embeddings_give_vocab_logits():
    model = SkipThought(30, 6, 10, tie_embeddings=True, rngs=nnx.Rngs(0))
    ids = random_ids(np.random.default_rng(1), 3, 5, 30)
    logits = model.logits(model.decoder_next, model.encode(ids), ids)
    assert logits.shape == (3, 5, 30)


def test_token_nll_is_optax_op_for_op():
    """The model needs only JAX; its per-token NLL is optax's, the same computation."""
    optax = pytest.importorskip("optax")
    logits, targets = jnp.zeros((2, 3, 6)), jnp.ones((2, 3), jnp.int32)
    ours = jax.make_jaxpr(token_nll)(logits, targets)
    theirs = jax.make_jaxpr(optax.softmax_cross_entropy_with_integer_labels)(logits, targets)
    assert str(ours) == str(theirs)


def test_token_mean_loss_weights_tokens_not_sentences():
    values = {
        "prev_nll": jnp.array([2.0, 10.0]),
        "prev_tokens": jnp.array([1.0, 4.0]),
        "next_nll": jnp.array([3.0, 0.0]),
        "next_tokens": jnp.array([3.0, 0.0]),
    }
    loss, metrics = token_mean_loss(values)
    assert float(metrics["prev_nll"]) == pytest.approx(12 / 5)
    assert float(loss) == pytest.approx(12 / 5 + 1.0)


def test_tiny_model_overfits_tiny_corpus(tiny_books_dir, tmp_path):
    config = tiny_config(tiny_books_dir, tmp_path / "cache", num_epochs=3, steps_per_epoch=100)
    config.optimizer.learning_rate = 3e-3
    training.train_and_evaluate(config, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    first, last = records[0], records[-1]
    assert last["train_loss"] < 0.5 * first["train_loss"]
    # The story is deterministic: held-out sentences become nearly certain.
    assert last["valid_next_ppl"] < 2.0 and last["valid_prev_ppl"] < 2.0
    assert {"valid_prev_nll", "valid_next_nll", "valid_nll", "sentences_per_sec"} <= last.keys()
    assert {skipthought.REPORT_METRIC, *skipthought.REPORT_METRICS} <= last.keys()  # compare.py's
    assert (tmp_path / "run" / "vocab.txt").read_text().startswith("<pad>\n<unk>\n<eos>\n")


@pytest.fixture(scope="module")
def trained_run(tiny_books_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("st")
    config = tiny_config(tiny_books_dir, base / "cache", num_epochs=2, steps_per_epoch=30)
    training.train_and_evaluate(config, base / "run")
    return base


def test_resume_matches_uninterrupted_run(trained_run, tiny_books_dir, tmp_path):
    config = tiny_config(tiny_books_dir, trained_run / "cache", num_epochs=1, steps_per_epoch=30)
    training.train_and_evaluate(config, tmp_path / "run")
    config.num_epochs = 2
    training.train_and_evaluate(config, tmp_path / "run")
    resumed = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    straight = (trained_run / "run" / "metrics.jsonl").read_text().splitlines()
    drop = ("wall_s", "examples_per_sec", "sentences_per_sec", "compile_s")
    for a, b in zip(resumed, straight, strict=True):
        a, b = json.loads(a), json.loads(b)
        assert {k: v for k, v in a.items() if k not in drop} == {
            k: v for k, v in b.items() if k not in drop
        }


def test_encode_is_deterministic_and_batch_size_independent(trained_run):
    run = trained_run / "run"
    sentences = [story_sentence(i) for i in range(300)] + ["Zebras quux unknown words!", ""]
    vectors = lnexp.encode(run, sentences)
    assert vectors.shape == (302, 32) and vectors.dtype == np.float32
    assert np.all(np.isfinite(vectors))
    fresh = SentenceEncoder(run)
    pieces = np.concatenate([fresh(sentences[:1]), fresh(sentences[1:200]), fresh(sentences[200:])])
    np.testing.assert_array_equal(vectors, pieces)
    np.testing.assert_array_equal(vectors, fresh(sentences))
    assert fresh([]).shape == (0, 32)
    # Different sentences, different vectors.
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3


def test_encode_from_a_checkpoint_directory(trained_run):
    run = trained_run / "run"
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    first = SentenceEncoder(run / "checkpoints" / str(steps[0]))
    assert first.step == steps[0]
    latest = SentenceEncoder(run)
    assert latest.step == steps[-1]
    s = [story_sentence(3)]
    assert not np.array_equal(first(s), latest(s))


def test_encode_accepts_a_relative_path(trained_run, monkeypatch):
    monkeypatch.chdir(trained_run)
    assert SentenceEncoder("run")([story_sentence(0)]).shape == (1, 32)


def test_encode_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="not a skip-thought run"):
        SentenceEncoder(tmp_path)


def test_encode_command_line(trained_run, tmp_path):
    lines = tmp_path / "in.txt"
    lines.write_text("Anna sees ben at 1 o'clock.\n\nEve calls finn.\n", encoding="utf-8")
    out = tmp_path / "out.npy"
    cmd = [sys.executable, "-m", "lnexp.studies.skipthought.encode",
           f"--workdir={trained_run / 'run'}",
           f"--input={lines}", f"--output={out}"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, env={"JAX_PLATFORMS": "cpu"})
    vectors = np.load(out)
    assert vectors.shape == (3, 32)
    np.testing.assert_allclose(
        vectors, lnexp.encode(trained_run / "run", lines.read_text().splitlines()), atol=1e-6
    )


def test_missing_data_dir_is_a_clear_error(tmp_path):
    config = load_config("skipthought", "tiny")
    with pytest.raises(UserError, match="config.data.dir is not set"):
        training.train_and_evaluate(config, tmp_path / "run")


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown skipthought variant"):
        load_config("skipthought", "huge")


def test_real_books_tiny_run(books_dir, corpus_cache, tmp_path):
    """The ':tiny' variant on the real corpus: a few steps through the whole stack."""
    config = tiny_config(books_dir, corpus_cache, num_epochs=1, steps_per_epoch=20)
    record = training.train_and_evaluate(config, tmp_path / "run")
    assert np.isfinite(record["valid_nll"]) and record["valid_next_ppl"] < 500
    stats = json.loads((tmp_path / "run" / "corpus_stats.json").read_text())
    assert stats["books"] >= 100


def test_encode_refuses_a_damaged_vocabulary_and_moves_no_checkpoint(trained_run, tmp_path):
    """vocab.txt cut short: the model built from it cannot hold the checkpoint, one paragraph,
    the checkpoints untouched (never set aside as damaged for it)."""
    import contextlib
    import io
    import shutil

    from lnexp import cli
    from lnexp.studies.skipthought import encode

    run = shutil.copytree(trained_run / "run", tmp_path / "run")
    words = (run / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (run / "vocab.txt").write_text("\n".join(words[: len(words) // 2]) + "\n", encoding="utf-8")
    (tmp_path / "in.txt").write_text("a sentence .\n")
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    argv = ["encode", f"--workdir={run}", f"--input={tmp_path / 'in.txt'}"]
    argv.append(f"--output={tmp_path / 'out.npy'}")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = cli.call(encode.main, argv, encode.define_flags)
    assert status == 2 and "holds a model of other shapes" in err.getvalue(), err.getvalue()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == steps
    assert not (tmp_path / "out.npy").exists()
