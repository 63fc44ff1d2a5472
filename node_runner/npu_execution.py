"""Run one node in one fresh, hardened NPU container, and always remove it.

The job goes in on the container's stdin and the events come back on its
stdout; see ``wire`` for the framing and npu_image/flowkit/runtime.py for the
other end.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker.errors
from django.conf import settings

from node_runner.container_spec import npu_container_options
from node_runner.docker_engine import engine
from node_runner.limits import NodeLimits
from node_runner.wire import (
    STDOUT,
    TERMINAL_TYPES,
    FrameReader,
    NpuJob,
    ProtocolViolation,
    StreamDemuxer,
    frame_limits,
)

log = logging.getLogger(__name__)

MAX_STDERR_BYTES = 64 * 1024
EventSink = Callable[[dict[str, Any]], None]


class NpuUnavailable(Exception):
    """No NPU could be started (engine down, image missing)."""


@dataclass
class NodeError:
    error_type: str
    message: str
    traceback: str = ""
    port: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class NpuOutcome:
    container_id: str
    next_nodes: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    status_message: str = ""
    error: NodeError | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    dropped_log_lines: int = 0
    dropped_log_bytes: int = 0
    exit_code: int | None = None
    duration_s: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.error is None


def execute_in_npu(
    job: NpuJob,
    limits: NodeLimits,
    labels: dict[str, str],
    on_event: EventSink | None = None,
) -> NpuOutcome:
    client = engine()
    if limits.network:
        _ensure_npu_network(client)
    options = npu_container_options(
        image=settings.FLOWKIT_NPU_IMAGE,
        limits=limits,
        labels=labels,
        runtime=settings.FLOWKIT_NPU_RUNTIME,
        network_name=settings.FLOWKIT_NPU_NETWORK,
    )
    try:
        container = client.containers.create(**options)
    except docker.errors.ImageNotFound:
        raise NpuUnavailable(
            f"NPU image {settings.FLOWKIT_NPU_IMAGE} is not built; run `flowkit npu build`"
        ) from None
    except docker.errors.DockerException as exc:
        raise NpuUnavailable(f"the Docker engine could not create an NPU: {exc}") from None
    try:
        return _drive(container, job, limits, on_event or (lambda event: None))
    finally:
        _remove(container)


def _drive(container: Any, job: NpuJob, limits: NodeLimits, on_event: EventSink) -> NpuOutcome:
    outcome = NpuOutcome(container_id=container.id)
    attach = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    sock: socket.socket = attach._sock
    started = time.monotonic()
    try:
        container.start()
        deadline = started + limits.timeout_s
        _read_events(sock, job.encode(limits), deadline, limits, outcome, on_event)
    except TimeoutError:
        _kill(container)
        outcome.error = NodeError(
            "NodeTimeout",
            f"the node did not finish within its {limits.timeout_s:g} s timeout and was stopped",
        )
    except ProtocolViolation as exc:
        _kill(container)
        outcome.error = NodeError("ProtocolViolation", str(exc))
    finally:
        outcome.duration_s = time.monotonic() - started
        sock.close()
    if outcome.error is None or outcome.error.error_type not in ("NodeTimeout", "ProtocolViolation"):
        _account_for_exit(container, limits, outcome)
    return outcome


def _read_events(
    sock: socket.socket,
    payload: bytes,
    deadline: float,
    limits: NodeLimits,
    outcome: NpuOutcome,
    on_event: EventSink,
) -> None:
    max_frame, max_total = frame_limits(limits)
    demuxer, frames = StreamDemuxer(), FrameReader(max_frame)
    stderr = bytearray()
    received = 0
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    terminal: dict[str, Any] | None = None
    while True:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        data = sock.recv(256 * 1024)
        if not data:
            break
        received += len(data)
        if received > max_total:
            raise ProtocolViolation(f"the NPU sent more than {max_total:,} bytes")
        for stream, chunk in demuxer.feed(data):
            if stream != STDOUT:
                stderr += chunk[: MAX_STDERR_BYTES - len(stderr)]
                continue
            for event in frames.feed(chunk):
                if terminal is not None:
                    raise ProtocolViolation("the NPU sent events after its result")
                terminal = _apply(event, outcome, on_event)
    for event in frames.finish():
        terminal = terminal or _apply(event, outcome, on_event)
    if terminal is None:
        # The runtime died before answering; _account_for_exit says why.
        detail = stderr.decode("utf-8", "replace").strip()
        outcome.error = NodeError("NpuCrashed", "the NPU exited without reporting a result", detail)


def _apply(event: dict[str, Any], outcome: NpuOutcome, on_event: EventSink) -> dict[str, Any] | None:
    kind = event["type"]
    on_event(event)
    if kind == "log":
        outcome.logs.append(
            {key: event.get(key) for key in ("ts", "level", "stream", "message", "truncated") if key in event}
        )
    elif kind == "log_dropped":
        outcome.dropped_log_lines = int(event.get("lines", 0))
        outcome.dropped_log_bytes = int(event.get("bytes", 0))
    elif kind == "result":
        outcome.next_nodes = list(event.get("next_nodes") or [])
        outcome.outputs = dict(event.get("outputs") or {})
        outcome.status_message = str(event.get("status_message") or "")
    elif kind == "error":
        outcome.error = NodeError(
            error_type=str(event.get("error_type", "Error")),
            message=str(event.get("message", "")),
            traceback=str(event.get("traceback", "")),
            port=event.get("port"),
            line=event.get("line"),
        )
    return event if kind in TERMINAL_TYPES else None


def _account_for_exit(container: Any, limits: NodeLimits, outcome: NpuOutcome) -> None:
    try:
        outcome.exit_code = int(container.wait(timeout=10).get("StatusCode", -1))
        container.reload()
        oom_killed = bool(container.attrs["State"].get("OOMKilled"))
    except Exception:
        log.warning("could not read the exit state of NPU %s", container.id[:12], exc_info=True)
        return
    if oom_killed and (outcome.error is None or outcome.error.error_type == "NpuCrashed"):
        outcome.error = NodeError(
            "OutOfMemory",
            f"the node was killed by the out-of-memory killer (memory limit {limits.memory_mb} MiB)",
        )
    elif outcome.error is not None and outcome.error.error_type == "NpuCrashed":
        outcome.error.message += f" (exit code {outcome.exit_code})"


def _kill(container: Any) -> None:
    # Already gone is fine: the removal that follows is what matters.
    with contextlib.suppress(docker.errors.DockerException):
        container.kill()


def _remove(container: Any) -> None:
    try:
        container.remove(force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.DockerException:
        # The reaper (`flowkit npu reap`) finds it by its labels later.
        log.exception("could not remove NPU container %s", container.id[:12])


def _ensure_npu_network(client: Any) -> None:
    name = settings.FLOWKIT_NPU_NETWORK
    if client.networks.list(names=[name]):
        return
    # No container-to-container traffic: NPUs with network access still cannot
    # reach each other.
    client.networks.create(
        name,
        driver="bridge",
        options={"com.docker.network.bridge.enable_icc": "false"},
        labels={"flowkit.role": "npu-network"},
    )
