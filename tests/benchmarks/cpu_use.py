"""The CPU time the whole machine spent during a measurement, and which processes
spent it: what bounds a throughput figure on a machine of two cores."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

# Process groups by a piece of their command line, first match wins.
GROUPS = (
    ("NPU host", "node_runner.npu_host"),
    ("worker (Celery processes)", "celery"),
    ("PostgreSQL", "postgres"),
    ("NPUs (their Python)", "flowkit.npu"),
    ("NPUs (their Python)", "python3 -m flowkit"),
    ("Docker engine", "dockerd"),
    ("Docker engine", "containerd"),
    ("Redis", "redis"),
    ("the benchmark itself", "pytest"),
)


@dataclass
class CpuUse:
    busy_s: float = 0.0  # every CPU's non-idle time
    cpus: int = field(default_factory=lambda: psutil.cpu_count() or 1)
    by_group: dict[str, float] = field(default_factory=dict)

    def top(self, count: int = 4) -> list[tuple[str, float]]:
        return sorted(self.by_group.items(), key=lambda item: -item[1])[:count]


def _busy(times: Any) -> float:
    spent = ("user", "nice", "system", "irq", "softirq", "steal")
    return float(sum(getattr(times, name, 0.0) for name in spent))


def _per_process() -> dict[int, tuple[str, float]]:
    seen = {}
    for process in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        try:
            times = process.info["cpu_times"]
            command = " ".join(process.info["cmdline"] or []) or process.info["name"] or ""
            seen[process.pid] = (command, times.user + times.system)
        except (psutil.Error, TypeError):
            continue
    return seen


def _group(command: str) -> str:
    return next((name for name, piece in GROUPS if piece in command), "other")


@contextlib.contextmanager
def measured() -> Iterator[CpuUse]:
    """The machine's CPU use while the block runs (a process that ended meanwhile is
    not counted in its group, only in ``busy_s``)."""
    use = CpuUse()
    before, busy = _per_process(), _busy(psutil.cpu_times())
    yield use
    use.busy_s = _busy(psutil.cpu_times()) - busy
    for pid, (command, cpu_s) in _per_process().items():
        group = _group(command)
        use.by_group[group] = use.by_group.get(group, 0.0) + cpu_s - before.get(pid, (command, 0.0))[1]
