"""/api/audit: the append-only audit log, for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from control_unit.models import AuditEvent
from web_ui.api.errors import in_utc
from web_ui.api.schemas import error_responses
from web_ui.roles import ADMIN, require_role

router = Router(tags=["audit"])
ERRORS = error_responses(422)
MAX_AUDIT_EVENTS = 1000


class AuditFilters(Schema):
    action: str | None = None  # a prefix: "run." gives every run control
    actor: str | None = None
    since: datetime | None = None
    limit: int = Field(
        200, ge=1, le=MAX_AUDIT_EVENTS, description=f"events per answer, at most {MAX_AUDIT_EVENTS}"
    )


class AuditEventOut(Schema):
    id: int
    at: datetime
    actor: str
    via: str
    action: str
    target: str
    detail: dict[str, Any]
    ip: str | None


@router.get("", response={200: list[AuditEventOut], **ERRORS})
def audit_log(request: HttpRequest, filters: Query[AuditFilters]) -> Any:
    """Sign-ins, pipeline edits, run controls and secret operations, newest first."""
    require_role(request.user, ADMIN)
    events = AuditEvent.objects.all()
    if filters.action:
        events = events.filter(action__startswith=filters.action)
    if filters.actor:
        events = events.filter(actor=filters.actor)
    if filters.since:
        events = events.filter(at__gte=in_utc(filters.since, "since"))
    return events[: filters.limit]
