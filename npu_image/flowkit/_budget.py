"""Limits on what a node may log, shared by the Logger and captured stdout/stderr.

Two tiers: past ``max_lines``/``max_bytes`` lines are dropped and counted (the trace
shows a marker); past ``flood_bytes`` the node is stopped, because a node that writes
that much is broken and would only burn the worker's time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class LogBudget:
    max_lines: int
    max_bytes: int
    max_line_bytes: int
    flood_bytes: int
    lines: int = 0
    bytes: int = 0
    dropped_lines: int = 0
    dropped_bytes: int = 0
    seen_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def admit(self, size: int) -> bool:
        """Count one line of ``size`` bytes; True if it may be emitted."""
        with self._lock:
            if self.lines < self.max_lines and self.bytes + size <= self.max_bytes:
                self.lines += 1
                self.bytes += size
                return True
            self.dropped_lines += 1
            self.dropped_bytes += size
            return False

    def count_raw(self, size: int) -> bool:
        """Count raw bytes written by the node; False once past the flood limit."""
        with self._lock:
            self.seen_bytes += size
            return self.seen_bytes <= self.flood_bytes
