"""The runner's side of the NPU wire protocol (the NPU's side is npu_image/flowkit/runtime.py).

Docker multiplexes a non-TTY container's stdout and stderr on one attach stream, each
chunk behind an 8-byte header; stdout carries the NPU's JSON-line events, stderr is
only a diagnostic. Everything here is pure: bytes in, events out.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

from node_runner.limits import NodeLimits

PROTOCOL_VERSION = 1
EVENT_TYPES = frozenset({"started", "log", "log_dropped", "result", "error"})
TERMINAL_TYPES = frozenset({"result", "error"})
STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")


class ProtocolViolation(Exception):
    """The NPU sent something the protocol does not allow."""


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
                "max_log_line_bytes": limits.max_log_line_bytes,
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
    try:
        event = json.loads(line)
    except (ValueError, RecursionError):
        raise ProtocolViolation(f"the NPU sent a frame that is not JSON: {line[:80]!r}") from None
    if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
        raise ProtocolViolation(f"the NPU sent an unknown frame: {line[:80]!r}")
    return event


def frame_limits(limits: NodeLimits) -> tuple[int, int]:
    """(largest frame, total bytes) an honest NPU can send under these limits."""
    slack = 1024 * 1024
    max_frame = limits.max_output_bytes + limits.max_log_line_bytes + slack
    total = limits.max_output_bytes + 2 * limits.max_log_bytes + 512 * limits.max_log_lines + slack
    return max_frame, total
