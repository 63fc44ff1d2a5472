"""/api/runs: list with filters, detail with node states, and run control."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db.models import Q
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema, Status
from pydantic import Field

from control_unit import run_actions
from control_unit.fcb_store import graph_of
from control_unit.models import NodeRun, Run
from control_unit.node_inputs import node_rows
from trace_monitor.previews import capped_node
from web_ui.api.errors import ApiError, in_utc
from web_ui.api.refusals import refusals_audited
from web_ui.api.schemas import ErrorOut, RerunIn, RunDetailOut, RunOut, error_responses
from web_ui.rate_limits import check_run_start_rate
from web_ui.roles import EDITOR, VIEWER, require_role

router = Router(tags=["runs"])
ERRORS = error_responses(404, 409, 422)
NODE_FIELDS = (*NodeRun.VISIBLE_FIELDS, "worker", "container_id")
MAX_RUNS_PER_PAGE = 1000


class RunFilters(Schema):
    pipeline: UUID | None = None
    state: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The next page: runs older than this one, the last of the page before.
    before: UUID | None = None
    limit: int = Field(
        100, ge=1, le=MAX_RUNS_PER_PAGE, description=f"runs per page, at most {MAX_RUNS_PER_PAGE}"
    )


def run_out(run: Run, detail: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": run.id,
        "pipeline_id": run.pipeline_id,
        "pipeline_name": run.pipeline.name,
        "version": run.version.number,
        "state": run.state,
        "reason": run.reason,
        "source_run_id": run.source_run_id,
        "rerun_from": run.rerun_from,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }
    if detail:
        data["input"] = run.input
        # Large inputs and outputs keep a preview here; whole ones are downloaded
        # from /api/runs/{id}/nodes/{node}/outputs/{port}.
        limit = settings.FLOWKIT_TRACE_PREVIEW_BYTES
        nodes = node_rows(run, graph_of(run), NODE_FIELDS)
        data["nodes"] = [capped_node(node, limit) for node in nodes]
    return data


def _run(run_id: UUID) -> Run:
    return get_object_or_404(Run.objects.select_related("pipeline", "version"), id=run_id)


@router.get("", response={200: list[RunOut], **ERRORS})
def list_runs(request: HttpRequest, filters: Query[RunFilters]) -> list[dict[str, Any]]:
    require_role(request.user, VIEWER)
    runs = Run.objects.select_related("pipeline", "version")
    if filters.pipeline:
        runs = runs.filter(pipeline_id=filters.pipeline)
    if filters.state:
        runs = runs.filter(state=filters.state)
    if filters.since:
        runs = runs.filter(created_at__gte=in_utc(filters.since, "since"))
    if filters.until:
        runs = runs.filter(created_at__lt=in_utc(filters.until, "until"))
    if filters.before:
        last = Run.objects.filter(id=filters.before).values_list("created_at", flat=True).first()
        if last is None:
            raise ApiError(422, "unknown_run", f"there is no run {filters.before} to list the runs before")
        # Keyset paging on (created_at, id): runs created in the same microsecond are
        # neither repeated nor skipped across pages.
        runs = runs.filter(Q(created_at__lt=last) | Q(created_at=last, id__lt=filters.before))
    runs = runs.order_by("-created_at", "-id")
    return [run_out(run) for run in runs[: filters.limit]]


@router.get("/{run_id}", response={200: RunDetailOut, **ERRORS})
def get_run(request: HttpRequest, run_id: UUID) -> dict[str, Any]:
    require_role(request.user, VIEWER)
    return run_out(_run(run_id), detail=True)


@router.post("/{run_id}/pause", response={200: RunOut, **ERRORS})
def pause_run(request: HttpRequest, run_id: UUID) -> dict[str, Any]:
    with refusals_audited(request, "run.pause", run_id):
        require_role(request.user, EDITOR)
        return run_out(run_actions.do_pause_run(_run(run_id).id, request.user))


@router.post("/{run_id}/resume", response={200: RunOut, **ERRORS})
def resume_run(request: HttpRequest, run_id: UUID) -> dict[str, Any]:
    with refusals_audited(request, "run.resume", run_id):
        require_role(request.user, EDITOR)
        return run_out(run_actions.do_resume_run(_run(run_id).id, request.user))


@router.post("/{run_id}/cancel", response={200: RunOut, **ERRORS})
def cancel_run(request: HttpRequest, run_id: UUID) -> dict[str, Any]:
    with refusals_audited(request, "run.cancel", run_id):
        require_role(request.user, EDITOR)
        return run_out(run_actions.do_cancel_run(_run(run_id).id, user=request.user))


@router.post("/{run_id}/restart", response={201: RunOut, 429: ErrorOut, **ERRORS})
def restart_run(request: HttpRequest, run_id: UUID) -> Status[Any]:
    with refusals_audited(request, "run.restart", run_id):
        require_role(request.user, EDITOR)
        check_run_start_rate(request)
        return Status(201, run_out(run_actions.do_restart_run(_run(run_id).id, request.user)))


@router.post("/{run_id}/rerun", response={201: RunOut, 429: ErrorOut, **ERRORS})
def rerun_from(request: HttpRequest, run_id: UUID, payload: RerunIn) -> Status[Any]:
    with refusals_audited(request, "run.rerun", run_id):
        require_role(request.user, EDITOR)
        check_run_start_rate(request)
        run = run_actions.do_rerun_from(_run(run_id).id, payload.node_id, request.user)
        return Status(201, run_out(run))
