"""The registry of dedicated NPUs, with fake NPUs: one per node and profile, adopted from
the pool when it can, replaced when broken or worn, let go when idle, deleted or in excess."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import OperationalError

from control_unit.limits import NodeLimits
from node_runner.dedicated_npus import DedicatedBounds, DedicatedNpus, NodeKey
from node_runner.warm_pool import PoolProfile


@dataclass
class FakeConnection:
    id: str
    now: Any
    running: int = 0
    reserved: int = 0
    executions_served: int = 0
    failure: str | None = None
    closed: bool = False
    last_used: float = 0.0
    container: Any = None

    def __post_init__(self) -> None:
        self.last_used = self.now()

    @property
    def alive(self) -> bool:
        return self.failure is None

    def reserve(self, concurrency: int, stuck_after_s: float) -> bool:
        # A real NPU waits for a slot; the fakes of these tests never have to.
        if not self.alive or self.running > self.reserved or self.reserved >= concurrency:
            return False
        self.reserved += 1
        return True

    def unreserve(self) -> None:
        self.reserved -= 1


@dataclass
class FakeBook:
    """The registry's NpuBook: what it recorded, and which rows were deleted meanwhile."""

    opened_npus: list[tuple[str, bool]] = field(default_factory=list)
    closed_npus: list[str] = field(default_factory=list)
    deleted: set[str] = field(default_factory=set)
    # The database is away: nothing can be written.
    failing: bool = False

    def opened(self, key: NodeKey, connection: Any, adopted: bool) -> None:
        if self.failing:
            raise OperationalError("the database is away")
        self.opened_npus.append((connection.id, adopted))

    def used(self, connections: list[Any]) -> None:
        pass

    def closed(self, container_id: str) -> None:
        self.closed_npus.append(container_id)

    def kept(self, container_ids: list[str]) -> set[str]:
        booked = {cid for cid, _ in self.opened_npus}
        return {cid for cid in container_ids if cid in booked and cid not in self.deleted}


class Harness:
    def __init__(self, max_npus: int = 3, idle_s: float = 60, max_executions: int = 5, pooled: int = 0):
        self.time = 1000.0
        self.started = 0
        self.pooled = pooled
        self.removed: list[str] = []
        self.book = FakeBook()
        self.registry = DedicatedNpus(
            DedicatedBounds(max_npus=max_npus, idle_s=idle_s, max_executions=max_executions),
            launch=self.launch,
            book=self.book,
            take_pooled=self.take_pooled,
            remove=lambda connection: self.removed.append(connection.id),
            clock=lambda: self.time,
            connect=self.connect,
        )

    def connect(self, ready: Any) -> Any:
        return FakeConnection(ready, now=lambda: self.time)

    def launch(self, key: NodeKey) -> Any:
        self.started += 1
        return f"started-{self.started}"

    def take_pooled(self, limits: NodeLimits) -> Any:
        if self.pooled == 0:
            return None
        self.pooled -= 1
        return f"pooled-{self.pooled}"

    def lease(self, node: str = "n", pipeline: str = "p", limits: NodeLimits | None = None) -> Any:
        return self.registry.for_node(pipeline, node).lease(limits or NodeLimits.defaults())

    def close(self) -> None:
        self.registry.drain()


@pytest.fixture
def harness(settings) -> Any:
    made = Harness()
    yield made
    made.close()


def test_a_node_keeps_its_npu_from_one_execution_to_the_next(harness):
    first = harness.lease()
    first.release(healthy=True)
    second = harness.lease()

    assert first.connection is second.connection
    assert harness.started == 1


def test_two_nodes_or_two_pipelines_never_share_an_npu(harness):
    ids = {
        harness.lease("a", "p").connection.id,
        harness.lease("b", "p").connection.id,
        harness.lease("a", "q").connection.id,
    }
    assert len(ids) == 3


def test_a_node_s_npu_runs_at_most_its_concurrency_at_once(harness):
    pair = NodeLimits.from_overrides({"concurrency": 2})
    first, second = harness.lease(limits=pair), harness.lease(limits=pair)
    assert first.connection is second.connection
    assert first.connection.reserved == 2

    first.release(healthy=True)
    assert second.connection.reserved == 1
    assert harness.lease(limits=pair).connection is second.connection


def test_another_profile_of_the_same_node_gets_another_npu(harness):
    small = harness.lease(limits=NodeLimits.from_overrides({}))
    big = harness.lease(limits=NodeLimits.from_overrides({"memory_mb": 512}))
    assert small.connection is not big.connection


def test_the_first_execution_adopts_a_started_npu_from_the_pool(settings):
    harness = Harness(pooled=1)
    try:
        lease = harness.lease()
        assert lease.connection.id == "pooled-0"
        assert harness.started == 0
        assert harness.book.opened_npus == [("pooled-0", True)]
    finally:
        harness.close()


def test_a_broken_npu_is_replaced_and_removed(harness):
    lease = harness.lease()
    lease.release(healthy=False)
    again = harness.lease()

    assert again.connection is not lease.connection
    assert harness.removed == [lease.connection.id]
    assert harness.book.closed_npus == [lease.connection.id]


def test_a_broken_npu_still_running_another_execution_goes_once_that_one_is_done(harness):
    pair = NodeLimits.from_overrides({"concurrency": 2})
    broken, other = harness.lease(limits=pair), harness.lease(limits=pair)
    other.connection.running = 1
    broken.release(healthy=False)

    assert harness.lease(limits=pair).connection is not other.connection, "a broken NPU took a new execution"
    harness.registry.tidy()
    assert harness.removed == []
    other.connection.running = 0
    other.release(healthy=True)
    harness.registry.tidy()
    assert harness.removed == [other.connection.id]


def test_an_npu_is_replaced_after_its_maximum_of_executions(harness):
    lease = harness.lease()
    lease.connection.executions_served = 5
    lease.release(healthy=True)

    assert harness.lease().connection is not lease.connection
    assert harness.removed == [lease.connection.id]


def test_an_idle_npu_is_let_go_and_a_busy_one_is_kept(harness):
    idle, busy = harness.lease("idle"), harness.lease("busy")
    idle.release(healthy=True)
    harness.time += 61
    harness.registry.tidy()

    assert harness.removed == [idle.connection.id]
    assert list(harness.registry.held().values()) == [busy.connection]


def test_an_npu_the_book_missed_is_kept_and_booked_once_the_database_is_back(harness):
    harness.book.failing = True
    lease = harness.lease()
    harness.registry.tidy()
    assert harness.removed == [], "an NPU missing from the book was taken for a deleted one"

    harness.book.failing = False
    harness.registry.tidy()
    assert harness.book.opened_npus == [(lease.connection.id, False)]
    harness.registry.tidy()
    assert harness.removed == []


def test_a_new_npu_is_not_taken_for_a_deleted_one_while_its_opening_is_being_booked(harness):
    # The registry's thread tidies at any moment: here, after the new NPU is held and
    # before the book has written it. Once taken for an NPU whose pipeline was deleted,
    # it was closed under the execution about to start in it ("the NPU was closed").
    opened = harness.book.opened

    def tidy_then_open(key, connection, adopted):
        harness.book.opened = opened
        harness.registry.tidy()
        opened(key, connection, adopted)

    harness.book.opened = tidy_then_open
    lease = harness.lease()

    assert harness.removed == []
    assert lease.connection.alive
    harness.registry.tidy()
    assert harness.removed == []


def test_an_npu_whose_pipeline_was_deleted_is_let_go(harness):
    lease = harness.lease()
    harness.book.deleted.add(lease.connection.id)
    harness.registry.tidy()

    assert harness.removed == [lease.connection.id]


def test_beyond_the_maximum_the_least_recently_used_idle_npu_goes_first(harness):
    leases = [harness.lease(node) for node in ("a", "b", "c")]
    for offset, lease in zip((3, 1, 2), leases, strict=True):
        lease.release(healthy=True)
        lease.connection.last_used = harness.time + offset
    harness.lease("d")

    assert harness.removed == [leases[1].connection.id]
    assert len(harness.registry.held()) == 3


def test_an_npu_with_an_execution_running_is_retired_only_once_it_is_done(harness):
    lease = harness.lease()
    lease.connection.running = 1
    lease.connection.executions_served = 5
    lease.release(healthy=True)
    harness.registry.tidy()
    assert harness.removed == []

    lease.connection.running = 0
    harness.registry.tidy()
    assert harness.removed == [lease.connection.id]


def test_keys_differ_by_profile():
    default = PoolProfile.of(NodeLimits.defaults())
    assert NodeKey("p", "n", default, 1) != NodeKey("p", "n", default, 2)
