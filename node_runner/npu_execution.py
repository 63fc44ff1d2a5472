"""Run one node in one fresh, hardened NPU container, and always remove it.

The container comes from this worker process's warm pool when it holds one of the
node's profile, or is started on demand. The job goes in on the container's stdin
and the events come back on its stdout; see ``wire`` for the framing and
npu_image/flowkit/runtime.py for the other end.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import docker.errors
from django.conf import settings

from node_runner.container_spec import npu_container_options
from node_runner.docker_engine import engine
from node_runner.limits import NodeLimits
from node_runner.ready_npu import ReadyNpu, close_connection, remove_npu, start_npu
from node_runner.resource_sampler import NpuSample, ResourceSampler
from node_runner.storable import clean, clean_text, unstorable_path
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
# How often a running node checks whether its run was paused, resumed or cancelled.
CONTROL_POLL_S = 0.2
# Returns what the run wants of its running nodes: "run", "pause" or "cancel" ("unknown"
# while the database cannot say: nothing changes).
RunControl = Callable[[], str]


class NpuObserver(Protocol):
    """Sees one execution as it happens (the trace monitor's NodeTrace)."""

    def started(self, container_id: str, image: str, runtime: str) -> None: ...

    def event(self, event: dict[str, Any]) -> None:
        """An event from the NPU (started, log, log_dropped, result, error)."""

    def sample(self, sample: NpuSample) -> None:
        """A resource sample; called on the sampler's thread."""

    def tick(self) -> None:
        """Called a few times a second on the runner's thread, for batched writes."""


class _Unobserved:
    def started(self, container_id: str, image: str, runtime: str) -> None:
        pass

    def event(self, event: dict[str, Any]) -> None:
        pass

    def sample(self, sample: NpuSample) -> None:
        pass

    def tick(self) -> None:
        pass


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
    observer: NpuObserver | None = None,
    control: RunControl | None = None,
    pool: WarmNpuSource | None = None,
) -> NpuOutcome:
    client = engine()
    if limits.network:
        ensure_npu_network(client)
    npu = pool.take(limits) if pool is not None else None
    if npu is None:
        npu = start_npu(
            client,
            npu_container_options(
                image=settings.FLOWKIT_NPU_IMAGE,
                limits=limits,
                labels=labels,
                runtime=settings.FLOWKIT_NPU_RUNTIME,
                network_name=settings.FLOWKIT_NPU_NETWORK,
            ),
        )
    observer = observer or _Unobserved()
    sampler = ResourceSampler(client.api, npu.id, observer.sample)
    try:
        return _drive(npu, job, limits, observer, control, sampler)
    finally:
        sampler.stop()
        remove_npu(npu.container)
        # Removing the container ends its stats stream; every sample is in after this.
        sampler.join(timeout_s=2.0)


class WarmNpuSource(Protocol):
    """Where started NPUs wait for a node (node_runner.warm_pool.WarmPool)."""

    def take(self, limits: NodeLimits) -> ReadyNpu | None:
        """A waiting NPU whose container fits ``limits``, never handed out before; or
        None, and the caller starts one."""


class NodeTimedOut(Exception):
    pass


class NodeCancelled(Exception):
    pass


class _Clock:
    """The node's deadline, stopped while its container is frozen (a paused run's
    time does not count against the node's timeout)."""

    def __init__(self, timeout_s: float) -> None:
        self.remaining = timeout_s
        self.frozen = False
        self._since = time.monotonic()

    def left(self) -> float:
        if self.frozen:
            return self.remaining
        return self.remaining - (time.monotonic() - self._since)

    def freeze(self) -> None:
        self.remaining = self.left()
        self.frozen = True

    def thaw(self) -> None:
        self._since = time.monotonic()
        self.frozen = False


class _Controller:
    """Follows the run's control state (pause, resume, cancel) while a node runs."""

    def __init__(self, container: Any, clock: _Clock, control: RunControl | None) -> None:
        self._container = container
        self._clock = clock
        self._control = control
        self._next_poll = 0.0

    def poll(self) -> None:
        if self._control is None or time.monotonic() < self._next_poll:
            return
        self._next_poll = time.monotonic() + CONTROL_POLL_S
        wanted = self._control()
        if wanted == "cancel":
            raise NodeCancelled
        # An engine refusal here means the container just exited: its result follows.
        if wanted == "pause" and not self._clock.frozen:
            with contextlib.suppress(docker.errors.APIError):
                self._container.pause()  # the cgroup freezer: the node's CPU time stops
                self._clock.freeze()
        elif wanted == "run" and self._clock.frozen:
            with contextlib.suppress(docker.errors.APIError):
                self._container.unpause()
            self._clock.thaw()


def _drive(
    npu: ReadyNpu,
    job: NpuJob,
    limits: NodeLimits,
    observer: NpuObserver,
    control: RunControl | None,
    sampler: ResourceSampler,
) -> NpuOutcome:
    container = npu.container
    outcome = NpuOutcome(container_id=container.id)
    started = time.monotonic()
    clock = _Clock(limits.timeout_s)
    stopped = False
    try:
        # The job first: the node's code starts while the runner does its bookkeeping
        # (the trace's writes, the stats stream). Nothing is read before started().
        _send_job(npu.sock, job.encode(limits), clock)
        sampler.start()
        observer.started(container.id, settings.FLOWKIT_NPU_IMAGE, settings.FLOWKIT_NPU_RUNTIME)
        _read_events(npu.sock, clock, _Controller(container, clock, control), limits, outcome, observer)
    except NodeTimedOut:
        stopped = True
        outcome.error = NodeError(
            "NodeTimeout",
            f"the node did not finish within its {limits.timeout_s:g} s timeout and was stopped",
        )
    except NodeCancelled:
        stopped = True
        outcome.error = NodeError("NodeCancelled", "the run was cancelled; the node was stopped")
    except ProtocolViolation as exc:
        stopped = True
        outcome.error = NodeError("ProtocolViolation", str(exc))
    finally:
        outcome.duration_s = time.monotonic() - started
        close_connection(npu)
    if stopped:
        _kill(container)
    else:
        _account_for_exit(container, limits, outcome)
    return outcome


def _send_job(sock: socket.socket, payload: bytes, clock: _Clock) -> None:
    sock.settimeout(max(0.001, clock.left()))
    try:
        sock.sendall(payload)
    except TimeoutError:
        raise NodeTimedOut from None
    # End of stdin: the runtime reads its job to the end before it starts the node.
    sock.shutdown(socket.SHUT_WR)


def _read_events(
    sock: socket.socket,
    clock: _Clock,
    controller: _Controller,
    limits: NodeLimits,
    outcome: NpuOutcome,
    observer: NpuObserver,
) -> None:
    max_frame, max_total = frame_limits(limits)
    demuxer, frames = StreamDemuxer(), FrameReader(max_frame)
    stderr = bytearray()
    received = 0
    terminal: dict[str, Any] | None = None
    while True:
        controller.poll()
        observer.tick()
        if clock.left() <= 0:
            raise NodeTimedOut
        sock.settimeout(max(0.001, min(clock.left(), CONTROL_POLL_S)))
        try:
            data = sock.recv(256 * 1024)
        except TimeoutError:
            continue
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
                terminal = _apply(event, outcome, observer)
    for event in frames.finish():
        terminal = terminal or _apply(event, outcome, observer)
    if terminal is None:
        # The runtime died before answering; _account_for_exit says why.
        detail = stderr.decode("utf-8", "replace").strip()
        outcome.error = NodeError("NpuCrashed", "the NPU exited without reporting a result", detail)


def _apply(event: dict[str, Any], outcome: NpuOutcome, observer: NpuObserver) -> dict[str, Any] | None:
    kind = event["type"]
    if kind != "result":
        event = clean(event)
    observer.event(event)
    if kind == "log":
        outcome.logs.append(
            {key: event.get(key) for key in ("ts", "level", "stream", "message", "truncated") if key in event}
        )
    elif kind == "log_dropped":
        outcome.dropped_log_lines = int(event.get("lines", 0))
        outcome.dropped_log_bytes = int(event.get("bytes", 0))
    elif kind == "result":
        outcome.next_nodes = [clean_text(str(name)) for name in event.get("next_nodes") or []]
        outcome.outputs = dict(event.get("outputs") or {})
        outcome.status_message = clean_text(str(event.get("status_message") or ""))
        for port, value in outcome.outputs.items():
            where = unstorable_path(value)
            if where is not None or unstorable_path(port) is not None:
                outcome.outputs = {}
                outcome.error = NodeError(
                    "UnstorableOutput",
                    f"output {clean_text(port)!r} holds a NUL character or an unpaired surrogate"
                    f"{' at ' + where if where else ''}, which cannot be stored; encode binary data "
                    "(for example base64) before returning it",
                    port=clean_text(port),
                )
                break
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


def ensure_npu_network(client: Any) -> Any:
    """The bridge network of NPUs with network access, created on first use."""
    name = settings.FLOWKIT_NPU_NETWORK
    existing = client.networks.list(names=[name])
    if existing:
        return existing[0]
    # No container-to-container traffic: NPUs with network access still cannot
    # reach each other. The bridge gets a fixed name so that the host's egress
    # policy (deploy/bootstrap/lib.sh ensure_npu_egress_policy) matches it even when
    # the network is created after the policy was installed.
    return client.networks.create(
        name,
        driver="bridge",
        options={
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.name": npu_bridge_name(name),
        },
        labels={"flowkit.role": "npu-network"},
    )


def npu_bridge_name(network_name: str) -> str:
    """The host interface of the NPU network (Linux allows 15 characters); keep in
    step with npu_bridge_name in deploy/bootstrap/lib.sh."""
    return f"fk-{network_name}"[:15]
