"""The batch schedule (lnexp.training.batches)."""

from __future__ import annotations

import numpy as np
import pytest

from lnexp.training.batches import Schedule


def test_plain_pass_is_the_seeded_permutation_in_chunks():
    s = Schedule(num_examples=103, batch_size=10, steps_per_call=4, seed=3)
    chunks = s.epoch_chunks(2)
    assert [len(c.indices) for c in chunks] == [4, 4, 2]
    assert all(c.width is None for c in chunks)
    expected = np.random.default_rng([3, 2]).permutation(103)[:100].reshape(10, 10)
    np.testing.assert_array_equal(np.concatenate([c.indices for c in chunks]), expected)


def test_passes_differ_and_repeat_exactly():
    s = Schedule(num_examples=50, batch_size=5, steps_per_call=3, seed=0)
    a, b = (np.concatenate([c.indices for c in s.epoch_chunks(e)]) for e in (1, 2))
    assert not np.array_equal(a, b)
    again = np.concatenate([c.indices for c in s.epoch_chunks(1)])
    np.testing.assert_array_equal(a, again)


@pytest.mark.parametrize("steps_per_call", [1, 3, 50])
def test_length_groups_cover_their_examples_and_each_example_once(steps_per_call):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 32, 1000)
    s = Schedule(1000, 16, steps_per_call, seed=1, lengths=lengths, width_multiple=8)
    chunks = s.epoch_chunks(1)
    seen = np.concatenate([c.indices.ravel() for c in chunks])
    assert len(seen) == 1000 // 16 * 16 and len(np.unique(seen)) == len(seen)
    for c in chunks:
        assert len(c.indices) <= steps_per_call and c.width % 8 == 0
        assert lengths[c.indices].max() <= c.width < lengths[c.indices].max() + 8
    # Batches are grouped: most examples of a batch share their rounded length.
    rounded = -(-lengths // 8)
    same = np.mean(
        [np.mean(rounded[b] == np.median(rounded[b])) for c in chunks for b in c.indices]
    )
    assert same > 0.9


def test_length_grouped_chunks_come_in_shuffled_order():
    lengths = np.repeat([8, 16, 24, 32], 100)
    s = Schedule(400, 10, 2, seed=0, lengths=lengths)
    widths = [c.width for c in s.epoch_chunks(1)]
    assert sorted(widths) != widths and sorted(widths) == sorted(widths)


def test_epochs_of_fixed_steps_stream_through_passes():
    s = Schedule(num_examples=30, batch_size=4, steps_per_call=5, seed=0, steps_per_epoch=5)
    assert s.steps_per_pass == 7
    stream = np.concatenate([c.indices for e in (1, 2, 3) for c in s.epoch_chunks(e)])
    passes = np.concatenate([s.pass_batches(p)[0] for p in (1, 2, 3)])
    np.testing.assert_array_equal(stream, passes[:15])
    assert all(sum(len(c.indices) for c in s.epoch_chunks(e)) == 5 for e in range(1, 6))


@pytest.mark.parametrize(
    "schedule",
    [
        Schedule(num_examples=103, batch_size=10, steps_per_call=4, seed=3),
        Schedule(30, 4, 5, seed=0, steps_per_epoch=5),
        Schedule(400, 10, 3, seed=0, lengths=np.repeat([8, 16, 24, 32], 100), steps_per_epoch=17),
    ],
)
@pytest.mark.parametrize("epoch", [1, 3])
def test_skipping_steps_resumes_the_same_schedule(schedule, epoch):
    """A run resumed mid-epoch does the rest of that epoch's steps, with the same batches and
    widths, and cut at the same chunk boundaries after a chunk boundary."""
    full = schedule.epoch_chunks(epoch)
    steps = [(tuple(b), c.width) for c in full for b in c.indices]
    boundaries = np.cumsum([0] + [len(c.indices) for c in full])
    for skip in range(schedule.epoch_steps + 1):
        rest = schedule.epoch_chunks(epoch, skip=skip)
        assert [(tuple(b), c.width) for c in rest for b in c.indices] == steps[skip:]
        if skip in boundaries:
            assert [len(c.indices) for c in rest] == [len(c.indices) for c in full][
                list(boundaries).index(skip) :
            ]
    with pytest.raises(ValueError, match="outside an epoch"):
        schedule.epoch_chunks(epoch, skip=schedule.epoch_steps + 1)
