"""The wire between a pool process and its worker's NPU host (node_runner.host_wire):
whole messages both ways, and a peer that breaks the format ends the connection."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from node_runner.host_wire import (
    DATA,
    LEASE,
    MAX_BODY_BYTES,
    RUN,
    HostLink,
    HostLinkClosed,
    parse_run_body,
    run_body,
)


@pytest.fixture
def pair() -> Iterator[tuple[HostLink, socket.socket]]:
    ours, theirs = socket.socketpair()
    link = HostLink(ours)
    yield link, theirs
    link.close()
    theirs.close()


def test_messages_arrive_whole_and_in_order():
    ours, theirs = socket.socketpair()
    sender, receiver = HostLink(ours), HostLink(theirs)
    big = bytes(range(256)) * 4096  # larger than one socket buffer
    # Written from two threads at once, messages never interleave.
    writers = [
        threading.Thread(target=lambda: [sender.send(DATA, big) for _ in range(5)]),
        threading.Thread(target=lambda: [sender.send_json(LEASE, {"n": i}) for i in range(5)]),
    ]
    for writer in writers:
        writer.start()
    received = [receiver.receive() for _ in range(10)]
    for writer in writers:
        writer.join()
    assert sorted(kind for kind, _ in received) == sorted([DATA] * 5 + [LEASE] * 5)
    assert all(body == big for kind, body in received if kind == DATA)
    assert [body for kind, body in received if kind == LEASE] == [b'{"n": %d}' % i for i in range(5)]
    sender.close()
    with pytest.raises(HostLinkClosed, match="closed"):
        receiver.receive()


def test_a_length_beyond_the_bound_ends_the_connection(pair):
    link, theirs = pair
    theirs.sendall(struct.pack("!cI", DATA, MAX_BODY_BYTES + 1))
    with pytest.raises(HostLinkClosed, match="beyond the wire's bound"):
        link.receive()


def test_a_message_cut_short_ends_the_connection(pair):
    link, theirs = pair
    theirs.sendall(struct.pack("!cI", DATA, 100) + b"x" * 10)
    theirs.shutdown(socket.SHUT_WR)
    with pytest.raises(HostLinkClosed, match="closed in a message"):
        link.receive()


def test_a_run_carries_its_memory_limit_and_job():
    limit = 256 * 1024 * 1024
    assert parse_run_body(run_body(b'{"code": ""}', limit)) == (b'{"code": ""}', limit)
    with pytest.raises(HostLinkClosed, match="memory limit"):
        parse_run_body(RUN)
