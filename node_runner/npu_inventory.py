"""Which NPUs exist on this engine, what each is for, and which no live worker holds:
what the resource monitor (through the heartbeat), ``flowkit npu list`` and
``flowkit npu reap`` show and do."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import docker.errors
from django.conf import settings
from django.utils import timezone

from node_runner.container_spec import DEDICATED_LABEL, POOL_LABEL, ROLE_LABEL, ROLE_NPU
from node_runner.docker_engine import engine
from node_runner.models import DedicatedNpu
from node_runner.reaper import forget_dedicated, remove_container
from trace_monitor.models import NodeExecution, WorkerStatus


class NpuKind(StrEnum):
    """What an NPU is for: the resource monitor's and ``flowkit npu list``'s vocabulary."""

    DEDICATED = "dedicated"  # a pipeline node's own (node_runner.dedicated_npus)
    POOLED = "pooled"  # started ahead, waiting in a worker's warm pool
    SINGLE_USE = "single-use"  # one execution, then removed (isolation: container)
    TEST = "test"  # a node test run's (editor, `flowkit node run`)


CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where the Docker engine puts a container's memory use: cgroup v1 (cgroupfs, then
# systemd driver), then cgroup v2 (systemd, then cgroupfs driver). Read on the host:
# a worker in a container of its own sees none of them, and reports no figure.
CGROUP_MEMORY_FILES = (
    "memory/docker/{id}/memory.usage_in_bytes",
    "memory/system.slice/docker-{id}.scope/memory.usage_in_bytes",
    "system.slice/docker-{id}.scope/memory.current",
    "docker/{id}/memory.current",
)


def container_memory_bytes(container_id: str, root: Path = CGROUP_ROOT) -> int | None:
    """The memory an NPU's cgroup holds now (its processes and their page cache), or
    None where this host does not show it. A file read, not an engine call: an idle
    dedicated NPU sends no samples, and the stats API takes a second per container."""
    for pattern in CGROUP_MEMORY_FILES:
        try:
            return int((root / pattern.format(id=container_id)).read_text())
        except (OSError, ValueError):
            continue
    return None


def running_npus(worker: str) -> list[dict[str, Any]]:
    """The NPUs this worker started that are running or paused now (describe_npus)."""
    filters = {"label": [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}"]}
    return describe_npus(engine().containers.list(sparse=True, filters=filters))


def npus_on_this_engine() -> list[dict[str, Any]]:
    """Every NPU on this Docker engine, running or not, whoever started it (describe_npus)."""
    filters = {"label": f"{ROLE_LABEL}={ROLE_NPU}"}
    return describe_npus(engine().containers.list(all=True, sparse=True, filters=filters))


def describe_npus(containers: list[Any]) -> list[dict[str, Any]]:
    """Each of ``containers`` (sparse listings of NPUs) as the resource monitor and
    ``flowkit npu list`` show it: its kind; the run, node and attempt it executes now
    (none for an idle one); for a dedicated NPU the pipeline and node it serves, the
    executions it served and since when it is idle; and its memory. Two queries
    whatever the number of NPUs.

    Labels do not say everything: a pooled NPU was labelled before its node was known,
    and one adopted as a node's dedicated NPU keeps the pool's labels. The trace (a
    running NodeExecution names its container) says what runs where, and the table
    DedicatedNpu which node an NPU serves."""
    ids = [str(container.id) for container in containers]
    dedicated = {
        row["container_id"]: row
        for row in DedicatedNpu.objects.filter(container_id__in=ids).values(
            "container_id", "worker", "pipeline_id", "pipeline__name", "node_id", "profile",
            "executions", "started_at", "last_used_at",
        )
    }  # fmt: skip
    running: dict[str, list[dict[str, Any]]] = {}
    executions = NodeExecution.objects.filter(container_id__in=ids, outcome="running").order_by("started_at")
    for container_id, run_id, node_id, attempt, pipeline_id, pipeline_name in executions.values_list(
        "container_id", "run_id", "node_id", "attempt", "pipeline_id", "pipeline__name"
    ):
        running.setdefault(container_id, []).append(
            {
                "run_id": str(run_id),
                "node_id": node_id,
                "attempt": attempt,
                "pipeline_id": str(pipeline_id),
                "pipeline_name": pipeline_name,
            }
        )
    return [
        _described(container, dedicated.get(str(container.id)), running.get(str(container.id), []))
        for container in containers
    ]


def _described(
    container: Any, row: Mapping[str, Any] | None, running: list[dict[str, Any]]
) -> dict[str, Any]:
    labels = container.attrs.get("Labels") or {}
    state = str(container.attrs.get("State", ""))
    npu: dict[str, Any] = {
        "container_id": str(container.id),
        "kind": _kind(labels, row, bool(running)),
        "state": state,
        "worker": row["worker"] if row else labels.get("flowkit.worker"),
        # A single-use NPU started for its node says so in its labels.
        "run_id": labels.get("flowkit.run"),
        "node_id": labels.get("flowkit.node"),
        "attempt": int(labels.get("flowkit.attempt") or 0),
        "pipeline_id": labels.get("flowkit.pipeline"),
        "pipeline_name": None,
        "executions": None,
        "idle_since": None,
        "memory_bytes": container_memory_bytes(str(container.id)) if state in ("running", "paused") else None,
        "memory_limit_bytes": None,
    }
    if running:
        npu.update(running[0])
        if len(running) > 1:  # a dedicated NPU of a node with limits.concurrency > 1
            npu["running"] = [
                {key: execution[key] for key in ("run_id", "node_id", "attempt")} for execution in running
            ]
    if row is not None:
        memory_mb = (row["profile"] or {}).get("memory_mb")
        npu.update(
            pipeline_id=str(row["pipeline_id"]),
            pipeline_name=row["pipeline__name"],
            node_id=row["node_id"],
            executions=row["executions"],
            memory_limit_bytes=memory_mb * 2**20 if isinstance(memory_mb, int) else None,
        )
        if not running:
            # Counted by its worker process every few seconds (DatabaseBook.used).
            npu["idle_since"] = (row["last_used_at"] or row["started_at"]).isoformat()
            if state == "running":
                npu["state"] = "idle"
    elif npu["kind"] == NpuKind.POOLED and state == "running":
        npu["state"] = "warm"
        npu["idle_since"] = datetime.fromtimestamp(int(container.attrs.get("Created") or 0), UTC).isoformat()
    return npu


def _kind(labels: dict[str, str], row: Mapping[str, Any] | None, executing: bool) -> NpuKind:
    if row is not None or labels.get(DEDICATED_LABEL):
        return NpuKind.DEDICATED
    if labels.get("flowkit.test_run"):
        return NpuKind.TEST
    if labels.get(POOL_LABEL) and not executing:
        # Taken for an execution (and not adopted: no row), a pooled NPU is that
        # execution's single-use one.
        return NpuKind.POOLED
    return NpuKind.SINGLE_USE


def gone_workers(names: Iterable[str]) -> set[str]:
    """Of ``names``, the workers whose heartbeats say they are gone: stopped, lost, or
    silent for longer than FLOWKIT_WORKER_LOST_AFTER_S. A name this installation never
    heard of is not judged: it may be another installation's on the same engine."""
    cutoff = timezone.now() - timedelta(seconds=settings.FLOWKIT_WORKER_LOST_AFTER_S)
    statuses = WorkerStatus.objects.filter(name__in=set(names)).values_list("name", "state", "last_seen")
    return {name for name, state, seen in statuses if state not in ("online", "draining") or seen < cutoff}


# A stopped NPU is its runner's to remove for this long: it reads the exit state first
# (an out-of-memory kill), as reaper.reap_exited leaves it.
STOPPED_GRACE_S = 30.0


def reap_unheld_npus(*, everything: bool = False) -> list[str]:
    """Remove the NPUs on this engine that no live worker holds, and the DedicatedNpu
    rows of what is gone; returns the removed containers' short ids.

    Held by nobody: every NPU (running or not) of a worker that is gone (gone_workers;
    a dedicated NPU belongs to the worker its row names), and a stopped NPU that exited
    more than STOPPED_GRACE_S ago. The rows of a gone worker go wherever its NPUs ran.
    With ``everything``, every NPU on this engine and its row: no worker may be alive
    (a live worker lets go of a dedicated NPU whose row is gone, and replaces one that
    vanished under it)."""
    holders = dict(DedicatedNpu.objects.values_list("container_id", "worker"))
    npus = engine().containers.list(all=True, sparse=True, filters={"label": f"{ROLE_LABEL}={ROLE_NPU}"})

    def worker_of(container: Any) -> str | None:
        return holders.get(str(container.id)) or (container.attrs.get("Labels") or {}).get("flowkit.worker")

    gone = gone_workers({*holders.values(), *filter(None, map(worker_of, npus))})
    removed: list[Any] = []
    for container in npus:
        stopped = container.attrs.get("State") not in ("running", "paused")
        unheld = everything or worker_of(container) in gone or (stopped and _stopped_long_ago(container))
        if unheld and remove_container(container):
            removed.append(container)
    forget_dedicated(container_ids=[str(container.id) for container in removed])
    for worker in gone:
        forget_dedicated(worker=worker)
    return [str(container.short_id) for container in removed]


def _stopped_long_ago(container: Any) -> bool:
    if container.attrs.get("State") == "created":
        # Not started yet: being started right now (node_runner.ready_npu.start_npu), or
        # a start that failed long ago.
        return time.time() - int(container.attrs.get("Created") or 0) > STOPPED_GRACE_S
    try:
        container.reload()  # the sparse listing has no end time
        finished = datetime.fromisoformat(container.attrs["State"]["FinishedAt"])
    except docker.errors.NotFound:
        return False  # its runner removed it meanwhile
    except (KeyError, ValueError):
        return True
    return (datetime.now(UTC) - finished).total_seconds() > STOPPED_GRACE_S
