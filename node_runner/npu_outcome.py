"""What one node execution came to, as the runner reports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class NodeError:
    error_type: str
    message: str
    traceback: str = ""
    port: str | None = None
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class NpuOutcome:
    container_id: str
    next_nodes: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    status_message: str = ""
    error: NodeError | None = None
    logs: list[dict[str, Any]] = field(default_factory=list)
    dropped_log_lines: int = 0
    dropped_log_bytes: int = 0
    exit_code: int | None = None
    duration_s: float = 0.0
    # The execution sent its terminal event (result or error).
    answered: bool = False

    @property
    def succeeded(self) -> bool:
        return self.error is None
