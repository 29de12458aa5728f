"""lnexp.training.run_dir and lnexp.training.checkpoints: checkpoints with the model apart from
the optimizer state, records, config compatibility and the resume agreement (one process here;
two in test_multihost)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from lnexp.errors import UserError
from lnexp.training.checkpoints import ResumeView, resume_step
from lnexp.training.run_dir import RunDir
from lnexp.training.trainer import make_train_state


def small_state(seed: int = 0):
    model = nnx.Sequential(
        nnx.Linear(3, 4, rngs=nnx.Rngs(seed)), nnx.BatchNorm(4, rngs=nnx.Rngs(0))
    )
    _, params, rest = nnx.split(model, nnx.Param, ...)
    state = make_train_state(params, rest, optax.adam(1e-3))
    return dict(state, step=jnp.int32(7), epoch=jnp.int32(1))


def test_model_restores_without_the_optimizer_state(tmp_path):
    run = RunDir(tmp_path)
    state = small_state()
    with run.checkpoints(keep=2) as checkpoints:
        checkpoints.save(7, state)
    assert run.checkpoint_steps() == [7] and run.latest_step() == 7
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "7").iterdir() if p.is_dir()) == [
        "model",
        "training",
    ]
    variables = {"params": state["params"], "rest": state["rest"]}
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), variables)
    with run.checkpoints() as checkpoints:
        model = checkpoints.restore_model(7, target)  # No optimizer state anywhere.
        full = checkpoints.restore(7)
    assert sorted(model) == ["params", "rest"]
    for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)
    assert sorted(full) == ["epoch", "opt_state", "params", "rest", "step"]
    assert int(full["step"]) == 7 and int(full["epoch"]) == 1
    assert len(jax.tree.leaves(full)) == len(jax.tree.leaves(state))


def test_checkpoints_of_the_earlier_layout_do_not_read_back_and_are_kept(tmp_path):
    """A checkpoint of one ``default`` item (written before the model and the optimizer state
    were kept apart) reads back as any unreadable one: refused when named, set aside (never
    deleted) when the newest one is asked for."""
    manager = ocp.CheckpointManager(
        tmp_path / "checkpoints", options=ocp.CheckpointManagerOptions(create=True)
    )
    manager.save(17, args=ocp.args.StandardSave(small_state()))
    manager.close()
    run = RunDir(tmp_path)
    assert run.checkpoint_steps() == [17]
    model = nnx.Sequential(nnx.Linear(3, 4, rngs=nnx.Rngs(0)), nnx.BatchNorm(4, rngs=nnx.Rngs(0)))
    with pytest.raises(UserError, match=r"step 17 .* does not read back \(.*model"):
        run.trained_model(model, step=17)
    assert run.checkpoint_steps() == [17]
    with pytest.raises(UserError, match="No checkpoint in .* reads back"):
        run.trained_model(model)
    assert [p.name for p in run.damaged_checkpoints()] == ["17.damaged"]
    assert (tmp_path / "checkpoints" / "17.damaged" / "default").is_dir()
    with run.checkpoints() as checkpoints, pytest.raises(UserError, match="No checkpoint for"):
        checkpoints.restore(18)


def test_records_are_truncated_past_a_step(tmp_path):
    run = RunDir(tmp_path)
    lines = [json.dumps({"epoch": e, "step": 10 * e}) for e in (1, 2, 3)]
    run.metrics_path.write_text("\n".join(lines) + '\n{"epoch": 4, "st')  # cut short by a kill
    assert [r["epoch"] for r in run.records()] == [1, 2, 3]
    assert [r["epoch"] for r in run.truncate_records(20, write=False)] == [1, 2]
    assert len(run.records()) == 3  # Only the writing process rewrites the file.
    run.truncate_records(20)
    assert [r["epoch"] for r in run.records()] == [1, 2]


def test_milestones_are_kept_beside_the_last_checkpoints(tmp_path):
    """keep_every_steps keeps the checkpoints at its multiples for good, beside the last keep;
    without it only the last keep stay."""
    state = small_state()
    for every, kept in [(None, [9, 10]), (4, [4, 8, 9, 10])]:
        run = RunDir(tmp_path / str(every))
        with run.checkpoints(keep=2, keep_every_steps=every) as checkpoints:
            for step in range(1, 11):
                checkpoints.save(step, state)
        assert run.checkpoint_steps() == kept


def test_which_checkpoints_are_kept_may_change_on_resume(tmp_path):
    """checkpoint.keep and checkpoint.keep_every_steps change nothing that is trained: a run
    resumes with another keep, a run written before keep_every_steps existed resumes with it
    set, but a keep_every_steps once set is never dropped or changed."""
    run = RunDir(tmp_path)
    old = {"seed": 0, "num_epochs": 3, "checkpoint": {"keep": 3}}
    run.write_config(ml_collections.ConfigDict(old))
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    new = {"seed": 0, "num_epochs": 3, "checkpoint": {"keep": 1, "keep_every_steps": 1000}}
    run.check_compatible(ml_collections.ConfigDict(new))
    # Once set, it stays: dropped or changed, the next save would delete the milestones.
    run.write_config(ml_collections.ConfigDict(new))
    for every in (None, 500):
        dropped = {**new, "checkpoint": {"keep": 1, "keep_every_steps": every}}
        with pytest.raises(UserError, match=r"keep_every_steps was 1000: without it"):
            run.check_compatible(ml_collections.ConfigDict(dropped))
    with pytest.raises(UserError, match=r"lacks fields .*\(missing: model.norm\)"):
        run.check_compatible(ml_collections.ConfigDict({**new, "model": {"norm": "layer"}}))


def test_a_different_config_is_refused_only_once_there_is_a_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    config = ml_collections.ConfigDict({"seed": 0, "num_epochs": 3, "model": {"norm": "layer"}})
    run.write_config(config)
    other = ml_collections.ConfigDict({"seed": 0, "num_epochs": 5, "model": {"norm": "batch"}})
    run.check_compatible(other)  # No checkpoint yet: nothing to mix.
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    with pytest.raises(UserError, match=r"different config \(changed: model.norm\)"):
        run.check_compatible(other)
    more_epochs = ml_collections.ConfigDict(
        {"seed": 0, "num_epochs": 5, "model": {"norm": "layer"}}
    )
    run.check_compatible(more_epochs)
    assert run.read_config() == config.to_dict()


def test_resume_view_round_trip_and_seeds_at_different_steps(tmp_path):
    view = ResumeView((None, 34, 0))
    assert ResumeView.decode(view.encode()) == view
    runs = [RunDir(tmp_path / "a"), RunDir(tmp_path / "b")]
    with runs[0].checkpoints(keep=1) as first:
        first.save(3, small_state())
    with runs[0].checkpoints(keep=1) as first, runs[1].checkpoints(keep=1) as second:
        with pytest.raises(UserError, match=r"different steps \(seed 1: 3, seed 0: 0\)"):
            resume_step(runs, [first, second], [1, 0])
        assert resume_step(runs[:1], [first], [1]) == 3
        assert resume_step(runs[1:], [second], [0]) is None
