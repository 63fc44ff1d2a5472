"""The resource limits of one node execution."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from django.conf import settings

# Bounds a node may ask for, whatever the defaults are. The control unit's graph
# validation uses the same table so that a saved pipeline never asks for more.
LIMIT_BOUNDS: dict[str, tuple[float, float]] = {
    "timeout_s": (0.1, 24 * 3600),
    "memory_mb": (16, 64 * 1024),
    "cpus": (0.01, 64),
    "pids": (4, 4096),
    # Executions of the node its dedicated NPU runs at once (each with the limits above).
    "concurrency": (1, 16),
}


class LimitError(ValueError):
    pass


@dataclass(frozen=True)
class NodeLimits:
    timeout_s: float
    memory_mb: int
    cpus: float
    pids: int
    network: bool
    tmpfs_mb: int
    max_output_bytes: int
    max_log_lines: int
    max_log_bytes: int
    max_log_line_bytes: int
    flood_bytes: int
    concurrency: int = 1

    @classmethod
    def defaults(cls) -> NodeLimits:
        return cls(
            timeout_s=settings.FLOWKIT_NPU_TIMEOUT_S,
            memory_mb=settings.FLOWKIT_NPU_MEMORY_MB,
            cpus=settings.FLOWKIT_NPU_CPUS,
            pids=settings.FLOWKIT_NPU_PIDS,
            network=False,
            tmpfs_mb=settings.FLOWKIT_NPU_TMPFS_MB,
            max_output_bytes=settings.FLOWKIT_NPU_MAX_OUTPUT_BYTES,
            max_log_lines=settings.FLOWKIT_NPU_MAX_LOG_LINES,
            max_log_bytes=settings.FLOWKIT_NPU_MAX_LOG_BYTES,
            max_log_line_bytes=settings.FLOWKIT_NPU_MAX_LOG_LINE_BYTES,
            flood_bytes=settings.FLOWKIT_NPU_FLOOD_BYTES,
        )

    @classmethod
    def from_overrides(cls, overrides: dict[str, Any] | None) -> NodeLimits:
        """Defaults with what a node asked for; only the user-facing limits may change."""
        overrides = dict(overrides or {})
        changes: dict[str, Any] = {}
        for name, (low, high) in LIMIT_BOUNDS.items():
            if name not in overrides:
                continue
            value = overrides.pop(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise LimitError(f"limit {name} must be a number, got {value!r}")
            if not low <= value <= high:
                raise LimitError(f"limit {name} must be between {low:g} and {high:g}, got {value:g}")
            changes[name] = int(value) if name in ("memory_mb", "pids", "concurrency") else float(value)
        if "network" in overrides:
            network = overrides.pop("network")
            if not isinstance(network, bool):
                raise LimitError(f"limit network must be true or false, got {network!r}")
            changes["network"] = network
        if overrides:
            raise LimitError(f"unknown limit(s): {', '.join(sorted(overrides))}")
        return replace(cls.defaults(), **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def overrides(self) -> dict[str, Any]:
        """The user-facing limits, as ``from_overrides`` takes them back (the others
        come from the installation's settings)."""
        return {name: getattr(self, name) for name in (*LIMIT_BOUNDS, "network")}

    def container(self) -> ContainerSize:
        """What the NPU container gets: room for ``concurrency`` executions at once, each
        with the node's own limits (one execution: exactly the node's limits)."""
        n = self.concurrency
        return ContainerSize(
            memory_mb=self.memory_mb * n,
            cpus=self.cpus * n,
            pids=self.pids * n,
            tmpfs_mb=self.tmpfs_mb * n,
            network=self.network,
        )


@dataclass(frozen=True)
class ContainerSize:
    """The limits fixed when an NPU container is created (node_runner.container_spec)."""

    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    network: bool
