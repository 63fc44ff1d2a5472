"""/api/runs/{id}/...: a run's trace (events, timeline, node detail, whole inputs and
outputs, resource series), /api/pipelines/{id}/figures and /api/workers."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema
from pydantic import Field

from control_unit import run_stream
from control_unit.fcb_store import graph_of
from control_unit.models import NodeRun, Pipeline, Run
from control_unit.node_inputs import node_rows
from control_unit.run_figures import pipeline_figures
from trace_monitor import resource_monitor
from trace_monitor.kinds import ALL_KINDS
from trace_monitor.models import NodeExecution, ResourceSample
from trace_monitor.previews import capped_node
from web_ui.api.errors import ApiError, in_utc
from web_ui.api.schemas import error_responses
from web_ui.roles import VIEWER, require_role

router = Router(tags=["traces"])
ERRORS = error_responses(404, 422)
EXECUTION_FIELDS = (
    "node_id", "attempt", "worker", "container_id", "started_at", "finished_at", "duration_s", "outcome",
    "error_type", "cpu_percent_max", "memory_bytes_max", "net_rx_bytes", "net_tx_bytes",
)  # fmt: skip
SAMPLE_FIELDS = (
    "attempt", "at", "cpu_percent", "memory_bytes", "memory_limit_bytes", "net_rx_bytes", "net_tx_bytes",
    "pids",
)  # fmt: skip


class EventFilters(Schema):
    after: int = 0
    kind: list[str] | None = None
    node: str | None = None
    limit: int = Field(
        500,
        ge=1,
        le=run_stream.MAX_EVENTS_PER_READ,
        description=f"events per page, at most {run_stream.MAX_EVENTS_PER_READ}",
    )


class EventOut(Schema):
    seq: int
    kind: str
    node_id: str | None
    attempt: int
    at: datetime
    data: dict[str, Any]


class EventPageOut(Schema):
    events: list[EventOut]
    last_seq: int
    more: bool


class ExecutionOut(Schema):
    node_id: str
    attempt: int
    worker: str
    container_id: str
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    outcome: str
    error_type: str
    cpu_percent_max: float | None
    memory_bytes_max: int | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None


class SampleOut(Schema):
    attempt: int
    at: datetime
    cpu_percent: float | None
    memory_bytes: int
    memory_limit_bytes: int | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    pids: int | None


class NodeDetailOut(Schema):
    node: dict[str, Any]
    attempts: list[ExecutionOut]


def _run(run_id: UUID) -> Run:
    return get_object_or_404(Run, id=run_id)


@router.get("/runs/{run_id}/events", response={200: EventPageOut, **ERRORS})
def run_events(request: HttpRequest, run_id: UUID, filters: Query[EventFilters]) -> dict[str, Any]:
    """Events after ``after``, in order; filter by ``kind`` (repeatable) and ``node``."""
    require_role(request.user, VIEWER)
    run = _run(run_id)
    unknown = set(filters.kind or ()) - ALL_KINDS
    if unknown:
        raise ApiError(422, "unknown_kind", f"unknown event kind(s): {', '.join(sorted(unknown))}")
    limit = filters.limit
    events = run_stream.events_after(
        run.id, filters.after, limit + 1, kinds=filters.kind, node_id=filters.node
    )
    return {"events": events[:limit], "last_seq": run_stream.last_seq(run.id), "more": len(events) > limit}


@router.get("/runs/{run_id}/timeline", response={200: list[ExecutionOut], **ERRORS})
def run_timeline(request: HttpRequest, run_id: UUID) -> Any:
    """Every node execution of the run (one per attempt), in the order they started."""
    require_role(request.user, VIEWER)
    return (
        NodeExecution.objects.filter(run=_run(run_id)).order_by("started_at", "id").values(*EXECUTION_FIELDS)
    )


@router.get("/runs/{run_id}/nodes/{node_id}", response={200: NodeDetailOut, **ERRORS})
def node_detail(request: HttpRequest, run_id: UUID, node_id: str) -> dict[str, Any]:
    """A node's state and results (large values capped) and all its attempts."""
    require_role(request.user, VIEWER)
    run = _run(run_id)
    found = node_rows(run, graph_of(run), (*NodeRun.VISIBLE_FIELDS, "worker"), node_id=node_id)
    if not found:
        raise Http404
    (node,) = found
    attempts = NodeExecution.objects.filter(run=run, node_id=node_id).order_by("attempt")
    return {
        "node": capped_node(node, settings.FLOWKIT_TRACE_PREVIEW_BYTES),
        "attempts": list(attempts.values(*EXECUTION_FIELDS)),
    }


@router.get("/runs/{run_id}/nodes/{node_id}/{direction}/{port}", response={200: Any, **ERRORS})
def node_value(request: HttpRequest, run_id: UUID, node_id: str, direction: str, port: str) -> HttpResponse:
    """One whole input or output value, as a JSON download."""
    require_role(request.user, VIEWER)
    if direction not in ("inputs", "outputs"):
        raise Http404
    run = _run(run_id)
    found = node_rows(run, graph_of(run), ("node_id", direction), node_id=node_id)
    values = found[0][direction] if found else None
    if values is None or port not in values:
        raise ApiError(404, "no_value", f"node {node_id} has no {direction[:-1]} {port!r} in this run")
    response = HttpResponse(json.dumps(values[port], ensure_ascii=False), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{node_id}-{direction[:-1]}-{_safe(port)}.json"'
    return response


@router.get("/runs/{run_id}/nodes/{node_id}/resources", response={200: list[SampleOut], **ERRORS})
def node_resources(request: HttpRequest, run_id: UUID, node_id: str, attempt: int | None = None) -> Any:
    """The node's resource samples over time (all attempts, or one)."""
    require_role(request.user, VIEWER)
    samples = ResourceSample.objects.filter(run=_run(run_id), node_id=node_id)
    if attempt is not None:
        samples = samples.filter(attempt=attempt)
    return samples.order_by("attempt", "at").values(*SAMPLE_FIELDS)


@router.get("/pipelines/{pipeline_id}/figures", response={200: dict[str, Any], **ERRORS})
def figures(request: HttpRequest, pipeline_id: UUID, since: datetime | None = None) -> dict[str, Any]:
    """Success rate, run durations, and per node p50 / p95 durations and failures."""
    require_role(request.user, VIEWER)
    return pipeline_figures(get_object_or_404(Pipeline, id=pipeline_id).id, in_utc(since, "since"))


@router.get("/workers", response={200: dict[str, Any], **ERRORS})
def workers(request: HttpRequest) -> dict[str, Any]:
    """The resource monitor's snapshot: workers, host load, NPUs and their latest samples."""
    require_role(request.user, VIEWER)
    return resource_monitor.snapshot()


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:80]
