"""Turn whatever user code writes to stdout/stderr into log events.

File descriptors 1 and 2 become pipes read by one thread. That covers ``print``,
``os.write(1, ...)`` and child processes alike, and binary junk is decoded with
replacement characters instead of breaking the protocol.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable

from ._budget import LogBudget
from ._channel import Channel

_CHUNK = 64 * 1024
_LEVELS = {"stdout": "info", "stderr": "warning"}


class _Stream:
    """What one captured stream has read of its current line."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pending = b""
        self.skipping_long_line = False


class OutputCapture:
    def __init__(self, channel: Channel, budget: LogBudget, on_flood: Callable[[], None]) -> None:
        self._channel = channel
        self._budget = budget
        self._on_flood = on_flood
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        streams: dict[int, _Stream] = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            streams[read_end] = _Stream(name)
        # One thread for both: starting a thread is the dearest part of starting an
        # execution after the fork itself.
        self._thread = threading.Thread(target=self._pump, args=(streams,), name="capture", daemon=True)
        self._thread.start()

    def stop(self, grace_s: float = 2.0) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        # A child process the node left behind may still hold a pipe open; do not
        # wait for it past the grace period.
        if self._thread is not None:
            self._thread.join(grace_s)

    def _pump(self, streams: dict[int, _Stream]) -> None:
        while streams:
            try:
                readable, _, _ = select.select(list(streams), [], [])
            except (OSError, ValueError):
                return
            for fd in readable:
                try:
                    chunk = os.read(fd, _CHUNK)
                except OSError:
                    chunk = b""
                if not chunk:
                    self._finish(streams.pop(fd))
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    continue
                if not self._budget.count_raw(len(chunk)):
                    self._on_flood()
                    return
                self._feed(streams[fd], chunk)

    def _feed(self, stream: _Stream, chunk: bytes) -> None:
        max_line = self._budget.max_line_bytes
        stream.pending += chunk
        *lines, stream.pending = stream.pending.split(b"\n")
        for line in lines:
            if stream.skipping_long_line:
                stream.skipping_long_line = False
                continue
            # A long line can arrive whole in one read; cap it here too.
            self._emit(stream.name, line[:max_line], truncated=len(line) > max_line)
        if len(stream.pending) > max_line:
            if not stream.skipping_long_line:
                self._emit(stream.name, stream.pending[:max_line], truncated=True)
            stream.skipping_long_line = True
            stream.pending = b""

    def _finish(self, stream: _Stream) -> None:
        if stream.pending and not stream.skipping_long_line:
            self._emit(stream.name, stream.pending, truncated=False)

    def _emit(self, stream: str, line: bytes, truncated: bool) -> None:
        if not self._budget.admit(len(line)):
            return
        event: dict[str, object] = {
            "type": "log",
            "level": _LEVELS[stream],
            "stream": stream,
            "message": line.decode("utf-8", "replace").rstrip("\r"),
        }
        if truncated:
            event["truncated"] = True
        self._channel.emit(event)
