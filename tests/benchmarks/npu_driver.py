"""A dedicated NPU driven directly, without Celery, the database or a pipeline: what
an execution costs once the node's NPU waits for it (issue 14's "NPU start" and "NPU
round trip"), and the floor under both, the attach stream of a container as hardened.

The NPU is what the runner starts (node_runner.container_spec.npu_container_options,
node_runner.ready_npu.start_npu) wrapped in the runner's own connection
(node_runner.npu_connection.NpuConnection); each job goes through ``begin`` and comes
back through its execution's queue, as node_runner.npu_execution reads it. One job at a
time: the next starts once the server said the previous one is cleaned up (``exited``),
as the next execution of a node waits for its slot, and BETWEEN_JOBS_S later, as in a
run, where the engine's own part between two executions is tens of milliseconds: the
NPU then waits with its next execution's process forked and prepared ahead (a spare).

Every moment is ``time.time()``: on the host for what the runner sees, inside the NPU
for what the node and the runtime stamp. A container shares the host's clock (under
gVisor the sandbox's clock follows the host's; a skew would show as a negative part).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import docker
from django.conf import settings

from control_unit.limits import NodeLimits
from node_runner.container_spec import npu_container_options
from node_runner.npu_connection import NpuConnection
from node_runner.ready_npu import discard, start_npu
from node_runner.wire import PROTOCOL_VERSION, STDOUT, FrameReader, NpuJob, StreamDemuxer, frame_limits
from tests.benchmarks.timings import CODE_STARTED_PORT

CODE_FINISHED_PORT = "code_finished"
# The chain's fibo(10) node (engine_runs.FIBO_NODE), which also stamps the end of its
# main(): the result's way back is then apart from the node's own work.
STAMPED_FIBO_NODE = f"""import time
{CODE_STARTED_PORT} = time.time()
from flowkit.node import Node
node = Node()
def fibo(n):
    return n if n < 2 else fibo(n - 1) + fibo(n - 2)
def main():
    outputs = {{"value": fibo(10), "{CODE_STARTED_PORT}": {CODE_STARTED_PORT}}}
    outputs["{CODE_FINISHED_PORT}"] = time.time()
    return [], outputs, "fibo(10)"
node.register_main(main)
node.run()
"""
# What the start is made of, timed inside an execution (a fork of the server, with its
# memory): the page faults the execution took before its code's first line (a fresh
# fork copies each page it writes) and what one such copy costs, fork -> the child's
# first instruction, the seccomp filter each execution installs (stacked once more
# here), the two output-capture threads, and parsing and compiling the node's code.
PARTS_PROBE_NODE = """import resource
faults_before_code = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
import os, threading, time
from flowkit import _seccomp
from flowkit.node import Node
node = Node()
def fork_ms():
    read_end, write_end = os.pipe()
    forked = time.time()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, repr(time.time()).encode())
        os._exit(0)
    os.close(write_end)
    child = float(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(pid, 0)
    return (child - forked) * 1000
def copy_on_write_us(pages=2048):
    memory = bytearray(pages * 4096)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        started = time.perf_counter()
        for offset in range(0, len(memory), 4096):
            memory[offset] = 1
        os.write(write_end, repr((time.perf_counter() - started) / pages * 1e6).encode())
        os._exit(0)
    os.close(write_end)
    each = float(os.read(read_end, 64))
    os.close(read_end)
    os.waitpid(pid, 0)
    return each
def timed_ms(action):
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000
def two_threads():
    threads = [threading.Thread(target=lambda: None) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
SOURCE = node.get_inputs()["source"]
def main():
    return [], {
        "faults_before_code": faults_before_code,
        "copy_on_write_us": copy_on_write_us(),
        "fork_ms": sorted(fork_ms() for _ in range(5))[2],
        "seccomp_ms": timed_ms(_seccomp.install),
        "threads_ms": timed_ms(two_threads),
        "compile_ms": timed_ms(lambda: compile(SOURCE, "<node>", "exec")),
    }, "parts"
node.register_main(main)
node.run()
"""
PART_NAMES = ("faults_before_code", "copy_on_write_us", "fork_ms", "seccomp_ms", "threads_ms", "compile_ms")
JOB_WAIT_S = 60.0
BETWEEN_JOBS_S = 0.02
# The floor: a process in a container as hardened as an NPU that sends back each line it
# reads with the moment it read it, over the same kind of attach stream.
# It opens with the fork server's "ready", which the runner's start_npu waits for.
ECHO_PROGRAM = """import json, os, sys, time
ready = json.dumps({"type": "ready", "protocol": int(sys.argv[1])}).encode()
os.write(1, b"@ %d\\n" % len(ready) + ready)
pending = b""
while True:
    data = os.read(0, 65536)
    if not data:
        break
    pending += data
    while b"\\n" in pending:
        line, _, pending = pending.partition(b"\\n")
        os.write(1, line + b" " + repr(time.time()).encode() + b"\\n")
"""


@dataclass(frozen=True)
class ExecutionMoments:
    """One job, host moments (H) and NPU moments (N), all ``time.time()``."""

    sent: float  # H: just before the run request and the job are written
    spawned: float  # H: the server's "spawned" arrived (it forked the execution)
    runtime_started: float  # N: the execution's runtime sends "started" (job parsed, output captured)
    code_started: float  # N: the node's first line
    code_finished: float  # N: main() is about to return
    result_sent: float  # N: the runtime writes its "result" frame
    result: float  # H: the runner parsed the result frame
    exited: float  # H: the server has cleaned up after the execution

    @property
    def start_s(self) -> float:
        """Job handed to the waiting NPU -> the node's first line runs."""
        return self.code_started - self.sent

    @property
    def round_trip_s(self) -> float:
        """Job sent -> result received."""
        return self.result - self.sent

    @property
    def to_runtime_s(self) -> float:
        """Sent -> the execution's runtime is up: the attach stream in, the server's
        read and fork, the job read, the isolation (seccomp, workdir), output capture."""
        return self.runtime_started - self.sent

    @property
    def runtime_to_code_s(self) -> float:
        """Runtime up -> the node's first line: parse and compile the node's code."""
        return self.code_started - self.runtime_started

    @property
    def node_s(self) -> float:
        """The node's own work, fibo(10) with the SDK's main()."""
        return self.code_finished - self.code_started

    @property
    def result_out_s(self) -> float:
        """main() returned -> result frame written: check the result, stop capturing."""
        return self.result_sent - self.code_finished

    @property
    def result_back_s(self) -> float:
        """Result frame written -> parsed by the runner: the server's relay, the attach
        stream out, the connection's reader thread and the execution's queue."""
        return self.result - self.result_sent

    @property
    def cleanup_s(self) -> float:
        """Result received -> the server reports the execution cleaned up (off the
        round trip: the next execution of the node waits for it)."""
        return self.exited - self.result


@dataclass(frozen=True)
class EchoMoments:
    sent: float  # H
    read: float  # in the container: the line was read
    back: float  # H: the echo arrived

    @property
    def in_s(self) -> float:
        return self.read - self.sent

    @property
    def out_s(self) -> float:
        return self.back - self.read

    @property
    def round_trip_s(self) -> float:
        return self.back - self.sent


def npu_options(runtime: str, purpose: str, **overrides: Any) -> dict[str, Any]:
    """A dedicated NPU's create options as the runner makes them, default limits."""
    options = npu_container_options(
        image=settings.FLOWKIT_NPU_IMAGE,
        limits=NodeLimits.defaults().container(),
        labels={"flowkit.bench": purpose},
        runtime=runtime,
        network_name=settings.FLOWKIT_NPU_NETWORK,
    )
    return {**options, **overrides}


@contextmanager
def dedicated_npu(runtime: str) -> Iterator[NpuConnection]:
    client = docker.from_env(timeout=60)
    connection = NpuConnection(start_npu(client, npu_options(runtime, "npu-direct")))
    try:
        yield connection
    finally:
        connection.close()
        discard(connection.npu)


class NpuFailed(Exception):
    """The NPU could not run the benchmark's executions: reported, not a figure."""


@dataclass(frozen=True)
class DrivenNpu:
    executions: list[ExecutionMoments]
    # Each probe's PART_NAMES, in milliseconds, measured inside the NPU.
    parts: list[dict[str, float]]


def drive_npu(runtime: str, jobs: int, warm_up: int, probes: int) -> DrivenNpu:
    """``warm_up`` then ``jobs`` fibo(10) executions, one at a time, in one NPU, then
    ``probes`` executions that time the start's parts from inside."""
    limits = NodeLimits.defaults()
    job = NpuJob(node_id="fibo", label="fibo", code=STAMPED_FIBO_NODE, inputs={}, secrets={}).encode(limits)
    probe = NpuJob(
        node_id="probe",
        label="probe",
        code=PARTS_PROBE_NODE,
        inputs={"source": STAMPED_FIBO_NODE},
        secrets={},
    ).encode(limits)
    executions: list[ExecutionMoments] = []
    parts: list[dict[str, float]] = []
    with dedicated_npu(runtime) as connection:
        for index in range(warm_up + jobs):
            time.sleep(BETWEEN_JOBS_S)
            result, moments = _one_execution(connection, job, limits, index)
            if index >= warm_up:
                executions.append(_moments(result, moments))
        for index in range(probes):
            time.sleep(BETWEEN_JOBS_S)
            result, _ = _one_execution(connection, probe, limits, index)
            parts.append({name: float(result["outputs"][name]) for name in PART_NAMES})
    return DrivenNpu(executions, parts)


def _one_execution(
    connection: NpuConnection, job: bytes, limits: NodeLimits, index: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run one job to its server's ``exited``: its result event, and the moments seen."""
    frames = FrameReader(frame_limits(limits)[0])
    seen: dict[str, float] = {}
    result: dict[str, Any] | None = None
    sent = time.time()
    execution = connection.begin(job)
    deadline = time.monotonic() + JOB_WAIT_S
    while "exited" not in seen:
        kind, value = execution.items.get(timeout=max(0.001, deadline - time.monotonic()))
        now = time.time()
        if kind == "gone":
            raise NpuFailed(f"the NPU went away at job {index + 1}: {value}")
        if kind == "server":
            seen.setdefault(value["type"], now)
            assert value["type"] != "refused", value
            continue
        for event in frames.feed(value):
            if event["type"] == "started":
                seen["runtime_started"] = float(event["ts"])
            elif event["type"] == "result":
                result = event
                seen.update(result=now, result_sent=float(event["ts"]))
            elif event["type"] == "error":
                raise NpuFailed(f"job {index + 1} failed: {event.get('error_type')}: {event.get('message')}")
    assert result is not None, seen
    return result, {"sent": sent, **seen}


def _moments(result: dict[str, Any], seen: dict[str, float]) -> ExecutionMoments:
    outputs = result["outputs"]
    return ExecutionMoments(
        sent=seen["sent"],
        spawned=seen["spawned"],
        runtime_started=seen["runtime_started"],
        code_started=float(outputs[CODE_STARTED_PORT]),
        code_finished=float(outputs[CODE_FINISHED_PORT]),
        result_sent=seen["result_sent"],
        result=seen["result"],
        exited=seen["exited"],
    )


def attach_floor(runtime: str, probes: int, warm_up: int) -> list[EchoMoments]:
    """Lines echoed by a process in a hardened container over its attach stream (the
    runner's transport to an NPU, without the fork server): the floor under an NPU's
    start and round trip."""
    client = docker.from_env(timeout=60)
    options = npu_options(
        runtime, "npu-echo", entrypoint=["python3", "-u", "-c", ECHO_PROGRAM, str(PROTOCOL_VERSION)]
    )
    npu = start_npu(client, options)
    demuxer = StreamDemuxer()
    measured: list[EchoMoments] = []
    try:
        npu.sock.settimeout(JOB_WAIT_S)
        for index in range(warm_up + probes):
            sent = time.time()
            npu.sock.sendall(f"probe-{index}\n".encode())
            line = _read_line(npu.sock, demuxer)
            back = time.time()
            name, read = line.split()
            assert name == f"probe-{index}", line
            if index >= warm_up:
                measured.append(EchoMoments(sent=sent, read=float(read), back=back))
    finally:
        discard(npu)
    return measured


def _read_line(sock: socket.socket, demuxer: StreamDemuxer) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("the echo container went away")
        for stream, payload in demuxer.feed(chunk):
            assert stream == STDOUT, payload
            data += payload
    return data.decode().strip()
