"""The Transformer language model: its equations, causality, training, sampling, the corpus."""

import itertools
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO, load_config
from flax import nnx

from lnexp import training
from lnexp.data import chars
from lnexp.errors import UserError
from lnexp.models.transformer import Block, Transformer, sinusoids
from lnexp.studies.transformer import gradients
from lnexp.studies.transformer import task as experiment
from lnexp.studies.transformer.sample import LanguageModel


def small_model(**kwargs) -> Transformer:
    settings = dict(vocab_size=30, context=12, width=16, depth=2, num_heads=4, rngs=nnx.Rngs(0))
    return Transformer(**(settings | kwargs))


# --------------------------------------------------------------------------------------------
# The equations.


def np_layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return g * (x - mu) / np.sqrt(var + eps) + b


def np_gelu(x):  # jax.nn.gelu's default (tanh) form.
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def np_attention(x, p, heads):
    b, t, d = x.shape
    qkv = x @ p["qkv"]["kernel"] + p["qkv"]["bias"]
    q, k, v = np.split(qkv.reshape(b, t, 3 * heads, d // heads), 3, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d // heads)
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = np.einsum("bhqk,bkhd->bqhd", weights, v).reshape(b, t, d)
    return y @ p["out"]["kernel"] + p["out"]["bias"]


def np_mlp(x, p):
    h = np_gelu(x @ p["fc"]["kernel"] + p["fc"]["bias"])
    return h @ p["proj"]["kernel"] + p["proj"]["bias"]


def randomized_params(module: nnx.Module, seed: int = 1) -> dict:
    """Gives every parameter (gains and biases too) random values; returns them as NumPy."""
    state = nnx.state(module, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    leaves = [
        0.3 * jax.random.normal(k, leaf.shape) + (leaf == 1)
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    nnx.update(module, jax.tree.unflatten(treedef, leaves))
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(module, nnx.Param)))


@pytest.mark.parametrize("placement", ["post", "pre"])
def test_block_matches_numpy_reference(placement):
    block = Block(16, 4, norm="layer", placement=placement, rngs=nnx.Rngs(0))
    p = randomized_params(block)
    x = np.random.default_rng(0).normal(size=(2, 7, 16)).astype(np.float32)
    ln1 = lambda h: np_layer_norm(h, p["attn_norm"]["scale"], p["attn_norm"]["bias"])  # noqa: E731
    ln2 = lambda h: np_layer_norm(h, p["mlp_norm"]["scale"], p["mlp_norm"]["bias"])  # noqa: E731
    if placement == "post":  # x = LN(x + f(x))
        h = ln1(x + np_attention(x, p["attn"], 4))
        want = ln2(h + np_mlp(h, p["mlp"]))
    else:  # x = x + f(LN(x))
        h = x + np_attention(ln1(x), p["attn"], 4)
        want = h + np_mlp(ln2(h), p["mlp"])
    np.testing.assert_allclose(np.asarray(block(jnp.asarray(x))), want, rtol=2e-4, atol=2e-4)


def test_pre_ln_has_a_final_norm_and_post_ln_does_not():
    assert type(small_model(placement="pre").final_norm).__name__ == "LayerNorm"
    assert type(small_model(placement="post").final_norm).__name__ == "Identity"
    assert type(small_model(placement="pre", norm="rms").final_norm).__name__ == "RMSNorm"


def test_no_bias_anywhere_with_use_bias_false():
    model = small_model(use_bias=False, qk_norm="layer")
    paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    assert paths and not [p for p in paths if p.endswith("bias")]
    assert any(p.endswith("q_norm/scale") for p in paths)


def test_qk_norm_normalizes_each_heads_queries_and_keys():
    model = small_model(qk_norm="rms")
    attn = model.blocks[0].attn
    captured = {}
    original = jax.nn.dot_product_attention

    def spy(q, k, v, **kwargs):
        captured["q"], captured["k"] = q, k
        return original(q, k, v, **kwargs)

    x = jax.random.normal(jax.random.key(0), (2, 5, 16)) * 7.0
    jax.nn.dot_product_attention, saved = spy, jax.nn.dot_product_attention
    try:
        attn(x)
    finally:
        jax.nn.dot_product_attention = saved
    for name in ("q", "k"):  # Gains start at 1: unit root-mean-square per head.
        rms = np.sqrt(np.mean(np.square(np.asarray(captured[name])), axis=-1))
        np.testing.assert_allclose(rms, 1.0, rtol=1e-3)


def test_sinusoids_are_vaswanis():
    pe = sinusoids(50, 8)
    t, i = 13, 2
    assert pe[t, 2 * i] == pytest.approx(math.sin(t / 10_000 ** (2 * i / 8)), abs=1e-6)
    assert pe[t, 2 * i + 1] == pytest.approx(math.cos(t / 10_000 ** (2 * i / 8)), abs=1e-6)


def test_tied_embeddings_share_the_token_matrix():
    model = small_model(tie_embeddings=True)
    assert model.head is None
    ids = jnp.array([[1, 2, 3]])
    h = model.final_norm(model.blocks[1](model.blocks[0](model.embed(ids) + model.positions[:3])))
    np.testing.assert_allclose(model(ids), h @ model.embed.embedding[...].T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "norm,placement,qk_norm", [("layer", "post", "none"), ("rms", "pre", "layer")]
)
def test_causality(norm, placement, qk_norm):
    """Changing token t never changes the logits at positions before t."""
    model = small_model(norm=norm, placement=placement, qk_norm=qk_norm)
    ids = jax.random.randint(jax.random.key(0), (1, 12), 1, 30)
    base = np.asarray(model(ids))
    for t in (0, 5, 11):
        changed = np.asarray(model(ids.at[0, t].set((ids[0, t] % 29) + 1)))
        np.testing.assert_array_equal(changed[:, :t], base[:, :t])
        assert not np.allclose(changed[:, t:], base[:, t:])


def test_dropout_only_with_a_key_in_training():
    model = small_model(dropout=0.5)
    ids = jnp.ones((2, 12), jnp.int32)
    plain = model(ids)
    np.testing.assert_array_equal(model(ids), plain)
    assert not np.allclose(model(ids, rng=jax.random.key(0)), plain)
    model.eval()
    np.testing.assert_array_equal(model(ids, rng=jax.random.key(0)), plain)


def test_bad_settings_are_clear_errors():
    with pytest.raises(ValueError, match="placement"):
        small_model(placement="middle")
    with pytest.raises(ValueError, match="divide"):
        small_model(num_heads=3)
    with pytest.raises(ValueError, match="'layer', 'rms', 'none'"):
        small_model(norm="batch")
    with pytest.raises(ValueError, match="context"):
        small_model()(jnp.ones((1, 13), jnp.int32))


# --------------------------------------------------------------------------------------------
# The character corpus.


def test_chars_round_trip_and_unknowns():
    vocab = chars.vocabulary("hello world")
    ids = chars.encode("hold é", vocab)
    assert ids[-1] == chars.UNKNOWN and (ids[:-1] > 0).all()
    assert chars.decode(ids, vocab) == "hold " + chars.UNKNOWN_CHAR
    assert chars.encode("", vocab).shape == (0,)


def test_char_corpus_splits_whole_books_like_skipthoughts(tiny_books_dir):
    corpus = chars.load_char_corpus(tiny_books_dir, valid_books=1)
    assert corpus.stats["books"] == 4 and corpus.stats["valid_books"] == 1
    text = chars.decode(corpus.train_ids, corpus.chars)
    assert "*** START" not in text and "\r" not in text and "\ufeff" not in text
    assert "Anna sees ben at 0 o'clock." in text or "Anna" in text
    total = corpus.stats["train_chars"] + corpus.stats["valid_chars"]
    assert total == len(corpus.train_ids) + len(corpus.valid_ids)


def test_window_starts_and_batches():
    starts = experiment.window_starts(100, 10, 7)
    assert starts[0] == 0 and starts[-1] + 11 <= 100 and np.all(np.diff(starts) == 7)
    with pytest.raises(UserError, match="context"):
        experiment.window_starts(10, 10, 1)
    text = jnp.arange(50, dtype=jnp.uint8)
    batch = experiment.make_batch({"text": text}, {"start": jnp.array([0, 7])}, None, context=4)
    np.testing.assert_array_equal(batch["inputs"], [[0, 1, 2, 3], [7, 8, 9, 10]])
    np.testing.assert_array_equal(batch["targets"], [[1, 2, 3, 4], [8, 9, 10, 11]])


# --------------------------------------------------------------------------------------------
# Training through the loop.


def tiny_config(books, **overrides):
    return load_config(
        "transformer", "tiny", data__dir=str(books), data__valid_books=1, **overrides
    )


@pytest.mark.parametrize(
    "norm,placement,qk_norm",
    list(itertools.product(["layer", "rms", "none"], ["post", "pre"], ["none", "layer"])),
)
def test_every_variant_trains_with_falling_loss(norm, placement, qk_norm, tiny_books_dir, tmp_path):
    config = tiny_config(
        tiny_books_dir,
        model__norm=norm,
        model__placement=placement,
        model__qk_norm=qk_norm,
    )
    training.train_and_evaluate(config, tmp_path / "run")
    first, second = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").open()]
    assert second["valid_bpc"] == pytest.approx(second["valid_nll"] / math.log(2))
    assert second["tokens_per_sec"] == pytest.approx(second["examples_per_sec"] * 16)
    chance = math.log(json.loads((tmp_path / "run/corpus_stats.json").read_text())["vocab_size"])
    # Uniform guessing is `chance`; 20 and 40 steps of a tiny model on repetitive books.
    assert second["valid_nll"] < first["valid_nll"] < 0.95 * chance
    assert second["train_loss"] < first["train_loss"]
    assert {experiment.REPORT_METRIC, *experiment.REPORT_METRICS} <= second.keys()


@pytest.fixture(scope="module")
def trained_run(tiny_books_dir, tmp_path_factory):
    run = tmp_path_factory.mktemp("tf") / "run"
    training.train_and_evaluate(tiny_config(tiny_books_dir), run)
    return run


def test_sampling_is_deterministic_given_the_seed(trained_run):
    lm = LanguageModel(trained_run)
    a = lm.sample("Anna sees", 40, temperature=1.0, seed=3)
    assert a.startswith("Anna sees") and len(a) == len("Anna sees") + 40
    assert lm.sample("Anna sees", 40, temperature=1.0, seed=3) == a
    assert lm.sample("Anna sees", 40, temperature=1.0, seed=4) != a
    greedy = lm.sample("Anna sees", 40, temperature=0.0, seed=0)
    assert greedy == lm.sample("Anna sees", 40, temperature=0.0, seed=9)
    long_prompt = "Anna sees ben at 0 o'clock. " * 2  # Longer than the 16-character context.
    assert len(lm.sample(long_prompt, 5, seed=0)) == len(long_prompt) + 5
    assert chars.UNKNOWN_CHAR not in lm.sample("", 60, seed=0)


def test_sample_command_line(trained_run):
    args = ["--workdir", str(trained_run), "--prompt", "Ben", "--length", "20", "--seed", "1"]
    run = lambda: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "lnexp.studies.transformer.sample", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    first, second = run(), run()
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stdout.startswith("Ben")
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "lnexp.studies.transformer.sample",
            "--workdir",
            str(trained_run.parent),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert bad.returncode == 2 and "not a Transformer run directory" in bad.stderr


def test_gradient_probe_on_a_tiny_model(tiny_books_dir, tmp_path):
    config = tiny_config(tiny_books_dir)
    rows = gradients.measure(config, depths=(2, 3), seeds=2, batch_size=8)
    assert len(rows) == 2 * 2 * 2
    assert {len(r["mlp.proj"]) for r in rows} == {2, 3}
    assert all(np.isfinite(r["attn.qkv"]).all() and min(r["attn.qkv"]) > 0 for r in rows)
    gradients.write(rows, tmp_path)
    assert (tmp_path / "gradients.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| post | 3 |" in (tmp_path / "gradients.md").read_text()
    again = gradients.measure(config, depths=(2, 3), seeds=2, batch_size=8)
    assert again == rows  # Deterministic.


# --------------------------------------------------------------------------------------------
# The study's report.


def fake_run(workdir, cell, *, placement, rate, warmup, norm="layer", bpc, failed=None):
    run = workdir / cell / "seed=0"
    run.mkdir(parents=True)
    config = dict(
        seed=0,
        num_epochs=4,
        steps_per_epoch=100,
        model=dict(placement=placement, norm=norm),
        optimizer=dict(learning_rate=rate, warmup_steps=warmup),
    )
    (run / "config.json").write_text(json.dumps(config))
    with (run / "metrics.jsonl").open("w") as f:
        for i, value in enumerate(bpc, 1):
            record = dict(epoch=i, step=100 * i, valid_bpc=value, tokens_per_sec=1000.0 * i)
            f.write(json.dumps(record) + "\n")
    if failed:
        (run / "failed.txt").write_text(failed)


def test_study_report_names_divergence_and_verdicts(tmp_path):
    from lnexp.studies.transformer import report as transformer_study

    warm, norms = tmp_path / "warmup", tmp_path / "norms"
    diverged = "Training diverged: the loss became nan at epoch 3, step 250. The run stopped."
    fake_run(warm, "a", placement="post", rate=0.01, warmup=0, bpc=[3, 2.9], failed=diverged)
    fake_run(warm, "b", placement="post", rate=0.01, warmup=200, bpc=[3, 2.5, 2.2, 2.0])
    fake_run(warm, "c", placement="pre", rate=0.01, warmup=0, bpc=[3, 2.5, 2.2, 2.01])
    fake_run(warm, "d", placement="pre", rate=0.01, warmup=200, bpc=[3, 2.5, 2.2, 2.0])
    fake_run(norms, "r", placement="pre", rate=0.01, warmup=200, bpc=[3, 2, 2, 2.01], norm="rms")
    fake_run(norms, "n", placement="pre", rate=0.01, warmup=200, bpc=[3, 2, 2, 2.3], norm="none")
    fake_run(norms, "l", placement="pre", rate=0.01, warmup=200, bpc=[3, 2, 2, 2.0], norm="layer")
    text = transformer_study.write(tmp_path / "out", warmup=warm, norms=norms, export=True)
    again = transformer_study.write(tmp_path / "again", warmup=tmp_path / "out/warmup_runs")
    assert again in text  # The exported runs (failed.txt included) give the same report.
    assert "| post | 0.01 | 0 | diverged at step 250 |" in text
    assert "post-LN at 0.01: **needs warmup**: diverged without it, 2.000 bpc with it." in text
    assert "pre-LN at 0.01: no warmup needed: 2.010 bpc without, 2.000 with (+0.010" in text
    assert "rms matches layer norm: 2.010 vs 2.000 bpc (+0.010" in text
    assert "none worse than layer norm: 2.300 vs 2.000 bpc (+0.300" in text
    assert "time per token +0.0 %" in text  # Equal fake throughputs.
    for name in ("warmup.png", "norms.png"):
        assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "out/warmup.json").read_text())[0]["status"] == "diverged"


def sample_command(workdir) -> tuple[int, str]:
    """``python -m lnexp.studies.transformer.sample`` in this process."""
    import contextlib
    import io

    from lnexp import cli
    from lnexp.studies.transformer import sample

    err = io.StringIO()
    argv = ["sample", f"--workdir={workdir}", "--length=5"]
    with contextlib.redirect_stderr(err):
        return cli.call(sample.main, argv, sample.define_flags), err.getvalue()


@pytest.mark.parametrize("damage", ['"abc', '{"a": 1}', '"ab"'])
def test_sample_refuses_a_damaged_chars_json_and_moves_no_checkpoint(trained_run, tmp_path, damage):
    """Cut short or not a string: one paragraph naming the file; one of the wrong length (the
    model built from it cannot hold the checkpoint): one paragraph, the checkpoints untouched
    (never set aside as damaged for it)."""
    import shutil

    run = shutil.copytree(trained_run, tmp_path / "run")
    (run / "chars.json").write_text(damage)
    steps = sorted(p.name for p in (run / "checkpoints").iterdir())
    status, err = sample_command(run)
    assert status == 2 and "Traceback" not in err, err
    assert ("chars.json is damaged" in err) != ("holds a model of other shapes" in err), err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == steps
