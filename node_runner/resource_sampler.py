"""Samples one NPU's CPU, memory, network and pids from the Docker stats API.

The engine publishes a container's stats once a second; a streaming request gets
each reading as it is published, so a node is sampled at 1 Hz from its first second
on, paused or not. A node that ends within its first second has no sample.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from trace_monitor.samples import NpuSample

log = logging.getLogger(__name__)


def npu_sample(stats: dict[str, Any], at: datetime | None = None) -> NpuSample | None:
    """One reading of the stats API as a sample; None for the empty reading the
    engine sends once a container has stopped."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if usage is None:
        return None
    detail = memory.get("stats") or {}
    # cgroup v2 names it inactive_file, v1 total_inactive_file.
    cache = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    networks = stats.get("networks")
    return NpuSample(
        at=at or datetime.now(UTC),
        cpu_percent=_cpu_percent(stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}),
        memory_bytes=max(0, int(usage) - int(cache)),
        memory_limit_bytes=memory.get("limit"),
        net_rx_bytes=sum(int(n.get("rx_bytes", 0)) for n in networks.values()) if networks else None,
        net_tx_bytes=sum(int(n.get("tx_bytes", 0)) for n in networks.values()) if networks else None,
        pids=(stats.get("pids_stats") or {}).get("current"),
    )


def _cpu_percent(current: dict[str, Any], previous: dict[str, Any]) -> float | None:
    if "system_cpu_usage" not in previous or "system_cpu_usage" not in current:
        return None
    used = current["cpu_usage"]["total_usage"] - previous["cpu_usage"]["total_usage"]
    elapsed = current["system_cpu_usage"] - previous["system_cpu_usage"]
    if elapsed <= 0 or used < 0:
        return None
    cpus = current.get("online_cpus") or len(current["cpu_usage"].get("percpu_usage") or ()) or 1
    return round(used / elapsed * cpus * 100.0, 2)


class ResourceSampler:
    """A thread that follows one container's stats stream until it ends or is stopped."""

    def __init__(self, api: Any, container_id: str, on_sample: Callable[[NpuSample], None]) -> None:
        self._api = api
        self._container_id = container_id
        self._on_sample = on_sample
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"stats-{container_id[:12]}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Take no more samples; the stream itself ends when the container is removed."""
        self._stopped.set()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _follow(self) -> None:
        try:
            for stats in self._api.stats(self._container_id, stream=True, decode=True):
                if self._stopped.is_set():
                    return
                sample = npu_sample(stats)
                if sample is not None:
                    self._on_sample(sample)
        except Exception:
            # The container went away mid-read: the node's outcome tells why.
            log.debug("stats stream of %s ended", self._container_id[:12], exc_info=True)
