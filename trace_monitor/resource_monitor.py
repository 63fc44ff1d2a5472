"""The resource monitor's view: workers, their hosts' load, and the NPUs they drive.

Workers report through heartbeats (node_runner.heartbeat); NPU samples come from the
runners as they take them (trace_monitor.node_trace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from trace_monitor.models import ResourceSample, WorkerStatus
from trace_monitor.recorder import MONITOR_GROUP, sample_frame, send

# A worker that missed this many heartbeats is shown as silent.
SILENT_AFTER_HEARTBEATS = 3


@dataclass(frozen=True)
class HostLoad:
    cpu_percent: float
    cpu_count: int
    memory_used_bytes: int
    memory_total_bytes: int
    net_rx_bytes_per_s: float = 0.0  # the host's physical interfaces (node_runner.heartbeat)
    net_tx_bytes_per_s: float = 0.0


@dataclass(frozen=True)
class WorkerPool:
    """What a worker offers and how its pool scales."""

    concurrency_min: int = 0
    size: int = 0
    queue_depth: int = 0
    scaling: list[dict[str, Any]] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)


def record_heartbeat(
    *,
    name: str,
    host: str,
    pid: int,
    concurrency: int,
    load: HostLoad,
    npus: list[dict[str, Any]],
    state: str,
    pool: WorkerPool | None = None,
) -> dict[str, Any]:
    now = timezone.now()
    pool = pool or WorkerPool()
    values: dict[str, Any] = {
        "host": host,
        "pid": pid,
        "concurrency": concurrency,
        "concurrency_min": pool.concurrency_min,
        "pool_size": pool.size,
        "queue_depth": pool.queue_depth,
        "scaling": pool.scaling,
        "capabilities": pool.capabilities,
        "queues": pool.queues,
        "cpu_percent": load.cpu_percent,
        "cpu_count": load.cpu_count,
        "memory_used_bytes": load.memory_used_bytes,
        "memory_total_bytes": load.memory_total_bytes,
        "net_rx_bytes_per_s": load.net_rx_bytes_per_s,
        "net_tx_bytes_per_s": load.net_tx_bytes_per_s,
        "npus": npus,
        "last_seen": now,
    }
    # One statement, so that a drain ordered between two beats is never overwritten:
    # an "online" beat keeps "draining" for the same process (a new process of the
    # same name, after a restart, is online again).
    kept_state: Any = Value(state)
    if state == "online":
        kept_state = Case(When(state="draining", pid=pid, then=Value("draining")), default=Value(state))
    if not WorkerStatus.objects.filter(name=name).update(**values, state=kept_state):
        try:
            with transaction.atomic():
                WorkerStatus.objects.create(name=name, state=state, started_at=now, **values)
        except IntegrityError:
            # Another beat of the same name created it first.
            WorkerStatus.objects.filter(name=name).update(**values, state=kept_state)
    worker = WorkerStatus.objects.get(name=name)
    frame = worker_frame(worker)
    send(MONITOR_GROUP, {"type": "monitor.worker", "worker": frame})
    return frame


def mark_lost_workers(lost_after_s: float) -> list[str]:
    """Mark the online (or draining) workers silent for longer than ``lost_after_s`` as
    lost, and return their names. Every worker runs this on every heartbeat; the
    conditional update lets exactly one of them claim each loss."""
    cutoff = timezone.now() - timedelta(seconds=lost_after_s)
    alive = ("online", "draining")
    marked = []
    for name in WorkerStatus.objects.filter(state__in=alive, last_seen__lt=cutoff).values_list(
        "name", flat=True
    ):
        if WorkerStatus.objects.filter(name=name, state__in=alive, last_seen__lt=cutoff).update(state="lost"):
            marked.append(name)
            send(
                MONITOR_GROUP,
                {"type": "monitor.worker", "worker": worker_frame(WorkerStatus.objects.get(name=name))},
            )
    return marked


def worker_frame(worker: WorkerStatus) -> dict[str, Any]:
    silent_after = timedelta(seconds=SILENT_AFTER_HEARTBEATS * settings.FLOWKIT_WORKER_HEARTBEAT_S)
    state = worker.state
    if state in ("online", "draining") and timezone.now() - worker.last_seen > silent_after:
        state = "silent"
    return {
        "name": worker.name,
        "host": worker.host,
        "pid": worker.pid,
        "state": state,
        "concurrency": worker.concurrency,
        "concurrency_min": worker.concurrency_min,
        "pool_size": worker.pool_size,
        "queue_depth": worker.queue_depth,
        "scaling": worker.scaling,
        "capabilities": worker.capabilities,
        "queues": worker.queues,
        "cpu_percent": worker.cpu_percent,
        "cpu_count": worker.cpu_count,
        "memory_used_bytes": worker.memory_used_bytes,
        "memory_total_bytes": worker.memory_total_bytes,
        "net_rx_bytes_per_s": worker.net_rx_bytes_per_s,
        "net_tx_bytes_per_s": worker.net_tx_bytes_per_s,
        "npus": worker.npus,
        "started_at": worker.started_at.isoformat(),
        "last_seen": worker.last_seen.isoformat(),
    }


def snapshot() -> dict[str, Any]:
    """Every known worker, and the latest sample of each NPU it reported running."""
    workers = [worker_frame(worker) for worker in WorkerStatus.objects.all()]
    samples = []
    for worker in workers:
        if worker["state"] not in ("online", "draining"):
            continue
        for npu in worker["npus"]:
            if not npu.get("run_id"):
                continue
            latest = (
                ResourceSample.objects.filter(
                    run_id=npu["run_id"], node_id=npu.get("node_id", ""), attempt=npu.get("attempt") or 0
                )
                .order_by("-at")
                .first()
            )
            if latest is not None:
                samples.append(sample_frame(latest))
    return {
        "type": "snapshot",
        "heartbeat_s": settings.FLOWKIT_WORKER_HEARTBEAT_S,
        "workers": workers,
        "samples": samples,
    }
