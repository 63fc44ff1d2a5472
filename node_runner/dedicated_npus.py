"""Dedicated NPUs: a long-lived NPU per pipeline node, each execution a fresh process.

A dedicated NPU is bound to one node of one pipeline and one NPU profile (image,
runtime, memory, CPUs, pids, tmp size, network, concurrency); it is never given to
another node or pipeline. Its fork server starts each execution as a fresh process
(npu_image/flowkit/forkserver.py), so an execution costs milliseconds, not a
container. A new version of the pipeline keeps the node's NPU while the profile is
the same: the code travels with each job.

A worker keeps one registry, in its NPU host (node_runner.npu_host), whichever of its
pool processes runs the node: the first execution of a node adopts a started NPU of
its profile from the warm pool (or starts one), later ones find it here. An NPU serves
at most ``concurrency`` executions at once; the next one waits for a slot. It is
replaced after it crashed, broke the protocol, had an execution killed for memory,
or served FLOWKIT_NPU_DEDICATED_MAX_EXECUTIONS executions; let go after
FLOWKIT_NPU_DEDICATED_IDLE_S without one, when its pipeline is deleted, or when the
worker holds more than FLOWKIT_NPU_DEDICATED_MAX (the least recently used first).
The table node_runner.models.DedicatedNpu mirrors what each worker holds.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import docker
from django.conf import settings
from django.db import DatabaseError, close_old_connections

from control_unit.limits import NodeLimits
from node_runner.container_spec import DEDICATED_LABEL, npu_container_options
from node_runner.npu_connection import NpuConnection
from node_runner.npu_execution import ensure_npu_network
from node_runner.ready_npu import NpuUnavailable, ReadyNpu, remove_npu, start_npu
from node_runner.warm_pool import PoolProfile, WarmPool

log = logging.getLogger(__name__)

# How often the registry looks after its dedicated NPUs (idle ones, deleted pipelines,
# the table's counters).
TIDY_EVERY_S = 5.0
# A server that has not cleaned up after an execution whose lease ended in this long
# is stuck: the NPU is replaced.
SLOT_WAIT_S = 30.0
RETIRE_GRACE_S = 10.0


@dataclass(frozen=True)
class NodeKey:
    pipeline_id: str
    node_id: str
    profile: PoolProfile
    concurrency: int


@dataclass(frozen=True)
class DedicatedBounds:
    max_npus: int
    idle_s: float
    max_executions: int

    @classmethod
    def from_settings(cls) -> DedicatedBounds:
        return cls(
            max_npus=settings.FLOWKIT_NPU_DEDICATED_MAX,
            idle_s=settings.FLOWKIT_NPU_DEDICATED_IDLE_S,
            max_executions=settings.FLOWKIT_NPU_DEDICATED_MAX_EXECUTIONS,
        )


class NpuBook(Protocol):
    """Where a registry records the NPUs it holds (the database; a list in unit tests)."""

    def opened(self, key: NodeKey, connection: NpuConnection, adopted: bool) -> None: ...

    def used(self, connections: list[NpuConnection]) -> None: ...

    def closed(self, container_id: str) -> None: ...

    def kept(self, container_ids: list[str]) -> set[str]:
        """Those of ``container_ids`` still wanted (their pipeline exists, nobody reaped them)."""


@dataclass
class DedicatedLease:
    registry: DedicatedNpus
    key: NodeKey
    connection: NpuConnection

    def release(self, *, healthy: bool) -> None:
        self.registry.release(self.key, self.connection, healthy=healthy)


@dataclass(frozen=True)
class NodePlacement:
    """A node of a pipeline, asking its registry for its NPU (an npu_execution.NpuSource)."""

    registry: DedicatedNpus
    pipeline_id: str
    node_id: str

    def lease(self, limits: NodeLimits, labels: dict[str, str] | None = None) -> DedicatedLease:
        # (``labels`` name one execution: a dedicated NPU serves many, and keeps its own.)
        key = NodeKey(self.pipeline_id, self.node_id, PoolProfile.of(limits), limits.concurrency)
        return self.registry.lease(key, limits)


class DedicatedNpus:
    """The dedicated NPUs of one worker (held by its NPU host)."""

    def __init__(
        self,
        bounds: DedicatedBounds,
        launch: Callable[[NodeKey], ReadyNpu],
        book: NpuBook,
        take_pooled: Callable[[NodeLimits], ReadyNpu | None] = lambda limits: None,
        remove: Callable[[NpuConnection], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        connect: Callable[[ReadyNpu], NpuConnection] = NpuConnection,
    ) -> None:
        self.bounds = bounds
        self._launch = launch
        self._book = book
        self._take_pooled = take_pooled
        self._remove = remove or _close_and_remove
        self._clock = clock
        self._connect = connect
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._npus: dict[NodeKey, NpuConnection] = {}
        self._retiring: list[NpuConnection] = []
        # NPUs whose opening the book has not taken: not yet, or the database was away.
        self._unbooked: dict[NodeKey, tuple[NpuConnection, bool]] = {}
        self._removers = ThreadPoolExecutor(1, thread_name_prefix="npu-dedicated-removal")
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._tidy_until_stopped, name="npu-dedicated", daemon=True)
        self.started = 0
        self.adopted = 0

    def start(self) -> None:
        self._thread.start()

    def for_node(self, pipeline_id: str, node_id: str) -> NodePlacement:
        return NodePlacement(self, str(pipeline_id), node_id)

    # --- leases -------------------------------------------------------------------------

    def lease(self, key: NodeKey, limits: NodeLimits) -> DedicatedLease:
        for _ in range(3):
            connection = self._connection_for(key, limits)
            if connection.reserve(key.concurrency, SLOT_WAIT_S):
                return DedicatedLease(self, key, connection)
            if connection.alive:
                log.warning(
                    "dedicated NPU %s of %s/%s is stuck; replacing it",
                    connection.id[:12],
                    key.pipeline_id,
                    key.node_id,
                )
            self._forget(key, connection)
        raise NpuUnavailable(f"no dedicated NPU of {key.pipeline_id}/{key.node_id} could be had")

    def release(self, key: NodeKey, connection: NpuConnection, *, healthy: bool) -> None:
        connection.unreserve()
        worn = connection.executions_served >= self.bounds.max_executions
        if healthy and not worn and connection.alive:
            return
        if not healthy:
            reason = connection.failure or "its execution left it unusable"
            where = f"{key.pipeline_id}/{key.node_id}"
            log.info("dedicated NPU %s of %s is replaced: %s", connection.id[:12], where, reason)
        # No new execution goes to it; one still running in it (concurrency > 1) may
        # finish first, unless the NPU itself is gone.
        self._forget(key, connection, graceful=True)

    def _connection_for(self, key: NodeKey, limits: NodeLimits) -> NpuConnection:
        with self._lock:
            connection = self._npus.get(key)
        if connection is not None and connection.alive:
            return connection
        if connection is not None:
            self._forget(key, connection)
        with self._start_lock:
            with self._lock:
                connection = self._npus.get(key)
            if connection is not None and connection.alive:
                return connection
            ready = self._take_pooled(limits)
            adopted = ready is not None
            if ready is None:
                ready = self._launch(key)
            connection = self._connect(ready)
            with self._lock:
                self._npus[key] = connection
                # Not in the book until _open_in_book has written it: tidy() must not
                # take its absence there for a deleted pipeline meanwhile.
                self._unbooked[key] = (connection, adopted)
                evicted = self._least_recently_used_beyond_bound(keep=key)
            if adopted:
                self.adopted += 1
            else:
                self.started += 1
        self._open_in_book(key, connection, adopted)
        for old_key, old in evicted:
            self._forget(old_key, old, graceful=True)
        return connection

    def _least_recently_used_beyond_bound(self, keep: NodeKey) -> list[tuple[NodeKey, NpuConnection]]:
        excess = len(self._npus) - self.bounds.max_npus
        if excess <= 0:
            return []
        idle = sorted(
            ((key, npu) for key, npu in self._npus.items() if _idle(npu) and key != keep),
            key=lambda item: item[1].last_used,
        )
        return idle[:excess]

    # --- letting go ----------------------------------------------------------------------

    def _forget(self, key: NodeKey, connection: NpuConnection, *, graceful: bool = False) -> None:
        with self._lock:
            if self._npus.get(key) is connection:
                del self._npus[key]
            if graceful and not _idle(connection) and connection.alive:
                # Another execution still runs in it: it goes once that one is done.
                self._retiring.append(connection)
                return
        self._retire(connection)

    def _retire(self, connection: NpuConnection) -> None:
        self._book_safely(lambda: self._book.closed(connection.id))
        try:
            self._removers.submit(self._remove, connection)
        except RuntimeError:  # draining
            self._remove(connection)

    def tidy(self) -> None:
        """Let go of idle NPUs, those whose pipeline is gone, and retiring ones that
        finished; record the executions each served. Called by the registry's thread."""
        now = self._clock()
        with self._lock:
            held = dict(self._npus)
            done = [npu for npu in self._retiring if _idle(npu) or not npu.alive]
            self._retiring = [npu for npu in self._retiring if npu not in done]
        for connection in done:
            self._retire(connection)
        if not held:
            return
        with self._lock:
            unbooked = dict(self._unbooked)
        for key, (connection, adopted) in unbooked.items():
            if held.get(key) is connection:
                self._open_in_book(key, connection, adopted)
        self._book_safely(lambda: self._book.used(list(held.values())))
        kept: set[str] | None = None
        with contextlib.suppress(DatabaseError):
            kept = self._book.kept([npu.id for npu in held.values()])
        for key, connection in held.items():
            idle = _idle(connection) and now - connection.last_used > self.bounds.idle_s
            # An NPU the book had not heard of before it was asked (``unbooked``, read
            # first) was not deleted from it.
            deleted = kept is not None and connection.id not in kept and key not in unbooked
            if idle or deleted or not connection.alive:
                self._forget(key, connection, graceful=not deleted and connection.alive)

    def drain(self) -> int:
        """Close every dedicated NPU (the process is ending); returns how many."""
        self._stopped.set()
        with self._lock:
            everything = [*self._npus.values(), *self._retiring]
            self._npus.clear()
            self._retiring.clear()
        for connection in everything:
            self._retire(connection)
        self._removers.shutdown(wait=True)
        return len(everything)

    def held(self) -> dict[NodeKey, NpuConnection]:
        with self._lock:
            return dict(self._npus)

    def _open_in_book(self, key: NodeKey, connection: NpuConnection, adopted: bool) -> None:
        booked = self._book_safely(lambda: self._book.opened(key, connection, adopted))
        with self._lock:
            if booked:
                self._unbooked.pop(key, None)
            else:
                self._unbooked[key] = (connection, adopted)  # tidy() tries again

    def _book_safely(self, action: Callable[[], None]) -> bool:
        # The table is a mirror for people and the reaper: an execution never waits on
        # it failing (the database away for a moment).
        try:
            action()
        except DatabaseError:
            log.warning("could not record a dedicated NPU change", exc_info=True)
            return False
        return True

    def _tidy_until_stopped(self) -> None:
        while not self._stopped.wait(TIDY_EVERY_S):
            try:
                self.tidy()
            except Exception:
                log.exception("could not look after the dedicated NPUs")
            finally:
                close_old_connections()


def _idle(connection: NpuConnection) -> bool:
    """No execution runs in it, and no lease holds a slot of it."""
    return connection.running == 0 and connection.reserved == 0


def _close_and_remove(connection: NpuConnection) -> None:
    connection.close()
    remove_npu(connection.container)


class DatabaseBook:
    """The NpuBook of a worker: node_runner.models.DedicatedNpu rows."""

    def __init__(self, worker: str) -> None:
        self.worker = worker

    def opened(self, key: NodeKey, connection: NpuConnection, adopted: bool) -> None:
        from node_runner.models import DedicatedNpu

        DedicatedNpu.objects.update_or_create(
            container_id=connection.id,
            defaults={
                "worker": self.worker,
                "pipeline_id": key.pipeline_id,
                "node_id": key.node_id,
                "profile": asdict(key.profile),
                "concurrency": key.concurrency,
                "adopted": adopted,
            },
        )

    def used(self, connections: list[NpuConnection]) -> None:
        from node_runner.models import DedicatedNpu

        now_wall, now = datetime.now(UTC), time.monotonic()
        for connection in connections:
            last_used = now_wall - timedelta(seconds=now - connection.last_used)
            DedicatedNpu.objects.filter(container_id=connection.id).update(
                executions=connection.executions_served, last_used_at=last_used
            )

    def closed(self, container_id: str) -> None:
        from node_runner.models import DedicatedNpu

        DedicatedNpu.objects.filter(container_id=container_id).delete()

    def kept(self, container_ids: list[str]) -> set[str]:
        from node_runner.models import DedicatedNpu

        return set(
            DedicatedNpu.objects.filter(container_id__in=container_ids).values_list("container_id", flat=True)
        )


def dedicated_npu_launcher(worker: str) -> Callable[[NodeKey], ReadyNpu]:
    client = docker.from_env(timeout=30)

    def launch(key: NodeKey) -> ReadyNpu:
        profile = key.profile
        if profile.network:
            ensure_npu_network(client)
        labels = {
            "flowkit.worker": worker,
            DEDICATED_LABEL: "1",
            "flowkit.pipeline": key.pipeline_id,
            "flowkit.node": key.node_id,
        }
        options = npu_container_options(
            image=profile.image,
            limits=profile,
            labels=labels,
            runtime=profile.runtime,
            network_name=settings.FLOWKIT_NPU_NETWORK,
        )
        return start_npu(client, options)

    return launch


def open_registry(worker: str, pool: WarmPool | None) -> DedicatedNpus:
    """The registry of ``worker``'s NPU host (node_runner.npu_host), adopting NPUs
    from ``pool``."""

    def take_pooled(limits: NodeLimits) -> ReadyNpu | None:
        return pool.take(limits) if pool is not None else None

    registry = DedicatedNpus(
        DedicatedBounds.from_settings(), dedicated_npu_launcher(worker), DatabaseBook(worker), take_pooled
    )
    registry.start()
    return registry
