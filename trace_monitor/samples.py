"""A resource sample of one execution: what the runner measured (Docker's stats API for
a single-use container, the fork server's readings for a dedicated NPU) and the trace
stores and streams."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class NpuSample:
    at: datetime
    cpu_percent: float | None  # of one CPU, like `docker stats`; None without a previous reading
    memory_bytes: int  # without the reclaimable page cache, like `docker stats`
    memory_limit_bytes: int | None
    net_rx_bytes: int | None  # None: the NPU has no network
    net_tx_bytes: int | None
    pids: int | None
