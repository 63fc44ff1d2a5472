"""The runner's connection to one NPU's fork server (npu_image/flowkit/forkserver.py),
started and found ready by node_runner.ready_npu.start_npu.

One thread per connection reads the container's attach stream and sorts what arrives:
the server's own events (``spawned``, ``usage``, ``exited`` ...) and each execution's
stream of frames go to that execution's queue, where the thread running the node
(npu_execution) reads them. Requests are written under a lock, so several executions
of one NPU can be driven from several threads.

An ``ExecutionChannel`` is one execution seen from the runner: its queue of
(kind, value) items, where kind is ``data`` (bytes of its frame stream), ``server``
(an event of the server about it) or ``gone`` (the NPU itself ended: its container
died, or broke the protocol).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from node_runner.ready_npu import ReadyNpu, close_connection
from node_runner.wire import (
    SERVER_TAG,
    STDOUT,
    ChunkReader,
    ProtocolViolation,
    StreamDemuxer,
    parse_server_event,
    request,
)

log = logging.getLogger(__name__)

MAX_STDERR_BYTES = 64 * 1024
_names = itertools.count(1)


class NpuGone(Exception):
    """The NPU's fork server ended or broke the protocol; the NPU must be replaced."""


@dataclass
class ExecutionChannel:
    name: str
    connection: NpuConnection
    items: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    # The server's "spawned" (with its oom_kills count) and "exited" events, once seen.
    spawned: dict[str, Any] | None = None
    exited: dict[str, Any] | None = None

    def pause(self) -> None:
        self.connection.send(request("pause", self.name))

    def resume(self) -> None:
        self.connection.send(request("resume", self.name))

    def kill(self) -> None:
        self.connection.send(request("kill", self.name))


class NpuConnection:
    """A started NPU whose fork server takes executions until it is closed."""

    def __init__(self, npu: ReadyNpu) -> None:
        self.npu = npu
        self.container = npu.container
        self.id = npu.id
        self.created = time.monotonic()
        self.last_used = time.monotonic()
        self.executions_served = 0
        self.stderr = bytearray()
        self.failure: str | None = None
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._channels: dict[str, ExecutionChannel] = {}
        self._reserved = 0
        self._exited = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, name=f"npu-{self.id[:12]}", daemon=True)
        self._reader.start()

    # --- executions -------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.failure is None

    @property
    def running(self) -> int:
        """Executions started and not yet cleaned up by the server."""
        with self._lock:
            return len(self._channels)

    def begin(self, job: bytes, memory_limit_bytes: int = 0) -> ExecutionChannel:
        """Start one execution of ``job`` (the encoded job document)."""
        if self.failure is not None:
            raise NpuGone(self.failure)
        channel = ExecutionChannel(name=f"x{next(_names)}", connection=self)
        with self._lock:
            self._channels[channel.name] = channel
        self.executions_served += 1
        self.last_used = time.monotonic()
        self.send(request("run", channel.name, len(job), memory_limit_bytes) + job)
        return channel

    def send(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self.npu.sock.sendall(data)
        except OSError as exc:
            self._fail(f"the NPU stopped taking requests: {exc}")
            raise NpuGone(self.failure or "the NPU is gone") from None

    @property
    def reserved(self) -> int:
        """Slots held by leases (node_runner.dedicated_npus)."""
        with self._lock:
            return self._reserved

    def reserve(self, concurrency: int, stuck_after_s: float) -> bool:
        """Hold one of the NPU's ``concurrency`` slots for one execution. Waits while
        every slot is held (an execution ends by its timeout or its run's cancel; a
        paused one holds its slot until resumed), and while the server still cleans up
        after an execution whose lease has ended (more executions run than slots are
        held). False when the NPU failed, or that clean-up took longer than
        ``stuck_after_s``: the NPU is stuck and must be replaced."""
        lingering_since: float | None = None
        with self._exited:
            while self.failure is None:
                lingering = len(self._channels) > self._reserved
                if not lingering and self._reserved < concurrency:
                    self._reserved += 1
                    return True
                now = time.monotonic()
                if not lingering:
                    lingering_since = None
                elif lingering_since is None:
                    lingering_since = now
                elif now - lingering_since > stuck_after_s:
                    return False
                self._exited.wait(1.0)
        return False

    def unreserve(self) -> None:
        with self._exited:
            self._reserved = max(0, self._reserved - 1)
            self._exited.notify_all()

    def close(self) -> None:
        """Stop the server's stdin and the connection (the container is removed by the caller)."""
        with contextlib.suppress(OSError), self._send_lock:
            self.npu.sock.sendall(request("quit"))
        close_connection(self.npu)
        self._fail("the NPU was closed")

    # --- the reader thread ---------------------------------------------------------

    def _read(self) -> None:
        demuxer, chunks = StreamDemuxer(), ChunkReader()
        try:
            while True:
                data = self.npu.sock.recv(256 * 1024)
                if not data:
                    break
                for stream, payload in demuxer.feed(data):
                    if stream != STDOUT:
                        self.stderr += payload[: MAX_STDERR_BYTES - len(self.stderr)]
                        continue
                    for tag, chunk in chunks.feed(payload):
                        self._dispatch(tag, chunk)
            detail = self.stderr.decode("utf-8", "replace").strip()
            self._fail("the NPU exited" + (f": {detail[-500:]}" if detail else ""))
        except ProtocolViolation as exc:
            self._fail(str(exc))
        except OSError as exc:
            self._fail(f"the connection to the NPU failed: {exc}")

    def _dispatch(self, tag: str, chunk: bytes) -> None:
        if tag != SERVER_TAG:
            channel = self._channels.get(tag)
            if channel is not None:
                channel.items.put(("data", chunk))
            return
        event = parse_server_event(chunk)
        channel = self._channels.get(str(event.get("exec")))
        if channel is None:
            return
        if event["type"] == "spawned":
            channel.spawned = event
        channel.items.put(("server", event))
        if event["type"] in ("exited", "refused"):
            channel.exited = event
            self.last_used = time.monotonic()  # idle from the end of its last execution
            with self._exited:
                del self._channels[channel.name]
                self._exited.notify_all()

    def _fail(self, reason: str) -> None:
        with self._exited:
            if self.failure is None:
                self.failure = reason
            channels = list(self._channels.values())
            self._channels.clear()
            self._exited.notify_all()
        for channel in channels:
            channel.items.put(("gone", self.failure))
