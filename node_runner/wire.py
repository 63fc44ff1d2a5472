"""The runner's side of the NPU wire protocol (the NPU's side is npu_image/flowkit/
forkserver.py, which starts each execution, and runtime.py, which runs it).

Docker multiplexes a non-TTY container's stdout and stderr on one attach stream, each
chunk behind an 8-byte header; stderr is only a diagnostic. Stdout carries the fork
server's chunks (``ChunkReader``): its own events, and each execution's stream of
JSON-line events (``FrameReader``). Requests go the other way as fixed-size headers
(``request``), a job's bytes right after its ``run``. Everything here is pure: bytes
in, events out.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from control_unit.limits import NodeLimits

PROTOCOL_VERSION = 2
EVENT_TYPES = frozenset({"started", "log", "log_dropped", "result", "error"})
TERMINAL_TYPES = frozenset({"result", "error"})
STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


# The fork server's requests and chunks (npu_image/flowkit/forkserver.py).
REQUEST_BYTES = 64
SERVER_TAG = "@"
SERVER_EVENT_TYPES = frozenset({"ready", "spawned", "refused", "usage", "paused", "resumed", "exited"})
EXECUTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
_CHUNK_HEAD = re.compile(rb"(@|[A-Za-z0-9_-]{1,32}) ([0-9]{1,9})")
MAX_CHUNK_HEAD = 48


class ProtocolViolation(Exception):
    """The NPU sent something the protocol does not allow."""


def request(op: str, execution: str = "", *numbers: int) -> bytes:
    """One request header for the fork server: ``run``, ``pause``, ``resume``, ``kill``, ``quit``."""
    if execution and not EXECUTION_NAME.fullmatch(execution):
        raise ValueError(f"not an execution name: {execution!r}")
    line = " ".join([op, *([execution] if execution else []), *(str(int(n)) for n in numbers)])
    encoded = line.encode("ascii")
    if len(encoded) >= REQUEST_BYTES:
        raise ValueError(f"request too long: {line!r}")
    return encoded.ljust(REQUEST_BYTES - 1) + b"\n"


class ChunkReader:
    """Splits the fork server's stdout into (tag, payload) chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buffer += data
        chunks: list[tuple[str, bytes]] = []
        while True:
            newline = self._buffer.find(b"\n", 0, MAX_CHUNK_HEAD)
            if newline == -1:
                if len(self._buffer) >= MAX_CHUNK_HEAD:
                    raise ProtocolViolation(f"the NPU sent a malformed chunk: {bytes(self._buffer[:40])!r}")
                return chunks
            head = _CHUNK_HEAD.fullmatch(bytes(self._buffer[:newline]))
            if head is None:
                raise ProtocolViolation(f"the NPU sent a malformed chunk: {bytes(self._buffer[:40])!r}")
            size = int(head.group(2))
            end = newline + 1 + size
            if len(self._buffer) < end:
                return chunks
            chunks.append((head.group(1).decode("ascii"), bytes(self._buffer[newline + 1 : end])))
            del self._buffer[:end]


def _no_constant(name: str) -> Any:
    # Python's json reads NaN and ±Infinity, which JSON has not and PostgreSQL's jsonb
    # refuses; the NPU's runtime never writes them (allow_nan=False), so a frame that
    # holds one was forged.
    raise ValueError(f"{name} is not JSON")


def _json(data: bytes) -> Any:
    return json.loads(data, parse_constant=_no_constant)


def parse_server_event(payload: bytes) -> dict[str, Any]:
    try:
        event = _json(payload)
    except (ValueError, RecursionError):
        raise ProtocolViolation(
            f"the NPU's server sent an event that is not JSON: {payload[:80]!r}"
        ) from None
    if not isinstance(event, dict) or event.get("type") not in SERVER_EVENT_TYPES:
        raise ProtocolViolation(f"the NPU's server sent an unknown event: {payload[:80]!r}")
    return event


@dataclass(frozen=True)
class NpuJob:
    node_id: str
    label: str
    code: str
    inputs: dict[str, Any]
    secrets: dict[str, str]
    attempt: int = 1
    idempotency_key: str = ""

    def encode(self, limits: NodeLimits) -> bytes:
        document = {
            "protocol": PROTOCOL_VERSION,
            "code": self.code,
            "inputs": self.inputs,
            "secrets": self.secrets,
            "node": {
                "id": self.node_id,
                "label": self.label,
                "attempt": self.attempt,
                "idempotency_key": self.idempotency_key,
            },
            "limits": {
                "max_output_bytes": limits.max_output_bytes,
                "max_log_lines": limits.max_log_lines,
                "max_log_bytes": limits.max_log_bytes,
                "max_log_line_bytes": transport_line_bytes(limits),
                "flood_bytes": limits.flood_bytes,
            },
        }
        return json.dumps(document, ensure_ascii=True).encode("ascii")


class StreamDemuxer:
    """Splits Docker's multiplexed attach stream into (stream, payload) chunks."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        chunks: list[tuple[int, bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            chunks.append((stream, bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return chunks


class FrameReader:
    """Turns the NPU's stdout bytes into events, refusing oversized or malformed frames."""

    def __init__(self, max_frame_bytes: int) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._pending += data
        events: list[dict[str, Any]] = []
        while (newline := self._pending.find(b"\n")) != -1:
            if newline > self._max_frame_bytes:
                # Checked per frame too: a whole oversized frame can arrive in one feed.
                raise ProtocolViolation(f"the NPU sent a frame larger than {self._max_frame_bytes:,} bytes")
            line = bytes(self._pending[:newline])
            del self._pending[: newline + 1]
            if line.strip():
                events.append(parse_frame(line))
        if len(self._pending) > self._max_frame_bytes:
            raise ProtocolViolation(f"the NPU sent a frame larger than {self._max_frame_bytes:,} bytes")
        return events

    def finish(self) -> list[dict[str, Any]]:
        rest, self._pending = bytes(self._pending), bytearray()
        return [parse_frame(rest)] if rest.strip() else []


def parse_frame(line: bytes) -> dict[str, Any]:
    """One execution frame as JSON; its fields are checked by npu_frames. Messages
    never quote the frame: the node's code may have written it, a secret with it."""
    try:
        event = _json(line)
    except (ValueError, RecursionError):
        raise ProtocolViolation(f"the NPU sent a frame of {len(line):,} bytes that is not JSON") from None
    if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
        raise ProtocolViolation("the NPU sent a frame of an unknown type")
    return event


# How much longer than its stored length the NPU may send a log line: the runner masks
# the line before it cuts it, so a secret that straddles the cut is seen whole.
LINE_MARGIN_BYTES = 16 * 1024


def transport_line_bytes(limits: NodeLimits) -> int:
    """The longest log line the NPU sends (the runner stores max_log_line_bytes of it)."""
    return limits.max_log_line_bytes + LINE_MARGIN_BYTES


def frame_limits(limits: NodeLimits) -> tuple[int, int]:
    """(largest frame, total bytes) an honest NPU can send under these limits."""
    slack = 1024 * 1024
    max_frame = limits.max_output_bytes + transport_line_bytes(limits) + slack
    total = limits.max_output_bytes + 2 * limits.max_log_bytes + 512 * limits.max_log_lines + slack
    return max_frame, total
