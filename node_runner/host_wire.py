"""What a worker's pool process and the worker's NPU host (node_runner.npu_host) say
to each other over the host's Unix socket: one connection per execution.

A message is a kind (one byte), a length (four bytes, network order) and a body.
The pool process opens with LEASE (a JSON request: the node, its limits), the host
answers LEASED (the NPU's container id) or REFUSED (a JSON error); then RUN (an
eight-byte memory limit and the encoded job), PAUSE, RESUME, KILL, and RELEASE (a
JSON ``{"healthy": ...}``) go one way; DATA (bytes of the execution's frame stream),
SERVER (a JSON event of the fork server about it) and GONE (why the NPU ended) come
back, exactly the items of node_runner.npu_connection.ExecutionChannel.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from typing import Any

LEASE, LEASED, REFUSED = b"L", b"O", b"X"
RUN, PAUSE, RESUME, KILL, RELEASE = b"R", b"P", b"C", b"K", b"E"
DATA, SERVER, GONE = b"D", b"S", b"G"
# What each item kind of an ExecutionChannel is sent as, and back.
ITEM_KINDS = {"data": DATA, "server": SERVER, "gone": GONE}
KIND_ITEMS = {kind: item for item, kind in ITEM_KINDS.items()}

_HEADER = struct.Struct("!cI")
_MEMORY = struct.Struct("!Q")
# A job carries its inputs and an answer its outputs, both bounded well below this
# by the node's limits: a larger message means a broken peer.
MAX_BODY_BYTES = 512 * 1024 * 1024


class HostLinkClosed(Exception):
    """The other end closed the connection, or broke the wire's format."""


class HostLink:
    """One end of a connection: whole messages in, whole messages out (writes from
    several threads do not interleave)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._reader = sock.makefile("rb")
        self._write_lock = threading.Lock()

    def send(self, kind: bytes, body: bytes = b"") -> None:
        with self._write_lock:
            self.sock.sendall(_HEADER.pack(kind, len(body)) + body)

    def send_json(self, kind: bytes, value: Any) -> None:
        self.send(kind, json.dumps(value).encode())

    def receive(self) -> tuple[bytes, bytes]:
        try:
            header = self._reader.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise HostLinkClosed("the connection was closed")
            kind, length = _HEADER.unpack(header)
            if length > MAX_BODY_BYTES:
                raise HostLinkClosed(f"a message of {length:,} bytes is beyond the wire's bound")
            body = self._reader.read(length)
        except (OSError, ValueError) as exc:
            raise HostLinkClosed(f"the connection failed: {exc}") from None
        if len(body) < length:
            raise HostLinkClosed("the connection was closed in a message")
        return kind, body

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.close()
        self.sock.close()


def run_body(job: bytes, memory_limit_bytes: int) -> bytes:
    return _MEMORY.pack(memory_limit_bytes) + job


def parse_run_body(body: bytes) -> tuple[bytes, int]:
    if len(body) < _MEMORY.size:
        raise HostLinkClosed("a RUN message without its memory limit")
    (memory_limit_bytes,) = _MEMORY.unpack_from(body)
    return body[_MEMORY.size :], memory_limit_bytes
