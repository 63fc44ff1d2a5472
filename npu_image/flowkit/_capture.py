"""Turn whatever user code writes to stdout/stderr into log events.

File descriptors 1 and 2 become pipes read by two threads. That covers ``print``,
``os.write(1, ...)`` and child processes alike, and binary junk is decoded with
replacement characters instead of breaking the protocol.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable

from ._budget import LogBudget
from ._channel import Channel

_CHUNK = 64 * 1024
_LEVELS = {"stdout": "info", "stderr": "warning"}


class OutputCapture:
    def __init__(self, channel: Channel, budget: LogBudget, on_flood: Callable[[], None]) -> None:
        self._channel = channel
        self._budget = budget
        self._on_flood = on_flood
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            thread = threading.Thread(
                target=self._pump, args=(read_end, stream), name=f"capture-{stream}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, grace_s: float = 2.0) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        # A child process the node left behind may still hold the pipe open; do not
        # wait for it past the grace period (one period in all, not one per stream).
        deadline = time.monotonic() + grace_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _pump(self, fd: int, stream: str) -> None:
        pending = b""
        skipping_long_line = False
        max_line = self._budget.max_line_bytes
        while True:
            try:
                chunk = os.read(fd, _CHUNK)
            except OSError:
                break
            if not chunk:
                break
            if not self._budget.count_raw(len(chunk)):
                self._on_flood()
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if skipping_long_line:
                    skipping_long_line = False
                    continue
                # A long line can arrive whole in one read; cap it here too.
                self._emit(stream, line[:max_line], truncated=len(line) > max_line)
            if len(pending) > max_line:
                if not skipping_long_line:
                    self._emit(stream, pending[:max_line], truncated=True)
                skipping_long_line = True
                pending = b""
        if pending and not skipping_long_line:
            self._emit(stream, pending, truncated=False)
        os.close(fd)

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
