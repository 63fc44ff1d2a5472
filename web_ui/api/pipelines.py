"""/api/pipelines: create, list, search, rename, version, duplicate, delete, validate,
export, import, and start runs. Views parse, check the role, call one action."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from ninja import Body, Router, Status

from control_unit import pipeline_actions
from control_unit.graph import validate_document
from control_unit.models import Pipeline, PipelineVersion
from control_unit.run_actions import do_start_run
from web_ui.api.runs import run_out
from web_ui.api.schemas import (
    DocumentIn,
    DuplicateIn,
    ErrorOut,
    InvalidPipelineOut,
    PipelineDetailOut,
    PipelineIn,
    PipelineOut,
    PipelinePatch,
    RunIn,
    RunOut,
    ValidationOut,
    VersionDetailOut,
    VersionOut,
)
from web_ui.rate_limits import check_run_start_rate
from web_ui.roles import EDITOR, VIEWER, require_role

router = Router(tags=["pipelines"])
ERRORS: dict[int, Any] = {
    400: ErrorOut,
    401: ErrorOut,
    403: ErrorOut,
    404: ErrorOut,
    413: ErrorOut,
    422: InvalidPipelineOut,
}


def pipeline_out(pipeline: Pipeline, with_document: bool = False) -> dict[str, Any]:
    latest = pipeline.latest_version()
    data = {
        "id": pipeline.id,
        "name": pipeline.name,
        "description": pipeline.description,
        "latest_version": latest.number if latest else None,
        "created_at": pipeline.created_at,
        "updated_at": pipeline.updated_at,
    }
    if with_document:
        data["document"] = latest.document if latest else None
    return data


@router.get("", response={200: list[PipelineOut], **ERRORS})
def list_pipelines(request: HttpRequest, search: str = "") -> list[dict[str, Any]]:
    require_role(request.user, VIEWER)
    pipelines = Pipeline.objects.all()
    if search:
        pipelines = pipelines.filter(name__icontains=search)
    return [pipeline_out(pipeline) for pipeline in pipelines]


@router.post("", response={201: PipelineDetailOut, **ERRORS})
def create_pipeline(request: HttpRequest, payload: PipelineIn) -> Status[Any]:
    require_role(request.user, EDITOR)
    pipeline = pipeline_actions.do_create_pipeline(
        payload.name, payload.document, request.user, payload.description
    )
    return Status(201, pipeline_out(pipeline, with_document=True))


@router.post("/validate", response={200: ValidationOut, **ERRORS})
def validate(request: HttpRequest, payload: DocumentIn) -> dict[str, Any]:
    require_role(request.user, VIEWER)
    problems = validate_document(
        payload.document,
        max_document_bytes=settings.FLOWKIT_MAX_DOCUMENT_BYTES,
        max_code_bytes=settings.FLOWKIT_MAX_CODE_BYTES,
    )
    return {"valid": not problems, "problems": [problem.as_dict() for problem in problems]}


@router.post("/import", response={201: PipelineDetailOut, **ERRORS})
def import_pipeline(request: HttpRequest, payload: dict[str, Any] = Body(...)) -> Status[Any]:  # noqa: B008
    require_role(request.user, EDITOR)
    pipeline = pipeline_actions.do_import_pipeline(payload, request.user)
    return Status(201, pipeline_out(pipeline, with_document=True))


@router.get("/{pipeline_id}", response={200: PipelineDetailOut, **ERRORS})
def get_pipeline(request: HttpRequest, pipeline_id: UUID) -> dict[str, Any]:
    require_role(request.user, VIEWER)
    return pipeline_out(get_object_or_404(Pipeline, id=pipeline_id), with_document=True)


@router.patch("/{pipeline_id}", response={200: PipelineDetailOut, **ERRORS})
def update_pipeline(request: HttpRequest, pipeline_id: UUID, payload: PipelinePatch) -> dict[str, Any]:
    require_role(request.user, EDITOR)
    pipeline = pipeline_actions.do_update_pipeline(
        get_object_or_404(Pipeline, id=pipeline_id),
        name=payload.name,
        description=payload.description,
        user=request.user,
    )
    return pipeline_out(pipeline, with_document=True)


@router.put("/{pipeline_id}/document", response={201: VersionOut, **ERRORS})
def save_document(request: HttpRequest, pipeline_id: UUID, payload: DocumentIn) -> Status[Any]:
    require_role(request.user, EDITOR)
    pipeline = get_object_or_404(Pipeline, id=pipeline_id)
    return Status(201, pipeline_actions.do_save_version(pipeline, payload.document, request.user))


@router.get("/{pipeline_id}/versions", response={200: list[VersionOut], **ERRORS})
def list_versions(request: HttpRequest, pipeline_id: UUID) -> Any:
    require_role(request.user, VIEWER)
    return get_object_or_404(Pipeline, id=pipeline_id).versions.order_by("-number")


@router.get("/{pipeline_id}/versions/{number}", response={200: VersionDetailOut, **ERRORS})
def get_version(request: HttpRequest, pipeline_id: UUID, number: int) -> PipelineVersion:
    require_role(request.user, VIEWER)
    return get_object_or_404(PipelineVersion, pipeline_id=pipeline_id, number=number)


@router.post("/{pipeline_id}/duplicate", response={201: PipelineDetailOut, **ERRORS})
def duplicate_pipeline(request: HttpRequest, pipeline_id: UUID, payload: DuplicateIn) -> Status[Any]:
    require_role(request.user, EDITOR)
    source = get_object_or_404(Pipeline, id=pipeline_id)
    copy = pipeline_actions.do_duplicate_pipeline(source, payload.name, request.user)
    return Status(201, pipeline_out(copy, with_document=True))


@router.delete("/{pipeline_id}", response={204: None, **ERRORS})
def delete_pipeline(request: HttpRequest, pipeline_id: UUID) -> Status[Any]:
    require_role(request.user, EDITOR)
    pipeline_actions.do_delete_pipeline(get_object_or_404(Pipeline, id=pipeline_id), request.user)
    return Status(204, None)


@router.get("/{pipeline_id}/export", response={200: dict[str, Any], **ERRORS})
def export_pipeline(request: HttpRequest, pipeline_id: UUID) -> HttpResponse:
    require_role(request.user, VIEWER)
    pipeline = get_object_or_404(Pipeline, id=pipeline_id)
    response = HttpResponse(
        json.dumps(pipeline_actions.export_pipeline(pipeline), indent=2), content_type="application/json"
    )
    filename = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in pipeline.name)[:80] or "pipeline"
    response["Content-Disposition"] = f'attachment; filename="{filename}.flowkit.json"'
    return response


@router.post("/{pipeline_id}/runs", response={201: RunOut, 429: ErrorOut, **ERRORS})
def start_run(request: HttpRequest, pipeline_id: UUID, payload: RunIn) -> Status[Any]:
    require_role(request.user, EDITOR)
    check_run_start_rate(request)
    pipeline = get_object_or_404(Pipeline, id=pipeline_id)
    versions = pipeline.versions.all()
    version = get_object_or_404(versions, number=payload.version) if payload.version else versions.first()
    if version is None:
        raise PipelineVersion.DoesNotExist(f"pipeline {pipeline.name!r} has no saved version")
    return Status(201, run_out(do_start_run(version, payload.input, request.user)))
