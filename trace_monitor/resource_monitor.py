"""The resource monitor's view: workers, their hosts' load, and the NPUs they drive.

Workers report through heartbeats (node_runner.heartbeat); NPU samples come from the
runners as they take them (trace_monitor.node_trace).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
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


def record_heartbeat(
    *,
    name: str,
    host: str,
    pid: int,
    concurrency: int,
    load: HostLoad,
    npus: list[dict[str, Any]],
    state: str,
) -> dict[str, Any]:
    now = timezone.now()
    values = {
        "host": host,
        "pid": pid,
        "concurrency": concurrency,
        "cpu_percent": load.cpu_percent,
        "cpu_count": load.cpu_count,
        "memory_used_bytes": load.memory_used_bytes,
        "memory_total_bytes": load.memory_total_bytes,
        "npus": npus,
        "state": state,
        "last_seen": now,
    }
    worker, _ = WorkerStatus.objects.update_or_create(
        name=name, defaults=values, create_defaults={**values, "started_at": now}
    )
    frame = worker_frame(worker)
    send(MONITOR_GROUP, {"type": "monitor.worker", "worker": frame})
    return frame


def worker_frame(worker: WorkerStatus) -> dict[str, Any]:
    silent_after = timedelta(seconds=SILENT_AFTER_HEARTBEATS * settings.FLOWKIT_WORKER_HEARTBEAT_S)
    state = worker.state
    if state == "online" and timezone.now() - worker.last_seen > silent_after:
        state = "silent"
    return {
        "name": worker.name,
        "host": worker.host,
        "pid": worker.pid,
        "state": state,
        "concurrency": worker.concurrency,
        "cpu_percent": worker.cpu_percent,
        "cpu_count": worker.cpu_count,
        "memory_used_bytes": worker.memory_used_bytes,
        "memory_total_bytes": worker.memory_total_bytes,
        "npus": worker.npus,
        "started_at": worker.started_at.isoformat(),
        "last_seen": worker.last_seen.isoformat(),
    }


def snapshot() -> dict[str, Any]:
    """Every known worker, and the latest sample of each NPU it reported running."""
    workers = [worker_frame(worker) for worker in WorkerStatus.objects.all()]
    samples = []
    for worker in workers:
        if worker["state"] != "online":
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
