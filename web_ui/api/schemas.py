"""Request and response shapes of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from ninja import Schema
from pydantic import Field


class ErrorOut(Schema):
    code: str
    message: str
    # invalid_request: where the request differs from the schema (pydantic's errors).
    detail: list[dict[str, Any]] | None = None
    # invalid_text, invalid_json, invalid_request from the input layer (web_ui/api/input.py):
    # where the refused input is, as "body.input.a.0", "query.search" or "path.node_id".
    field: str | None = None


def error_responses(*codes: int) -> dict[int, Any]:
    """The error responses of an operation: 400, 401, 403 and ``codes``, all ErrorOut."""
    return {code: ErrorOut for code in (400, 401, 403, *codes)}


class ProblemOut(Schema):
    code: str
    message: str
    node: str | None = None
    edge: str | None = None


class InvalidPipelineOut(ErrorOut):
    # Present when the document was read and found invalid (code invalid_pipeline);
    # absent when the request itself did not match the schema (invalid_request).
    problems: list[ProblemOut] | None = None


class PipelineIn(Schema):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    document: dict[str, Any]


class PipelinePatch(Schema):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = None


class DocumentIn(Schema):
    document: dict[str, Any]


class DuplicateIn(Schema):
    name: str = Field(min_length=1, max_length=200)


class ValidationOut(Schema):
    valid: bool
    problems: list[ProblemOut]


class PipelineOut(Schema):
    id: UUID
    name: str
    description: str
    latest_version: int | None
    created_at: datetime
    updated_at: datetime


class PipelineDetailOut(PipelineOut):
    document: dict[str, Any] | None


class VersionOut(Schema):
    number: int
    created_at: datetime


class VersionDetailOut(VersionOut):
    document: dict[str, Any]


class RunIn(Schema):
    input: Any = None
    version: int | None = None


class RerunIn(Schema):
    node_id: str = Field(min_length=1, max_length=64)


class NodeRunOut(Schema):
    node_id: str
    state: str
    attempt: int
    reused: bool
    reason: str
    inputs: dict[str, Any] | None
    outputs: dict[str, Any] | None
    next_nodes: list[str] | None
    status_message: str
    error: dict[str, Any] | None
    logs: list[dict[str, Any]]
    dropped_log_lines: int
    # Attempts that ended because the Docker engine was away: retried on their own
    # budget, not the node's retries (node_runner/engine_outage.py).
    infra_retries: int = 0
    worker: str
    container_id: str
    started_at: datetime | None
    finished_at: datetime | None
    # {"inputs"|"outputs": {port: {"bytes": size, "preview": text}}} for values too large to show
    truncated: dict[str, Any] | None = None


class RunOut(Schema):
    id: UUID
    pipeline_id: UUID
    pipeline_name: str
    version: int
    state: str
    reason: str
    source_run_id: UUID | None
    rerun_from: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RunDetailOut(RunOut):
    input: Any
    nodes: list[NodeRunOut]


class NodeTestIn(Schema):
    code: str = Field(min_length=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    # Runtime limits only (timeout_s, memory_mb, cpus, pids, network): a single
    # test has no retries.
    limits: dict[str, Any] = Field(default_factory=dict)
    label: str = Field(default="", max_length=200)


class NodeTestStartedOut(Schema):
    id: UUID
    state: str


class NodeTestOut(Schema):
    id: UUID
    label: str
    state: str
    next_nodes: list[str]
    outputs: dict[str, Any]
    status_message: str
    error: dict[str, Any] | None
    logs: list[dict[str, Any]]
    dropped_log_lines: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class MeOut(Schema):
    username: str
    role: str | None
