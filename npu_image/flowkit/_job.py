"""The job the runner sent, and what the node produced, for the one execution."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._budget import LogBudget


@dataclass
class Job:
    node_id: str
    label: str
    inputs: dict[str, Any]
    max_output_bytes: int
    budget: LogBudget
    attempt: int = 1
    idempotency_key: str = ""
    main: Any = None
    ran: bool = False
    result: tuple[list[str], dict[str, Any], str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_job: Job | None = None


def install(job: Job) -> None:
    global _job
    _job = job


def current() -> Job:
    if _job is None:
        raise RuntimeError(
            "flowkit.node only works inside a FlowKit NPU; use `flowkit node run FILE.py` to run a node file"
        )
    return _job
