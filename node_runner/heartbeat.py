"""Each worker's heartbeat: its host's CPU and memory and the NPUs it drives, sent
to the resource monitor every FLOWKIT_WORKER_HEARTBEAT_S; and the recovery of work
that a lost worker stranded.

It runs as a thread of the worker's main process, started when Celery reports the
worker ready and stopped (with a last "stopped" beat) when it shuts down. On every
beat each worker also looks for peers silent longer than FLOWKIT_WORKER_LOST_AFTER_S:
their running attempts fail with WorkerLost (and are retried where the node has
retries left) and their NPUs on this engine are removed. A worker that starts under
the name of one that died does the same for its previous life at once. A run whose
worker is lost therefore moves on within about LOST_AFTER_S + HEARTBEAT_S.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any

import psutil
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from control_unit.run_actions import do_fail_stranded_attempts, do_redispatch_overdue
from node_runner.container_spec import ROLE_LABEL, ROLE_NPU
from node_runner.docker_engine import engine
from node_runner.reaper import reap_exited, reap_worker_containers
from trace_monitor.models import NodeExecution, WorkerStatus
from trace_monitor.node_trace import end_lost_executions
from trace_monitor.resource_monitor import HostLoad, mark_lost_workers, record_heartbeat

log = logging.getLogger(__name__)


def host_load() -> HostLoad:
    memory = psutil.virtual_memory()
    return HostLoad(
        # Since the previous call: the first beat after start reads 0.
        cpu_percent=psutil.cpu_percent(interval=None),
        cpu_count=psutil.cpu_count() or 1,
        memory_used_bytes=int(memory.total - memory.available),
        memory_total_bytes=int(memory.total),
    )


def running_npus(worker: str) -> list[dict[str, Any]]:
    """The NPUs this worker started that are running or paused now: each with the
    node it runs, or none for a warm one waiting in the pool."""
    filters = {"label": [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}"]}
    npus = []
    for container in engine().containers.list(sparse=True, filters=filters):
        labels = container.attrs.get("Labels") or {}
        npus.append(
            {
                "container_id": container.id,
                "state": container.attrs.get("State", ""),
                "run_id": labels.get("flowkit.run"),
                "node_id": labels.get("flowkit.node"),
                "attempt": int(labels.get("flowkit.attempt") or 0),
            }
        )
    # A pooled NPU was labelled before its node was known: its trace names the node.
    pooled = {npu["container_id"]: npu for npu in npus if npu["run_id"] is None}
    executions = NodeExecution.objects.filter(container_id__in=list(pooled), outcome="running")
    for container_id, run_id, node_id, attempt in executions.values_list(
        "container_id", "run_id", "node_id", "attempt"
    ):
        pooled[container_id].update(run_id=str(run_id), node_id=node_id, attempt=attempt)
    for npu in pooled.values():
        if npu["run_id"] is None:
            npu["state"] = "warm"
    return npus


def recover_lost_workers() -> None:
    lost = mark_lost_workers(settings.FLOWKIT_WORKER_LOST_AFTER_S)
    if lost:
        # A lost worker may have taken dispatches off the queue that it never claimed
        # (prefetched, or a retry whose countdown it was waiting out). Unacknowledged,
        # Redis hands them out again only after the visibility timeout (hours), and the
        # overdue watchdog would wait FLOWKIT_REDISPATCH_AFTER_S: send every dispatch that
        # is due again now. A copy of one still in the queue is claimed once, the other
        # does nothing.
        do_redispatch_overdue(0)
    for name in lost:
        failed = do_fail_stranded_attempts(
            name,
            f"worker {name} was lost (no heartbeat for {settings.FLOWKIT_WORKER_LOST_AFTER_S:g} s) "
            "while running this node",
        )
        end_lost_executions(failed)
        removed = reap_worker_containers(name)
        log.warning("worker %s lost: failed %d attempts, removed %d NPUs", name, len(failed), len(removed))


def another_life_is_running(name: str) -> str | None:
    """Why a worker of this name other than this process may still be alive (two
    workers given the same name), or None when its previous life is surely over."""
    previous = WorkerStatus.objects.filter(name=name).values("host", "pid", "state", "last_seen").first()
    if previous is None or previous["state"] != "online" or previous["pid"] == os.getpid():
        return None
    if previous["host"] == socket.gethostname():
        if psutil.pid_exists(previous["pid"]):
            return f"process {previous['pid']} on this host is running as {name}"
        return None
    silent_s = (timezone.now() - previous["last_seen"]).total_seconds()
    if silent_s < settings.FLOWKIT_WORKER_LOST_AFTER_S:
        # Another host: it cannot be asked. If it is gone, the lost-worker path
        # (recover_lost_workers) recovers its work shortly.
        return f"a worker on {previous['host']} sent a heartbeat as {name} {silent_s:.0f} s ago"
    return None


def recover_previous_life(name: str, started: float) -> None:
    """What a worker of the same name left behind before this process started, unless
    that worker is still running (two workers were given one name)."""
    duplicate = another_life_is_running(name)
    if duplicate is not None:
        log.error("worker name %s is not unique (%s): not recovering its work; give each worker its own name",
                  name, duplicate)  # fmt: skip
        return
    failed = do_fail_stranded_attempts(
        name,
        f"worker {name} restarted while running this node",
        claimed_before=datetime.fromtimestamp(started, UTC),
    )
    end_lost_executions(failed)
    removed = reap_worker_containers(name, created_before=started)
    if failed or removed:
        log.warning(
            "%s: failed %d attempts and removed %d NPUs of its previous life", name, len(failed), len(removed)
        )


class Heartbeat:
    def __init__(self, name: str, concurrency: int) -> None:
        self.name = name
        self.concurrency = concurrency
        # When the worker's main process started: everything of this life (its pool's
        # NPUs too, started before Celery reports the worker ready) comes after it.
        self.started = psutil.Process().create_time()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.beat(state="stopped", npus=[])

    def beat(self, *, state: str = "online", npus: list[dict[str, Any]] | None = None) -> None:
        record_heartbeat(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.concurrency,
            load=host_load(),
            npus=running_npus(self.name) if npus is None else npus,
            state=state,
        )

    def _beat_until_stopped(self) -> None:
        recovered = False
        while not self._stopped.is_set():
            try:
                close_old_connections()
                if not recovered:
                    # Before this process's first beat overwrites what the last life left.
                    recover_previous_life(self.name, self.started)
                    recovered = True
                self.beat()
                recover_lost_workers()
                reap_exited(self.name)
                do_redispatch_overdue(settings.FLOWKIT_REDISPATCH_AFTER_S)
            except Exception:
                # The monitor shows the worker as silent; the worker keeps running nodes.
                log.warning("heartbeat of %s failed", self.name, exc_info=True)
            self._stopped.wait(settings.FLOWKIT_WORKER_HEARTBEAT_S)


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    global _heartbeat
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", 0) or 0
    _heartbeat = Heartbeat(name, int(concurrency))
    _heartbeat.start()


@worker_shutdown.connect
def _stop_heartbeat(**kwargs: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
