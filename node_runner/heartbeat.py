"""Each worker's heartbeat: its host's CPU and memory and the NPUs it drives, sent
to the resource monitor every FLOWKIT_WORKER_HEARTBEAT_S.

It runs as a thread of the worker's main process, started when Celery reports the
worker ready and stopped (with a last "stopped" beat) when it shuts down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

import psutil
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

from node_runner.container_spec import ROLE_LABEL, ROLE_NPU
from node_runner.docker_engine import engine
from trace_monitor.resource_monitor import HostLoad, record_heartbeat

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
    """The NPUs this worker started that are running or paused now."""
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
    return npus


class Heartbeat:
    def __init__(self, name: str, concurrency: int) -> None:
        self.name = name
        self.concurrency = concurrency
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
        while not self._stopped.is_set():
            try:
                close_old_connections()
                self.beat()
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
