"""Celery workers for the engine benchmarks, each started with its own NPU pool
setting and on its own queue.

A worker reads FLOWKIT_NPU_POOL_MAX / FLOWKIT_NPU_POOL_MIN when it starts, so "pool
warm" and "pool disabled" are two worker processes. Each gets a queue of its own:
the session's `celery_worker` (tests/conftest.py), started by other benchmarks, must
never take a benchmark's node, nor one benchmark worker another's.

Dedicated NPUs belong to a worker's NPU host (node_runner.npu_host), shared by its
pool processes. The dedicated-NPU benchmark's worker has one pool process and holds
more NPUs than a chain has nodes whatever the installation sets (DEDICATED_PINNED);
the default worker shows what two processes and the default bound give.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import docker
import psutil
from django.test import override_settings

from node_runner.container_spec import POOL_LABEL
from node_runner.models import DedicatedNpu
from tests.integration.conftest import WorkerProcess, start_worker, stop_worker

# How long a new worker may take to fill its pool; a build without the pool never
# does, and the benchmark then says so rather than waiting longer.
POOL_WARM_WAIT_S = 20.0
# How long a worker may take to let go of the dedicated NPUs of a deleted pipeline
# (its registry looks every 5 s, then removes them one at a time).
DEDICATED_GONE_WAIT_S = 120.0


@dataclass(frozen=True)
class PoolSetting:
    name: str
    env: dict[str, str]
    # Prefork processes of the worker; None: two (tests/integration's start_worker).
    processes: int | None = None

    @property
    def enabled(self) -> bool:
        return self.env.get("FLOWKIT_NPU_POOL_MAX") != "0"


# The pool as deployed: the defaults of web_ui/settings.py.
POOL_WARM = PoolSetting("pool warm", {"FLOWKIT_NPU_POOL_MAX": "4", "FLOWKIT_NPU_POOL_MIN": "2"})
POOL_DISABLED = PoolSetting("pool disabled", {"FLOWKIT_NPU_POOL_MAX": "0"})
# The pool as deployed (dedicated NPUs are adopted from it), one process, and room for
# a 40-node chain's NPUs whatever FLOWKIT_NPU_DEDICATED_MAX the installation sets.
DEDICATED_PINNED_MAX = 64
DEDICATED_PINNED = PoolSetting(
    "dedicated, one process",
    {**POOL_WARM.env, "FLOWKIT_NPU_DEDICATED_MAX": str(DEDICATED_PINNED_MAX)},
    processes=1,
)


# Celery's acknowledgement and prefetch, each on a worker of one process holding the
# chain's dedicated NPUs (the first is what the installation uses).
HAND_OFF_OPTIONS = tuple(
    PoolSetting(name, {**DEDICATED_PINNED.env, **env}, processes=1)
    for name, env in (
        ("acks late, prefetch 1", {}),
        ("acks early, prefetch 1", {"FLOWKIT_CELERY_ACKS_LATE": "false"}),
        ("acks late, prefetch 4", {"FLOWKIT_CELERY_PREFETCH_MULTIPLIER": "4"}),
        (
            "acks early, prefetch 4",
            {"FLOWKIT_CELERY_ACKS_LATE": "false", "FLOWKIT_CELERY_PREFETCH_MULTIPLIER": "4"},
        ),
    )
)


@dataclass
class BenchWorker:
    process: WorkerProcess
    queue: str
    pool: PoolSetting
    # Pooled containers that existed before this worker started: not its own.
    foreign_pooled: frozenset[str] = field(default_factory=frozenset)
    pool_missing: bool = False

    @property
    def name(self) -> str:
        return self.process.name

    def pooled_containers(self) -> list[docker.models.containers.Container]:
        """This worker's idle pooled NPUs (the pool labels them flowkit.pool=<profile>):
        new since it started, and not labelled as another worker's."""
        return [
            container
            for container in pooled_containers()
            if container.id not in self.foreign_pooled
            and (container.attrs.get("Labels") or {}).get("flowkit.worker", self.name) == self.name
        ]

    def wait_until_pool_is_warm(self) -> bool:
        """True once the worker holds an idle pooled NPU; False if none came (the pool
        is disabled, or this build has none: then later calls do not wait again)."""
        if not self.pool.enabled or self.pool_missing:
            return False
        deadline = time.monotonic() + POOL_WARM_WAIT_S
        while not self.pooled_containers():
            if time.monotonic() > deadline:
                self.pool_missing = True
                return False
            time.sleep(0.2)
        return True

    def rss_bytes(self) -> int:
        """Resident memory of the worker's main process, its pool children and its NPU
        host. Pages they share (the forked interpreter) are counted in each, as `ps` does."""
        main = psutil.Process(self.process.process.pid)
        return sum(process.memory_info().rss for process in [main, *main.children(recursive=True)])


def wait_until_removed(container_ids: set[str]) -> bool:
    """True once none of ``container_ids`` exists (a worker let go of the dedicated NPUs
    of a deleted pipeline: its registry looks every 5 s, then removes them one by one)."""
    client = docker.from_env()
    deadline = time.monotonic() + DEDICATED_GONE_WAIT_S
    while any(client.containers.list(all=True, sparse=True, filters={"id": cid}) for cid in container_ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(1.0)
    return True


def pool_labelled_containers() -> list[docker.models.containers.Container]:
    """Containers a pool started: waiting in it, or adopted from it as a node's
    dedicated NPU (which keeps its flowkit.pool label)."""
    # Sparse: the full listing inspects each container, and another worker's pooled
    # NPU can be taken and removed between the listing and its inspection.
    return docker.from_env().containers.list(sparse=True, filters={"label": POOL_LABEL})


def pooled_containers() -> list[docker.models.containers.Container]:
    """NPUs waiting in a pool: the registry's table tells the adopted ones apart."""
    labelled = pool_labelled_containers()
    adopted = set(
        DedicatedNpu.objects.filter(container_id__in=[c.id for c in labelled]).values_list(
            "container_id", flat=True
        )
    )
    return [container for container in labelled if container.id not in adopted]


@contextmanager
def bench_worker(pool: PoolSetting, log_dir: Path) -> Iterator[BenchWorker]:
    """A worker with ``pool`` on a fresh queue; runs started meanwhile (in this
    process) are dispatched to it."""
    queue = f"flowkit-bench-{uuid.uuid4().hex[:8]}"
    foreign = frozenset(c.id for c in pool_labelled_containers())
    with override_settings(FLOWKIT_CELERY_QUEUE=queue):
        process = start_worker(
            f"{queue}@{socket.gethostname()}",
            log_dir / f"{queue}.log",
            env={"FLOWKIT_CELERY_QUEUE": queue, **pool.env},
            autoscale=(pool.processes, pool.processes) if pool.processes else None,
        )
        try:
            yield BenchWorker(process, queue, pool, foreign)
        finally:
            stop_worker(process)
