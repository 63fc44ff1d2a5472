"""An NPU container that is running and waiting for its job on stdin.

Starting one is the slow part of running a node (creating and starting a hardened
container takes a few hundred milliseconds); giving it a job is a write on a socket.
The node runner starts one on demand, or takes one that the warm pool started
earlier (node_runner.warm_pool); either way each is used for exactly one node.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from node_runner.reaper import remove_container
from node_runner.wire import (
    PROTOCOL_VERSION,
    SERVER_TAG,
    STDOUT,
    ChunkReader,
    ProtocolViolation,
    StreamDemuxer,
    parse_server_event,
)

log = logging.getLogger(__name__)


# An image of an older protocol waits for its job's end of file and never says it is ready.
READY_WITHIN_S = 15.0


class NpuUnavailable(Exception):
    """No NPU could be started (engine down, image missing)."""


@dataclass
class ReadyNpu:
    container: Any
    # The attach connection: stdin in, stdout and stderr out. The runtime in the
    # container blocks reading stdin until the job arrives and the runner half-closes it.
    sock: socket.socket
    # The HTTP response that owns the hijacked socket; kept so it is not collected
    # (and the socket closed) while the NPU waits.
    attachment: Any = field(repr=False)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def id(self) -> str:
        return str(self.container.id)

    def is_waiting(self) -> bool:
        """Whether the NPU still waits for its job. It writes nothing after its ``ready``
        (read by ``start_npu``) before its job arrives, so a readable socket means it
        went away (end of stream): the engine restarted, or something killed the
        container while it waited."""
        if self.sock.fileno() < 0:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


def start_npu(client: Any, options: dict[str, Any]) -> ReadyNpu:
    """Create, attach to and start one NPU container with ``options`` (from
    node_runner.container_spec); remove it again if any step fails."""
    try:
        container = client.containers.create(**options)
    except docker.errors.ImageNotFound:
        raise NpuUnavailable(f"NPU image {options['image']} is not built; run `flowkit npu build`") from None
    except docker.errors.DockerException as exc:
        raise NpuUnavailable(f"the Docker engine could not create an NPU: {exc}") from None
    try:
        # Attached before the start, so that not a byte of its output is missed.
        attachment = container.attach_socket(params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        container.start()
    except docker.errors.DockerException as exc:
        remove_npu(container)
        raise NpuUnavailable(f"the Docker engine could not start an NPU: {exc}") from None
    npu = ReadyNpu(container=container, sock=attachment._sock, attachment=attachment)
    try:
        await_ready(npu.sock)
    except (NpuUnavailable, ProtocolViolation, OSError) as exc:
        discard(npu)
        raise NpuUnavailable(str(exc)) from None
    return npu


def await_ready(sock: socket.socket, timeout_s: float = READY_WITHIN_S) -> None:
    """Read the fork server's ``ready`` event, its only word before its first job: once
    it is read, the NPU writes nothing until it is given work (see ``is_waiting``)."""
    demuxer, chunks = StreamDemuxer(), ChunkReader()
    stderr = bytearray()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.001, deadline - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        if not data:
            detail = stderr.decode("utf-8", "replace").strip()[-500:]
            raise NpuUnavailable(f"the NPU exited as it started{': ' + detail if detail else ''}")
        for stream, payload in demuxer.feed(data):
            if stream != STDOUT:
                stderr += payload[:4096]
                continue
            for tag, chunk in chunks.feed(payload):
                event = parse_server_event(chunk) if tag == SERVER_TAG else {}
                if event.get("type") != "ready":
                    raise NpuUnavailable(f"the NPU spoke before it was ready: {chunk[:80]!r}")
                if event.get("protocol") != PROTOCOL_VERSION:
                    raise NpuUnavailable(
                        f"the NPU image speaks protocol {event.get('protocol')!r}, this runner "
                        f"{PROTOCOL_VERSION}; rebuild the image with `flowkit npu build`"
                    )
                sock.settimeout(None)
                return
    raise NpuUnavailable(f"the NPU's fork server did not start within {timeout_s:g} s")


def close_connection(npu: ReadyNpu) -> None:
    # close() alone leaves the connection open while the attach response still
    # holds the socket: a node that keeps writing then blocks dockerd's copy of
    # its stdout, and with it the kill and removal that follow (found by the attack
    # suite: a gigabyte forged onto the channel stalled both for 30 s each).
    with contextlib.suppress(OSError):
        npu.sock.shutdown(socket.SHUT_RDWR)
    npu.sock.close()


def discard(npu: ReadyNpu) -> None:
    """Remove an NPU that will not run a node."""
    close_connection(npu)
    remove_npu(npu.container)


def remove_npu(container: Any) -> None:
    try:
        remove_container(container)
    except Exception:
        # The engine may be gone for a moment (restarting). The worker's heartbeat
        # removes its exited NPUs later (reaper.reap_exited); the outcome is not lost.
        log.exception("could not remove NPU container %s", str(container.id)[:12])
