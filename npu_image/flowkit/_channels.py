"""Channels between the fork server and its executions that no other process of the
NPU can open.

gVisor (20221219) lets a process open another process's descriptors through
/proc/<pid>/fd when both have the same uid, whatever dumpable says: a pipe held by the
server would be open to every execution. A socket is never opened through /proc, under
either runtime, so every channel the server makes is a Unix socket pair (``splice``
moves from a socket as from a pipe). The server's stdin, stdout and stderr, which the
engine hands it, are sealed instead: that open checks their modes, which refuse every
uid but root's once all are taken away, and no process of an NPU is root.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat


def private_channel(*, nonblocking: bool = False) -> tuple[int, int]:
    """A one-way channel: (read end, write end), both close-on-exec."""
    read_end, write_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    read_end.shutdown(socket.SHUT_WR)
    write_end.shutdown(socket.SHUT_RD)
    for end in (read_end, write_end):
        end.setblocking(not nonblocking)
    return read_end.detach(), write_end.detach()


def seal_stdio() -> None:
    """Take every mode away from stdin, stdout and stderr where they are pipes (a
    terminal or a file handed to the process is left alone). Descriptors already open,
    the server's and the engine's, are unaffected."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.fchmod(fd, 0)
