"""The warm pool's bookkeeping, with fake NPUs (the real containers are in
tests/integration/test_warm_pool.py): each NPU is handed out once, the pool refills
to a target that follows the queue within its bounds, stale and dead NPUs are
replaced, and a drained pool keeps nothing."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace

import pytest

from control_unit.limits import NodeLimits
from node_runner.warm_pool import MAX_WAIT_S, PROFILE_UNUSED_S, PoolBounds, PoolProfile, WarmPool

_ids = itertools.count(1)


@dataclass
class FakeNpu:
    profile: PoolProfile
    started_at: float
    alive: bool = True
    id: str = field(default_factory=lambda: f"npu-{next(_ids)}")

    def is_waiting(self) -> bool:
        return self.alive


class Harness:
    """A pool whose launches, discards, queue depth and clock the test controls."""

    def __init__(self, minimum: int = 1, maximum: int = 3, waiting_nodes: int = 0) -> None:
        self.now = 1000.0
        self.waiting_nodes = waiting_nodes
        self.launched: list[FakeNpu] = []
        self.discarded: list[FakeNpu] = []
        self.fail_launches = False
        self.pool = WarmPool(
            PoolBounds(minimum=minimum, maximum=maximum, refill_concurrency=2),
            launch=self.launch,  # type: ignore[arg-type]
            demand=lambda: self.waiting_nodes,
            discard=self.discarded.append,  # type: ignore[arg-type]
            clock=lambda: self.now,
        )

    def launch(self, profile: PoolProfile) -> FakeNpu:
        if self.fail_launches:
            raise OSError("engine away")
        npu = FakeNpu(profile, started_at=self.now)
        self.launched.append(npu)
        return npu

    def refill(self) -> None:
        """One refill pass, waiting for the starts it asked for."""
        self.pool.refill()
        self.settle()

    def settle(self) -> None:
        """Wait for the pool's starter threads to run out of work."""
        deadline = time.monotonic() + 10
        while any(self.pool._starting.values()) or self.pool._starters._work_queue.qsize():
            assert time.monotonic() < deadline, "the starters never finished"
            time.sleep(0.001)


@pytest.fixture
def harness(settings) -> Harness:
    settings.FLOWKIT_NPU_IMAGE = "flowkit/npu:test"
    settings.FLOWKIT_NPU_RUNTIME = "runc"
    return Harness()


def limits(**changes) -> NodeLimits:
    return replace(NodeLimits.defaults(), **changes)


def test_an_npu_is_handed_out_once_and_never_comes_back(harness):
    harness.pool.keep_warm(PoolProfile.of(limits()))
    harness.refill()
    taken = [harness.pool.take(limits()) for _ in range(5)]
    handed = [npu for npu in taken if npu is not None]
    assert len(handed) == 1, "one waited; the others start on demand"
    harness.refill()
    handed += [npu for npu in (harness.pool.take(limits()) for _ in range(3)) if npu is not None]
    assert len({npu.id for npu in handed}) == len(handed) == 2
    assert harness.pool.taken == 2


def test_the_pool_refills_to_the_minimum_after_each_take(harness):
    profile = PoolProfile.of(limits())
    harness.pool.keep_warm(profile)
    harness.refill()
    assert harness.pool.waiting() == {profile: 1}
    assert harness.pool.take(limits()) is not None
    assert harness.pool.waiting() == {}
    harness.refill()
    assert harness.pool.waiting() == {profile: 1}
    assert len(harness.launched) == 2


@pytest.mark.parametrize(("waiting_nodes", "target"), [(0, 1), (2, 2), (3, 3), (50, 3)])
def test_the_target_follows_the_queue_within_the_bounds(harness, waiting_nodes, target):
    profile = PoolProfile.of(limits())
    harness.pool.keep_warm(profile)
    harness.waiting_nodes = waiting_nodes
    harness.refill()
    assert harness.pool.waiting() == {profile: target}
    harness.waiting_nodes = 0
    harness.refill()
    assert harness.pool.waiting() == {profile: target}, "a quieter queue lets them wait, not removes them"


def test_profiles_are_kept_apart_and_an_unused_one_is_forgotten(harness):
    default, big = PoolProfile.of(limits()), PoolProfile.of(limits(memory_mb=1024))
    harness.pool.keep_warm(default)
    assert harness.pool.take(limits(memory_mb=1024)) is None, "nothing of that profile yet"
    harness.refill()
    assert harness.pool.waiting() == {default: 1, big: 1}
    npu = harness.pool.take(limits(memory_mb=1024))
    assert npu is not None
    assert npu.profile == big
    harness.now += PROFILE_UNUSED_S + 1
    harness.refill()
    assert harness.pool.waiting() == {default: 1}, "the default profile is always kept warm"


def test_a_network_profile_never_serves_a_node_without_network(harness):
    harness.pool.keep_warm(PoolProfile.of(limits(network=True)))
    harness.refill()
    assert harness.pool.take(limits(network=False)) is None
    npu = harness.pool.take(limits(network=True))
    assert npu is not None
    assert npu.profile.network is True


def test_an_npu_that_went_away_while_waiting_is_discarded_not_handed_out(harness):
    harness.pool.keep_warm(PoolProfile.of(limits()))
    harness.refill()
    (dead,) = harness.launched
    dead.alive = False
    assert harness.pool.take(limits()) is None
    deadline = time.monotonic() + 10
    while not harness.discarded:  # removed off the taker's thread
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert harness.discarded == [dead]


def test_npus_waiting_too_long_are_replaced(harness):
    profile = PoolProfile.of(limits())
    harness.pool.keep_warm(profile)
    harness.refill()
    (old,) = harness.launched
    harness.now += MAX_WAIT_S + 1
    harness.refill()
    assert harness.discarded == [old]
    assert harness.pool.waiting() == {profile: 1}
    assert harness.pool.take(limits()) is not old


def test_a_failing_engine_is_retried_later_not_in_a_loop(harness):
    profile = PoolProfile.of(limits())
    harness.pool.keep_warm(profile)
    harness.fail_launches = True
    harness.refill()
    harness.fail_launches = False
    harness.refill()
    assert harness.pool.waiting() == {}, "no new start before the retry delay"
    harness.now += 5
    harness.refill()
    assert harness.pool.waiting() == {profile: 1}


def test_a_drained_pool_removes_every_waiting_npu_and_starts_no_more(harness):
    profile = PoolProfile.of(limits())
    harness.pool.keep_warm(profile)
    harness.waiting_nodes = 3
    harness.refill()
    assert harness.pool.drain() == 3
    assert sorted(npu.id for npu in harness.discarded) == sorted(npu.id for npu in harness.launched)
    harness.pool.refill()
    assert harness.pool.waiting() == {}
    assert harness.pool.take(limits()) is None


def test_the_bounds_come_from_the_settings_and_a_maximum_of_zero_turns_the_pool_off(settings):
    settings.FLOWKIT_NPU_POOL_MIN, settings.FLOWKIT_NPU_POOL_MAX = 2, 4
    assert PoolBounds.from_settings().target(0) == 2
    settings.FLOWKIT_NPU_POOL_MIN, settings.FLOWKIT_NPU_POOL_MAX = 3, 0
    assert PoolBounds.from_settings() == PoolBounds(minimum=0, maximum=0, refill_concurrency=2)


def test_used_npus_are_removed_in_the_background_and_a_drain_waits_for_them(harness, monkeypatch):
    removed: list[str] = []
    monkeypatch.setattr("node_runner.warm_pool.remove_npu", lambda container: removed.append(container))
    harness.pool.retire("used-1")
    harness.pool.retire("used-2")
    harness.pool.drain()
    assert removed == ["used-1", "used-2"]
    harness.pool.retire("after-the-drain")
    assert removed[-1] == "after-the-drain", "removed at once once the pool is drained"
