"""What a worker's heartbeat keeps of its pool: its size, and each change with the
queue depth seen at the time, the most recent only."""

from __future__ import annotations

from node_runner.heartbeat import PoolWatch


def test_the_first_observation_is_no_change():
    pool = PoolWatch(concurrency=4, concurrency_min=1)
    pool.observe(1, queue_depth=0, keep=5)
    assert pool.size == 1
    assert list(pool.history) == []


def test_each_change_of_size_is_kept_with_the_queue_depth_seen_then():
    pool = PoolWatch(concurrency=4, concurrency_min=1)
    for size, depth in [(1, 0), (1, 3), (2, 12), (4, 12), (4, 0), (1, 0)]:
        pool.observe(size, queue_depth=depth, keep=5)
    assert [(c["from"], c["to"], c["queue_depth"]) for c in pool.history] == [
        (1, 2, 12),
        (2, 4, 12),
        (4, 1, 0),
    ]


def test_only_the_most_recent_changes_are_kept():
    pool = PoolWatch(concurrency=2)
    for size in [1, 2, 1, 2, 1, 2]:
        pool.observe(size, queue_depth=0, keep=2)
    assert [(c["from"], c["to"]) for c in pool.history] == [(2, 1), (1, 2)]
