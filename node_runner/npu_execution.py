"""Run one node execution in an NPU: the node's dedicated NPU, or a single-use container.

Either way the NPU's fork server (npu_image/flowkit/forkserver.py) starts the execution
as a fresh process; the runner sends the job, follows the run's control (pause, resume,
cancel: per execution), enforces the timeout and the frame limits, and turns what comes
back into an ``NpuOutcome``. A single-use container (``isolation: container``) comes
from the worker's warm pool when it holds one of the node's profile, or is started on
demand, and is removed afterwards; a dedicated NPU stays for the node's next execution
(node_runner.dedicated_npus). In a worker both come through its NPU host
(node_runner.npu_host). See ``wire`` for the framing.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from django.conf import settings

from control_unit.limits import NodeLimits
from node_runner.container_spec import npu_container_options
from node_runner.docker_engine import engine
from node_runner.egress_policy import require_egress_policy
from node_runner.npu_connection import NpuConnection, NpuGone
from node_runner.npu_frames import ExecutionFrames
from node_runner.npu_outcome import NodeError, NpuOutcome
from node_runner.ready_npu import ReadyNpu, remove_npu, start_npu
from node_runner.wire import FrameReader, NpuJob, ProtocolViolation, frame_limits
from secret_manager.masking import Masker
from trace_monitor.samples import NpuSample

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# How often a running node checks whether its run was paused, resumed or cancelled: a
# look at the run's state as published (control_unit.run_states), not a query.
CONTROL_POLL_S = 0.05
# How long a killed execution may take to be cleaned up before its NPU is replaced.
KILL_GRACE_S = 5.0
# How long the runner waits, after an execution answered, for its end to be reported.
END_WAIT_S = 1.0
# Returns what the run wants of its running nodes: "run", "pause" or "cancel" ("unknown"
# while the database cannot say: nothing changes).
RunControl = Callable[[], str]


class NpuObserver(Protocol):
    """Sees one execution as it happens (the trace monitor's NodeTrace)."""

    def started(self, container_id: str, image: str, runtime: str) -> None: ...

    def event(self, event: dict[str, Any]) -> None:
        """An event of the execution, checked and masked (started, log, log_dropped,
        result, error; see npu_frames)."""

    def sample(self, sample: NpuSample) -> None:
        """A resource sample; called on the sampler's thread."""

    def tick(self) -> None:
        """Called a few times a second on the runner's thread, for batched writes."""

    def ended(self, cpu_s: float, peak_memory_bytes: int) -> None:
        """The execution's processes are gone: their CPU time and peak memory in all."""


class _Unobserved:
    def started(self, container_id: str, image: str, runtime: str) -> None:
        pass

    def event(self, event: dict[str, Any]) -> None:
        pass

    def sample(self, sample: NpuSample) -> None:
        pass

    def tick(self) -> None:
        pass

    def ended(self, cpu_s: float, peak_memory_bytes: int) -> None:
        pass


def execute_in_npu(
    job: NpuJob,
    limits: NodeLimits,
    labels: dict[str, str],
    observer: NpuObserver | None = None,
    control: RunControl | None = None,
    npus: NpuSource | None = None,
    masker: Masker | None = None,
) -> NpuOutcome:
    """Run ``job`` in an NPU leased from ``npus``: the node's dedicated NPU (it stays
    for the node's next execution), or a single-use container removed afterwards (the
    default: one started for this execution). What the execution sends is masked with
    ``masker`` before ``observer`` or the outcome sees it."""
    if limits.network:
        require_egress_policy(engine())
        ensure_npu_network(engine())
    lease = (npus or SingleUseNpus()).lease(limits, labels)
    healthy = False
    try:
        outcome, healthy = _drive(
            lease.connection, job, limits, observer or _Unobserved(), masker or Masker(()), control
        )
        return outcome
    finally:
        lease.release(healthy=healthy)


class Execution(Protocol):
    """One execution seen from the runner (npu_connection.ExecutionChannel, or its
    proxy in a pool process, node_runner.hosted_npus): its queue of (kind, value)
    items, and the server's ``spawned`` and ``exited`` events once seen."""

    items: queue.SimpleQueue[tuple[str, Any]]
    spawned: dict[str, Any] | None
    exited: dict[str, Any] | None

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def kill(self) -> None: ...


class Connection(Protocol):
    """An NPU's fork server, taking executions (npu_connection.NpuConnection, or its proxy)."""

    @property
    def id(self) -> str: ...

    @property
    def container(self) -> Any: ...

    @property
    def alive(self) -> bool: ...

    def begin(self, job: bytes, memory_limit_bytes: int = 0) -> Execution: ...


class NpuLease(Protocol):
    """An NPU lent to one execution; ``release`` gives it back (healthy: it may serve
    again) or has it removed."""

    @property
    def connection(self) -> Connection: ...

    def release(self, *, healthy: bool) -> None: ...


class NpuSource(Protocol):
    """Where an execution gets its NPU: the node's dedicated NPU (node_runner.dedicated_npus),
    a single-use container (``SingleUseNpus``), or either through the worker's NPU host
    (node_runner.hosted_npus)."""

    def lease(self, limits: NodeLimits, labels: dict[str, str]) -> NpuLease: ...


class WarmNpuSource(Protocol):
    """Where started NPUs wait for a node (node_runner.warm_pool.WarmPool)."""

    def take(self, limits: NodeLimits) -> ReadyNpu | None:
        """A waiting NPU whose container fits ``limits``, never handed out before; or
        None, and the caller starts one."""

    def retire(self, container: Any) -> None:
        """Remove a used NPU's container, off the node's path (its outcome is known)."""


@dataclass
class _SingleUseLease:
    connection: NpuConnection
    pool: WarmNpuSource | None

    def release(self, *, healthy: bool) -> None:
        self.connection.close()
        if self.pool is not None:
            self.pool.retire(self.connection.container)
        else:
            remove_npu(self.connection.container)


@dataclass(frozen=True)
class SingleUseNpus:
    """A container per execution (``isolation: container``): a waiting one of the
    node's profile from ``pool`` when it holds one, else one started now; removed once
    the execution's outcome is known."""

    pool: WarmNpuSource | None = None

    def lease(self, limits: NodeLimits, labels: dict[str, str]) -> _SingleUseLease:
        npu = self.pool.take(limits) if self.pool is not None else None
        if npu is None:
            npu = start_npu(
                engine(),
                npu_container_options(
                    image=settings.FLOWKIT_NPU_IMAGE,
                    limits=limits.container(),
                    labels=labels,
                    runtime=settings.FLOWKIT_NPU_RUNTIME,
                    network_name=settings.FLOWKIT_NPU_NETWORK,
                ),
            )
        return _SingleUseLease(NpuConnection(npu), self.pool)


class NodeTimedOut(Exception):
    pass


class NodeCancelled(Exception):
    pass


class _Clock:
    """The node's deadline, stopped while its execution is frozen (a paused run's
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
    """Follows the run's control state (pause, resume, cancel) while a node runs. A
    pause stops every process of this execution (SIGSTOP, by the NPU's fork server),
    not the NPU: another run's execution of the same node goes on."""

    def __init__(self, execution: Execution, clock: _Clock, control: RunControl | None) -> None:
        self._execution = execution
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
        if wanted == "pause" and not self._clock.frozen:
            self._execution.pause()
            self._clock.freeze()
        elif wanted == "run" and self._clock.frozen:
            self._execution.resume()
            self._clock.thaw()


@dataclass
class _Usage:
    """Turns the fork server's usage readings of one execution into samples."""

    memory_limit_bytes: int
    net_base: tuple[int | None, int | None] = (None, None)
    previous: tuple[float, float] | None = None  # (wall time, cpu seconds)

    def sample(self, event: dict[str, Any]) -> NpuSample:
        at, cpu_s = float(event.get("ts") or time.time()), float(event.get("cpu_s") or 0.0)
        cpu_percent = None
        if self.previous is not None and at > self.previous[0]:
            cpu_percent = round(max(0.0, cpu_s - self.previous[1]) / (at - self.previous[0]) * 100.0, 2)
        self.previous = (at, cpu_s)
        rx, tx = event.get("net_rx_bytes"), event.get("net_tx_bytes")
        return NpuSample(
            at=datetime.fromtimestamp(at, UTC),
            cpu_percent=cpu_percent,
            memory_bytes=int(event.get("rss_bytes") or 0),
            memory_limit_bytes=self.memory_limit_bytes,
            net_rx_bytes=_since(rx, self.net_base[0]),
            net_tx_bytes=_since(tx, self.net_base[1]),
            pids=int(event.get("pids") or 0),
        )


def _since(value: Any, base: Any) -> int | None:
    if type(value) is not int:
        return None
    return value - base if type(base) is int else value


def _drive(
    connection: Connection,
    job: NpuJob,
    limits: NodeLimits,
    observer: NpuObserver,
    masker: Masker,
    control: RunControl | None,
) -> tuple[NpuOutcome, bool]:
    """Run one execution in ``connection``'s NPU; its outcome, and whether the NPU may
    serve another execution."""
    outcome = NpuOutcome(container_id=connection.id)
    reader = ExecutionFrames(limits, masker, observer, outcome)
    started = time.monotonic()
    clock = _Clock(limits.timeout_s)
    memory_limit = limits.memory_mb * MIB
    execution: Execution | None = None
    healthy = True
    try:
        # The job first: the node's code starts while the runner does its bookkeeping.
        execution = connection.begin(job.encode(limits), memory_limit if limits.concurrency > 1 else 0)
        observer.started(connection.id, settings.FLOWKIT_NPU_IMAGE, settings.FLOWKIT_NPU_RUNTIME)
        answered = _read_events(
            execution, clock, _Controller(execution, clock, control), limits, outcome, reader, observer
        )
        if answered:
            _await_end(execution)
            _account_for_oom(execution, limits, outcome)
    except NodeTimedOut:
        outcome.error = NodeError(
            "NodeTimeout",
            f"the node did not finish within its {limits.timeout_s:g} s timeout and was stopped",
        )
        healthy = stop_execution(execution)
    except NodeCancelled:
        outcome.error = NodeError("NodeCancelled", "the run was cancelled; the node was stopped")
        healthy = stop_execution(execution)
    except ProtocolViolation as exc:
        outcome.error = NodeError("ProtocolViolation", str(exc))
        stop_execution(execution)
        healthy = False
    except NpuGone as exc:
        outcome.error = NodeError("NpuCrashed", f"the NPU stopped: {exc}")
        _account_for_npu_death(connection, limits, outcome)
        healthy = False
    finally:
        outcome.duration_s = time.monotonic() - started
        reader.close()
    ended = execution.exited if execution is not None else None
    if ended is not None and ended.get("type") == "exited":
        observer.ended(float(ended.get("cpu_s") or 0.0), int(ended.get("peak_rss_bytes") or 0))
    if outcome.error is not None and outcome.error.error_type == "OutOfMemory":
        healthy = False  # the kernel chose what to kill: start the next execution afresh
    return outcome, healthy and connection.alive


def _read_events(
    execution: Execution,
    clock: _Clock,
    controller: _Controller,
    limits: NodeLimits,
    outcome: NpuOutcome,
    reader: ExecutionFrames,
    observer: NpuObserver,
) -> bool:
    """Read the execution's events until its terminal one (True) or its end without
    one (False: ``outcome.error`` says why)."""
    max_frame, max_total = frame_limits(limits)
    frames = FrameReader(max_frame)
    usage = _Usage(limits.memory_mb * MIB)
    received = 0
    while True:
        controller.poll()
        observer.tick()
        if clock.left() <= 0:
            raise NodeTimedOut
        try:
            kind, value = execution.items.get(timeout=max(0.001, min(clock.left(), CONTROL_POLL_S)))
        except queue.Empty:
            continue
        if kind == "gone":
            raise NpuGone(value)
        if kind == "data":
            received += len(value)
            if received > max_total:
                raise ProtocolViolation(f"the NPU sent more than {max_total:,} bytes")
            for event in frames.feed(value):
                if reader.apply(event):
                    outcome.answered = True
            if outcome.answered:
                # The outcome is known; the server cleans up after the execution on its
                # own, and the next execution of the node waits for that, not this one.
                return True
            continue
        event = value
        if event["type"] == "spawned":
            usage.net_base = (event.get("net_rx_bytes"), event.get("net_tx_bytes"))
        elif event["type"] == "usage":
            observer.sample(usage.sample(event))
        elif event["type"] == "refused":
            outcome.error = NodeError(
                "NpuUnavailable", str(event.get("message", "the NPU refused the execution"))
            )
            return False
        elif event["type"] == "exited":
            for late in frames.finish():
                if reader.apply(late):
                    outcome.answered = True
            if outcome.answered:
                _account_for_oom(execution, limits, outcome)
                return True
            _account_for_exit(execution, event, limits, outcome)
            return False


def _await_end(execution: Execution) -> None:
    """After its answer, wait for the server to report the execution's end (its
    processes killed, its files gone: milliseconds), for its figures in all and its
    count of OOM kills. An NPU that does not say so in time is not waited for."""
    deadline = time.monotonic() + END_WAIT_S
    while execution.exited is None and (left := deadline - time.monotonic()) > 0:
        try:
            kind, _ = execution.items.get(timeout=left)
        except queue.Empty:
            return
        if kind == "gone":
            return


def _account_for_oom(execution: Execution, limits: NodeLimits, outcome: NpuOutcome) -> None:
    """A node whose child processes the OOM killer took is reported as such even though
    its runtime survived to answer: the NPU's count of OOM kills rose during it, as the
    fork server counted it when the execution started and ended. (What the answer itself
    says is not read: the node's code could have written it.)"""
    before = (execution.spawned or {}).get("oom_kills")
    after = (execution.exited or {}).get("oom_kills")
    rose = type(before) is int and type(after) is int and after > before
    if rose and (outcome.error is None or outcome.error.error_type == "NpuCrashed"):
        outcome.error = _out_of_memory(limits)


def _account_for_exit(
    execution: Execution, exited: dict[str, Any], limits: NodeLimits, outcome: NpuOutcome
) -> None:
    """The execution's process ended without answering: why."""
    before = (execution.spawned or {}).get("oom_kills")
    after = exited.get("oom_kills")
    killed_for_memory = exited.get("memory_exceeded") is True or (
        type(before) is int and type(after) is int and after > before
    )
    code, signum = exited.get("code"), exited.get("signal")
    outcome.exit_code = code if type(code) is int else (128 + signum if type(signum) is int else None)
    if killed_for_memory:
        outcome.error = _out_of_memory(limits)
    else:
        outcome.error = NodeError(
            "NpuCrashed",
            f"the node's process exited without reporting a result (exit code {outcome.exit_code})",
        )


def _account_for_npu_death(connection: Connection, limits: NodeLimits, outcome: NpuOutcome) -> None:
    """The whole NPU ended under the execution: the engine says whether for memory."""
    try:
        container = connection.container
        # A connection may break with its container still up: not worth a long wait.
        outcome.exit_code = int(container.wait(timeout=3).get("StatusCode", -1))
        container.reload()
        oom_killed = bool(container.attrs["State"].get("OOMKilled"))
    except Exception:
        log.warning("could not read the exit state of NPU %s", connection.id[:12], exc_info=True)
        return
    if oom_killed:
        outcome.error = _out_of_memory(limits)
    elif outcome.error is not None:
        outcome.error.message += f" (exit code {outcome.exit_code})"
        if outcome.exit_code == 137 and settings.FLOWKIT_NPU_RUNTIME == "runsc":
            # The engine does not flag gVisor sandboxes killed by the kernel for their
            # memory limit (google/gvisor#2433): say what it may have been.
            outcome.error.message += (
                "; under gVisor this is also how the whole NPU ends when the kernel kills it "
                f"for going over its memory limit {limits.memory_mb} MiB"
            )


def _out_of_memory(limits: NodeLimits) -> NodeError:
    return NodeError(
        "OutOfMemory",
        f"the node was killed by the out-of-memory killer (memory limit {limits.memory_mb} MiB)",
    )


def stop_execution(execution: Execution | None) -> bool:
    """Kill every process of the execution and wait for the server to have cleaned up
    after it; False when it could not (the NPU is then replaced)."""
    if execution is None:
        return False
    try:
        execution.kill()
    except NpuGone:
        return False
    deadline = time.monotonic() + KILL_GRACE_S
    while execution.exited is None and time.monotonic() < deadline:
        try:
            kind, _ = execution.items.get(timeout=max(0.001, deadline - time.monotonic()))
        except queue.Empty:
            break
        if kind == "gone":
            return False
    return execution.exited is not None


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
