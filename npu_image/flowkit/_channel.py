"""The protocol channel from the runtime to the node runner.

Events are JSON objects, one per line, written to a private duplicate of the
container's original stdout. File descriptors 1 and 2 are redirected elsewhere
(see ``_capture``), so a ``print`` in user code can never land inside a frame.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any


class Channel:
    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._closed = False

    def emit(self, event: dict[str, Any]) -> None:
        with self._lock:
            if not self._closed:
                self._write(event)

    def _write(self, event: dict[str, Any]) -> None:
        event.setdefault("ts", time.time())
        # ensure_ascii keeps every frame a single line of plain ASCII, whatever the
        # payload holds (newlines, NUL bytes, lone surrogates).
        line = json.dumps(event, ensure_ascii=True, allow_nan=False).encode("ascii") + b"\n"
        view = memoryview(line)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    def emit_final(self, event: dict[str, Any]) -> None:
        """Send the terminal event and close, atomically: a flood detected by a
        capture thread at this moment cannot slip a second terminal event in."""
        with self._lock:
            if self._closed:
                return
            self._write(event)
            self._closed = True

    def close(self) -> None:
        """Refuse further frames: the terminal event has been sent."""
        with self._lock:
            self._closed = True


_channel: Channel | None = None


def install(channel: Channel) -> None:
    global _channel
    _channel = channel


def current() -> Channel:
    if _channel is None:
        raise RuntimeError(
            "flowkit.node only works inside a FlowKit NPU; use `flowkit node run FILE.py` to run a node file"
        )
    return _channel
