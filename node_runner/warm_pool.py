"""The warm pool: NPUs started before their node arrives, each used once.

Starting a hardened container costs a few hundred milliseconds; handing a job to one
that already waits on its stdin costs a socket write. So each worker's NPU host
(node_runner.npu_host) keeps a few started NPUs per profile (image, runtime and the
limits fixed at creation). Taking one is a list operation and a zero-timeout select,
with no engine call. A taken NPU runs one node in a single-use container, or becomes
a node's dedicated NPU (node_runner.dedicated_npus). A single-use one is removed in
the background once its outcome is known (``retire``), so that the next node of the
run does not wait for the engine's cleanup. It never comes back.

Refills happen on a background thread, at most FLOWKIT_NPU_POOL_REFILL_CONCURRENCY
container starts at a time. Each profile is kept at a target between
FLOWKIT_NPU_POOL_MIN and FLOWKIT_NPU_POOL_MAX that follows the number of nodes
waiting in the worker's queue. FLOWKIT_NPU_POOL_MAX=0 turns the pool off.

No NPU outlives its worker: the pool is drained when its NPU host exits; the worker's
main process removes any pooled NPU still there when it shuts down (a host killed
without draining); and a pooled NPU whose host died (a crash) sees its stdin close,
exits, and is removed by the heartbeat's reaper or the worker's next life.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import docker
import redis
from django.conf import settings

from control_unit.limits import NodeLimits
from control_unit.routing import worker_queues
from node_runner.container_spec import POOL_LABEL, npu_container_options
from node_runner.npu_execution import ensure_npu_network
from node_runner.ready_npu import NpuUnavailable, ReadyNpu, discard, remove_npu, start_npu

log = logging.getLogger(__name__)

# A profile that no node asked for in this long is no longer kept warm.
PROFILE_UNUSED_S = 600.0
# A waiting NPU older than this is replaced, so that a rebuilt image reaches the
# pool without a worker restart.
MAX_WAIT_S = 300.0
# After the engine refused to start an NPU, the next try waits this long.
RETRY_AFTER_S = 2.0
# How often the pool checks its targets when nothing wakes it sooner.
CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class PoolProfile:
    """What two NPUs must share to be interchangeable before a node is given to one:
    everything fixed when the container is created."""

    image: str
    runtime: str
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    network: bool

    @classmethod
    def of(cls, limits: NodeLimits) -> PoolProfile:
        size = limits.container()
        return cls(
            image=settings.FLOWKIT_NPU_IMAGE,
            runtime=settings.FLOWKIT_NPU_RUNTIME,
            memory_mb=size.memory_mb,
            cpus=size.cpus,
            pids=size.pids,
            tmpfs_mb=size.tmpfs_mb,
            network=size.network,
        )

    @property
    def key(self) -> str:
        """A short, stable name of the profile, for the containers' label."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class PoolBounds:
    minimum: int
    maximum: int
    refill_concurrency: int

    @classmethod
    def from_settings(cls) -> PoolBounds:
        maximum = settings.FLOWKIT_NPU_POOL_MAX
        return cls(
            minimum=min(settings.FLOWKIT_NPU_POOL_MIN, maximum),
            maximum=maximum,
            refill_concurrency=settings.FLOWKIT_NPU_POOL_REFILL_CONCURRENCY,
        )

    def target(self, waiting_nodes: int) -> int:
        return max(self.minimum, min(waiting_nodes, self.maximum))


class WarmPool:
    """The started NPUs of one worker process, by profile.

    ``launch`` starts one NPU of a profile (blocking, on a refill thread); ``demand``
    says how many nodes wait in the queue; ``discard`` removes an NPU the pool gives up.
    """

    def __init__(
        self,
        bounds: PoolBounds,
        launch: Callable[[PoolProfile], ReadyNpu],
        demand: Callable[[], int],
        discard: Callable[[ReadyNpu], None] = discard,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bounds = bounds
        self._launch = launch
        self._demand = demand
        self._discard = discard
        self._clock = clock
        self._lock = threading.Lock()
        self._waiting: dict[PoolProfile, deque[ReadyNpu]] = {}
        self._starting: dict[PoolProfile, int] = {}
        self._last_asked: dict[PoolProfile, float] = {}
        self._kept: set[PoolProfile] = set()
        self._retry_at = 0.0
        self._stopped = False
        self._wake = threading.Event()
        self._starters = ThreadPoolExecutor(bounds.refill_concurrency, thread_name_prefix="npu-pool")
        self._removers = ThreadPoolExecutor(1, thread_name_prefix="npu-removal")
        self._thread = threading.Thread(target=self._refill_until_stopped, name="npu-pool", daemon=True)
        self.taken = 0
        self.started = 0

    def keep_warm(self, profile: PoolProfile) -> None:
        """Keep ``profile`` warm even when no node asked for it lately (the default)."""
        with self._lock:
            self._kept.add(profile)
            self._last_asked.setdefault(profile, self._clock())
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def take(self, limits: NodeLimits) -> ReadyNpu | None:
        profile = PoolProfile.of(limits)
        gone: list[ReadyNpu] = []
        taken = None
        with self._lock:
            self._last_asked[profile] = self._clock()
            waiting = self._waiting.setdefault(profile, deque())
            while waiting and taken is None:
                npu = waiting.popleft()
                if npu.is_waiting():
                    taken = npu
                    self.taken += 1
                else:
                    gone.append(npu)
        self._wake.set()
        for npu in gone:
            log.warning("pooled NPU %s went away while waiting; removing it", npu.id[:12])
            self._discard_later(npu)
        return taken

    def retire(self, container: Any) -> None:
        """Remove a used NPU's container in the background: the node's outcome is
        known, and the next node of its run need not wait for the engine's cleanup."""
        try:
            self._removers.submit(remove_npu, container)
        except RuntimeError:  # draining
            remove_npu(container)

    def waiting(self) -> dict[PoolProfile, int]:
        with self._lock:
            return {profile: len(npus) for profile, npus in self._waiting.items() if npus}

    def drain(self) -> int:
        """Stop refilling and remove every waiting NPU; returns how many."""
        with self._lock:
            self._stopped = True
            left = [npu for npus in self._waiting.values() for npu in npus]
            self._waiting.clear()
        self._wake.set()
        # Starts in flight finish and see the pool stopped: they discard their NPU.
        self._starters.shutdown(wait=True, cancel_futures=True)
        for npu in left:
            self._discard(npu)
        self._removers.shutdown(wait=True)  # every used NPU is removed too
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        return len(left)

    def refill(self) -> None:
        """Bring every profile in use to its target, retire stale NPUs and forget
        unused profiles. Called by the pool's thread; public for tests."""
        now = self._clock()
        waiting_nodes = self._safe_demand()
        retired: list[ReadyNpu] = []
        to_start: list[PoolProfile] = []
        with self._lock:
            if self._stopped:
                return
            for profile in list(self._last_asked):
                npus = self._waiting.setdefault(profile, deque())
                in_use = profile in self._kept or now - self._last_asked[profile] < PROFILE_UNUSED_S
                if not in_use:
                    retired.extend(npus)
                    npus.clear()
                    del self._last_asked[profile]
                    continue
                while npus and now - npus[0].started_at > MAX_WAIT_S:
                    retired.append(npus.popleft())
                missing = self.bounds.target(waiting_nodes) - len(npus) - self._starting.get(profile, 0)
                if now >= self._retry_at:
                    for _ in range(missing):
                        self._starting[profile] = self._starting.get(profile, 0) + 1
                        to_start.append(profile)
        for npu in retired:
            self._discard_later(npu)
        for profile in to_start:
            self._starters.submit(self._start_one, profile)

    def _start_one(self, profile: PoolProfile) -> None:
        npu = None
        try:
            npu = self._launch(profile)
        except (NpuUnavailable, docker.errors.DockerException, OSError) as exc:
            log.warning("the warm pool could not start an NPU (trying again in %g s): %s", RETRY_AFTER_S, exc)
            self._retry_at = self._clock() + RETRY_AFTER_S
        with self._lock:
            self._starting[profile] -= 1
            if npu is not None and not self._stopped:
                self._waiting.setdefault(profile, deque()).append(npu)
                self.started += 1
                npu = None
        if npu is not None:
            self._discard(npu)  # the pool was drained while it started

    def _discard_later(self, npu: ReadyNpu) -> None:
        # Off the caller's thread: a node must not wait for an engine call.
        try:
            self._starters.submit(self._discard, npu)
        except RuntimeError:  # draining: the starters are gone
            self._discard(npu)

    def _safe_demand(self) -> int:
        try:
            return self._demand()
        except (redis.RedisError, OSError):
            return 0  # the broker is away: keep the minimum

    def _refill_until_stopped(self) -> None:
        while not self._stopped:
            self._wake.wait(CHECK_EVERY_S)
            self._wake.clear()
            try:
                self.refill()
            except RuntimeError:
                return  # the starters were shut down: the pool is draining
            except Exception:
                log.exception("the warm pool could not refill")


def pooled_npu_launcher(worker: str) -> Callable[[PoolProfile], ReadyNpu]:
    # The pool's own engine client: its threads start containers while the node's
    # thread drives one.
    client = docker.from_env(timeout=30)

    def launch(profile: PoolProfile) -> ReadyNpu:
        if profile.network:
            ensure_npu_network(client)
        options = npu_container_options(
            image=profile.image,
            limits=profile,
            labels={"flowkit.worker": worker, POOL_LABEL: profile.key},
            runtime=profile.runtime,
            network_name=settings.FLOWKIT_NPU_NETWORK,
        )
        return start_npu(client, options)

    return launch


def queued_nodes(queues: list[str]) -> Callable[[], int]:
    """How many node jobs wait in ``queues`` on the Redis broker (one list per queue)."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=1.0)

    def count() -> int:
        with client.pipeline(transaction=False) as pipeline:
            for queue in queues:
                pipeline.llen(queue)
            return sum(int(length) for length in pipeline.execute())

    return count


def open_pool(worker: str) -> WarmPool | None:
    """The warm pool of ``worker``'s NPU host (node_runner.npu_host); None when
    FLOWKIT_NPU_POOL_MAX is 0."""
    bounds = PoolBounds.from_settings()
    if bounds.maximum == 0:
        return None
    queues = worker_queues(settings.FLOWKIT_CELERY_QUEUE, settings.FLOWKIT_WORKER_CAPABILITIES)
    pool = WarmPool(bounds, pooled_npu_launcher(worker), queued_nodes(queues))
    pool.keep_warm(PoolProfile.of(NodeLimits.defaults()))
    pool.start()
    return pool
