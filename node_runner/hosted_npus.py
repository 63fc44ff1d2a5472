"""The worker's NPUs as one of its pool processes sees them: leased from the worker's
NPU host (node_runner.npu_host) over its Unix socket, one connection per execution.

The host holds every NPU attach stream, the dedicated NPUs' registry and the warm
pool, so that all the pool processes of a worker share them: a node's executions meet
the same dedicated NPU whichever process runs them, up to the node's concurrency at
once. What the host relays is exactly what an in-process NPU connection gives the
runner (node_runner.npu_execution drives both alike): the execution's frame stream,
the fork server's events about it, and the NPU's end.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from control_unit.limits import NodeLimits
from node_runner.docker_engine import engine
from node_runner.host_wire import (
    GONE,
    KILL,
    KIND_ITEMS,
    LEASE,
    LEASED,
    PAUSE,
    RELEASE,
    RESUME,
    RUN,
    SERVER,
    HostLink,
    HostLinkClosed,
    run_body,
)
from node_runner.npu_connection import NpuGone
from node_runner.ready_npu import NpuUnavailable

log = logging.getLogger(__name__)

# How long a pool process waits for its worker's NPU host to listen (it starts with
# the worker, and is restarted by it after a crash).
HOST_WAIT_S = 30.0


@dataclass(frozen=True)
class HostedNpus:
    """The NPU host listening on ``path``."""

    path: str

    def for_node(self, pipeline_id: str, node_id: str) -> HostedPlacement:
        """The node's dedicated NPU."""
        return HostedPlacement(self, "dedicated", str(pipeline_id), node_id)

    def single_use(self) -> HostedPlacement:
        """A single-use container, from the worker's warm pool when it holds one."""
        return HostedPlacement(self, "single", "", "")

    def connect(self, wait_s: float = HOST_WAIT_S) -> HostLink:
        deadline = time.monotonic() + wait_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                return HostLink(sock)
            except OSError as exc:
                sock.close()
                starting = exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
                if not starting or time.monotonic() > deadline:
                    raise NpuUnavailable(f"the worker's NPU host does not answer: {exc}") from None
            time.sleep(0.1)


@dataclass(frozen=True)
class HostedPlacement:
    """An NPU source (npu_execution.NpuSource) of the host: a node's dedicated NPU, or
    single-use containers."""

    host: HostedNpus
    mode: str
    pipeline_id: str
    node_id: str

    def lease(self, limits: NodeLimits, labels: dict[str, str]) -> HostedLease:
        link = self.host.connect()
        try:
            link.send_json(
                LEASE,
                {
                    "mode": self.mode,
                    "pipeline_id": self.pipeline_id,
                    "node_id": self.node_id,
                    "limits": limits.overrides(),
                    "labels": labels,
                },
            )
            # Waits while the node's NPU has no free slot (its other executions run).
            kind, body = link.receive()
            answer = json.loads(body)
        except (HostLinkClosed, OSError, ValueError) as exc:
            link.close()
            raise NpuUnavailable(f"the worker's NPU host failed: {exc}") from None
        if kind != LEASED:
            link.close()
            raise NpuUnavailable(str(answer.get("message") or "the worker's NPU host refused the NPU"))
        return HostedLease(HostedConnection(link, str(answer["id"])))


@dataclass
class HostedLease:
    connection: HostedConnection

    def release(self, *, healthy: bool) -> None:
        self.connection.release(healthy)


@dataclass
class HostedExecution:
    """One execution (npu_execution.Execution), relayed by the host."""

    connection: HostedConnection
    items: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    spawned: dict[str, Any] | None = None
    exited: dict[str, Any] | None = None

    def pause(self) -> None:
        self.connection.send(PAUSE)

    def resume(self) -> None:
        self.connection.send(RESUME)

    def kill(self) -> None:
        self.connection.send(KILL)


class HostedConnection:
    """A leased NPU (npu_execution.Connection), for one execution."""

    def __init__(self, link: HostLink, container_id: str) -> None:
        self.link = link
        self.id = container_id
        self.failure: str | None = None
        self._execution: HostedExecution | None = None

    @property
    def alive(self) -> bool:
        return self.failure is None

    @property
    def container(self) -> Any:
        """The NPU's container, for its exit state once it died under an execution."""
        return engine().containers.get(self.id)

    def begin(self, job: bytes, memory_limit_bytes: int = 0) -> HostedExecution:
        if self._execution is not None:
            raise RuntimeError("a hosted lease runs one execution")
        execution = self._execution = HostedExecution(self)
        threading.Thread(target=self._relay, args=(execution,), name="hosted-npu", daemon=True).start()
        self.send(RUN, run_body(job, memory_limit_bytes))
        return execution

    def send(self, kind: bytes, body: bytes = b"") -> None:
        try:
            self.link.send(kind, body)
        except OSError as exc:
            self._gone(f"the worker's NPU host stopped taking requests: {exc}")
            raise NpuGone(self.failure or "the NPU host is gone") from None

    def release(self, healthy: bool) -> None:
        with contextlib.suppress(OSError):  # the host is gone: it let go of the lease already
            self.link.send_json(RELEASE, {"healthy": healthy})
        self.link.close()

    def _relay(self, execution: HostedExecution) -> None:
        while True:
            try:
                kind, body = self.link.receive()
            except HostLinkClosed as exc:
                if self.failure is None:
                    self._gone(f"the connection to the worker's NPU host ended: {exc}")
                return
            item = KIND_ITEMS.get(kind)
            if item is None:
                self._gone(f"the worker's NPU host sent an unknown message {kind!r}")
                return
            if kind == GONE:
                self._gone(body.decode("utf-8", "replace"))
                return
            if kind == SERVER:
                event = json.loads(body)
                if event.get("type") == "spawned":
                    execution.spawned = event
                elif event.get("type") in ("exited", "refused"):
                    execution.exited = event
                execution.items.put(("server", event))
            else:
                execution.items.put((item, body))

    def _gone(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
            if self._execution is not None:
                self._execution.items.put(("gone", reason))
