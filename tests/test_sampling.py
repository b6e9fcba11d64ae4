"""Batch plans: temperature sampling over tasks, mixed-task and length-grouped micro-batches,
determinism given the seed and the global batch, rank slices, resumable positions."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hammer_core.train.sampling import (BatchStream, Position, SamplingSpec, epoch_plan, rank_slice, task_probabilities,
                                  task_quotas)


def _rows(sizes: dict[str, int], seed: int = 0) -> tuple[list[str], list[int]]:
    tasks = [t for t, n in sizes.items() for _ in range(n)]
    lengths = [10 + (i * 7919 + seed) % 500 for i in range(len(tasks))]  # varied, deterministic
    return tasks, lengths


def test_temperature_interpolates_between_natural_mix_and_uniform():
    sizes = {"big": 900, "small": 100}
    assert task_probabilities(sizes, 1.0) == pytest.approx({"big": 0.9, "small": 0.1})
    hot = task_probabilities(sizes, 1000.0)
    assert hot["big"] == pytest.approx(0.5, abs=0.01)
    mid = task_probabilities(sizes, 2.0)  # sqrt: 30 vs 10
    assert mid == pytest.approx({"big": 0.75, "small": 0.25})
    assert task_probabilities({"a": 5, "empty": 0}, 1.0) == {"a": 1.0}
    with pytest.raises(ValueError, match="temperature"):
        task_probabilities(sizes, 0.0)
    with pytest.raises(ValueError, match="no task"):
        task_probabilities({"a": 0}, 1.0)


@settings(max_examples=200, deadline=None)
@given(sizes=st.dictionaries(st.sampled_from("abcdefgh"), st.integers(1, 5000), min_size=1),
       temperature=st.floats(0.1, 50.0), total=st.integers(1, 20000))
def test_quotas_sum_exactly_and_no_task_starves(sizes, temperature, total):
    q = task_quotas(sizes, temperature, total)
    assert sum(q.values()) == total
    assert set(q) == set(sizes)
    if total >= len(sizes):
        assert min(q.values()) >= 1
    probs = task_probabilities(sizes, temperature)
    for t in q:  # largest remainder: within one sample of exact (plus the starvation floor)
        assert abs(q[t] - probs[t] * total) <= max(1.0, len(sizes))


def test_plan_samples_tasks_by_quota_and_mixes_them():
    tasks, lengths = _rows({"travel": 300, "finance": 60})
    spec = SamplingSpec(global_batch=8, seed=3, temperature=3.0)
    plan = epoch_plan(tasks, lengths, spec, epoch=0)
    assert all(len(b) == 8 for b in plan) and len(plan) == 45  # ceil(360 / 8)
    counts = Counter(tasks[i] for b in plan for i in b)
    assert counts == task_quotas({"travel": 300, "finance": 60}, 3.0, 360)
    assert counts["finance"] > 60  # the small task is up-sampled at T > 1
    mixed = sum(len({tasks[i] for i in b}) > 1 for b in plan)
    assert mixed > len(plan) // 2  # micro-batches mix tasks


def test_natural_mix_is_a_permutation_when_the_batch_divides_the_rows():
    tasks, lengths = _rows({"a": 40, "b": 24})
    plan = epoch_plan(tasks, lengths, SamplingSpec(global_batch=8, seed=1, temperature=1.0), epoch=0)
    assert sorted(i for b in plan for i in b) == list(range(64))


def test_length_grouping_cuts_padding_and_still_shuffles_batches():
    tasks, lengths = _rows({"a": 400, "b": 400})

    def padding(plan):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in plan)

    grouped = epoch_plan(tasks, lengths, SamplingSpec(global_batch=8, seed=0, window=8), epoch=0)
    plain = epoch_plan(tasks, lengths, SamplingSpec(global_batch=8, seed=0, group_by_length=False), epoch=0)
    assert padding(grouped) < padding(plain) / 4
    maxima = [max(lengths[i] for i in b) for b in grouped]
    assert maxima != sorted(maxima) and maxima != sorted(maxima, reverse=True)
    assert sorted(i for b in grouped for i in b) == sorted(i for b in plain for i in b)  # same samples


def test_plan_is_a_function_of_seed_epoch_and_global_batch():
    tasks, lengths = _rows({"a": 50, "b": 30, "c": 7})
    spec = SamplingSpec(global_batch=6, seed=11, temperature=2.0)
    assert epoch_plan(tasks, lengths, spec, 0) == epoch_plan(tasks, lengths, spec, 0)
    assert epoch_plan(tasks, lengths, spec, 0) != epoch_plan(tasks, lengths, spec, 1)
    other = SamplingSpec(global_batch=6, seed=12, temperature=2.0)
    assert epoch_plan(tasks, lengths, spec, 0) != epoch_plan(tasks, lengths, other, 0)


def test_rank_slices_partition_the_global_batch_so_world_size_does_not_change_the_data():
    batch = list(range(100, 110))
    for world in (1, 2, 3, 4):
        slices = [rank_slice(batch, r, world) for r in range(world)]
        assert list(itertools.chain(*slices)) == batch
        assert max(map(len, slices)) - min(map(len, slices)) <= 1
    with pytest.raises(ValueError, match="rank"):
        rank_slice(batch, 2, 2)
    # 2 processes x batch 4 read exactly what 1 process x batch 8 reads
    tasks, lengths = _rows({"a": 30, "b": 20})
    one = BatchStream(tasks, lengths, SamplingSpec(global_batch=8, seed=5))
    two = BatchStream(tasks, lengths, SamplingSpec(global_batch=2 * 4, seed=5))
    for _ in range(20):
        g1, g2 = one.next(), two.next()
        assert g1 == rank_slice(g2, 0, 2) + rank_slice(g2, 1, 2)


def test_stream_resumes_exactly_from_a_saved_position_across_epochs():
    tasks, lengths = _rows({"a": 17, "b": 9})
    spec = SamplingSpec(global_batch=4, seed=2, temperature=1.5)
    full = BatchStream(tasks, lengths, spec)
    reference = [full.next() for _ in range(30)]  # 7 batches per epoch: crosses several epochs
    first = BatchStream(tasks, lengths, spec)
    for _ in range(12):
        first.next()
    saved = Position(**first.position.to_dict())
    resumed = BatchStream(tasks, lengths, spec, position=saved)
    assert [resumed.next() for _ in range(18)] == reference[12:]
    assert saved.epoch == 1  # the position really was inside a later epoch
