"""Actions on pipelines and their immutable versions. A document is validated in
full before anything is written, so a rejected one changes nothing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from control_unit import audit
from control_unit.graph import InvalidPipeline, Problem, validate_document
from control_unit.models import Pipeline, PipelineVersion
from control_unit.storable import unstorable_path

EXPORT_FORMAT = "flowkit-pipeline"


def check_document(document: Any) -> None:
    problems = validate_document(
        document,
        max_document_bytes=settings.FLOWKIT_MAX_DOCUMENT_BYTES,
        max_code_bytes=settings.FLOWKIT_MAX_CODE_BYTES,
    )
    if not problems and (where := unstorable_path(document)) is not None:
        problems = [
            Problem(
                "invalid_document",
                f"the document holds a NUL character or an unpaired surrogate at {where or 'the top'}, "
                "which cannot be stored",
            )
        ]
    if problems:
        raise InvalidPipeline(problems)


@transaction.atomic
def do_create_pipeline(
    name: str, document: Any, user: Any = None, description: str = "", *, action: str = "pipeline.create"
) -> Pipeline:
    check_document(document)
    pipeline = Pipeline.objects.create(name=name, description=description, created_by=user)
    PipelineVersion.objects.create(pipeline=pipeline, number=1, document=document, created_by=user)
    audit.record(action, user, pipeline.id, name=name)
    return pipeline


@transaction.atomic
def do_save_version(pipeline: Pipeline, document: Any, user: Any = None) -> PipelineVersion:
    check_document(document)
    # Lock the pipeline so two saves at once get distinct version numbers.
    locked = Pipeline.objects.select_for_update().get(id=pipeline.id)
    latest = locked.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = PipelineVersion.objects.create(
        pipeline=locked, number=latest + 1, document=document, created_by=user
    )
    locked.save(update_fields=["updated_at"])
    audit.record("pipeline.save", user, locked.id, name=locked.name, version=version.number)
    return version


@transaction.atomic
def do_update_pipeline(
    pipeline: Pipeline, *, name: str | None = None, description: str | None = None, user: Any = None
) -> Pipeline:
    changes: dict[str, Any] = {}
    if name is not None and name != pipeline.name:
        changes["name"] = {"from": pipeline.name, "to": name}
        pipeline.name = name
    if description is not None and description != pipeline.description:
        changes["description"] = True
        pipeline.description = description
    if not changes:
        return pipeline  # nothing to store, and nothing happened to audit
    pipeline.save()
    audit.record("pipeline.update", user, pipeline.id, **changes)
    return pipeline


@transaction.atomic
def do_duplicate_pipeline(pipeline: Pipeline, name: str, user: Any = None) -> Pipeline:
    latest = pipeline.latest_version()
    if latest is None:
        raise InvalidPipeline([Problem("empty_graph", f"pipeline {pipeline.name!r} has no saved version")])
    return do_create_pipeline(name, latest.document, user, pipeline.description, action="pipeline.duplicate")


@transaction.atomic
def do_delete_pipeline(pipeline: Pipeline, user: Any = None) -> None:
    audit.record("pipeline.delete", user, pipeline.id, name=pipeline.name, runs=pipeline.runs.count())
    pipeline.runs.all().delete()
    pipeline.delete()


def export_pipeline(pipeline: Pipeline, version: PipelineVersion | None = None) -> dict[str, Any]:
    version = version or pipeline.latest_version()
    return {
        "format": EXPORT_FORMAT,
        "name": pipeline.name,
        "description": pipeline.description,
        "version": version.number if version else None,
        "document": version.document if version else None,
    }


def do_import_pipeline(data: Any, user: Any = None, name: str | None = None) -> Pipeline:
    """Import an exported pipeline file, or a bare pipeline document."""
    if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT:
        document = data.get("document")
        name = name or str(data.get("name") or "imported pipeline")
        description = str(data.get("description") or "")
    else:
        document = data
        name = name or str((data or {}).get("name") if isinstance(data, dict) else "") or "imported pipeline"
        description = ""
    return do_create_pipeline(name, document, user, description, action="pipeline.import")
