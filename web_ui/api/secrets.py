"""/api/secrets: names, descriptions and dates only; values are write-only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from secret_manager import actions
from web_ui.api.schemas import error_responses
from web_ui.roles import ADMIN, EDITOR, VIEWER, Forbidden, has_role

router = Router(tags=["secrets"])
ERRORS = error_responses(404, 409, 422)
MAX_VALUE_CHARS = 65536
MAX_AUDIT_EVENTS = 5000


class SecretIn(Schema):
    name: str = Field(min_length=1, max_length=128)
    value: str = Field(max_length=MAX_VALUE_CHARS)
    description: str = ""


class SecretUpdate(Schema):
    value: str = Field(max_length=MAX_VALUE_CHARS)
    description: str | None = None


class SecretOut(Schema):
    name: str
    description: str
    created_at: datetime
    updated_at: datetime
    last_used_at: datetime | None


class AuditEventOut(Schema):
    at: datetime
    action: str
    actor_name: str
    names: list[str]
    run_id: str
    node_id: str
    detail: str


def _require(request: HttpRequest, role: str, action: str, names: list[str]) -> None:
    """Like require_role, but a refused attempt on a secret is audited."""
    if not has_role(request.user, role):
        actions.do_record_denied(request.user, action, names, f"the {role} role is needed")
        raise Forbidden(f"this needs the {role} role")


def _out(name: str) -> dict[str, Any]:
    return next(secret for secret in actions.list_secrets() if secret["name"] == name)


@router.get("", response={200: list[SecretOut], **ERRORS})
def list_secrets(request: HttpRequest) -> list[dict[str, Any]]:
    _require(request, VIEWER, "list", [])
    return actions.list_secrets()


@router.post("", response={201: SecretOut, **ERRORS})
def create_secret(request: HttpRequest, payload: SecretIn) -> Status[Any]:
    _require(request, EDITOR, "create", [payload.name])
    actions.do_create_secret(payload.name, payload.value, user=request.user, description=payload.description)
    return Status(201, _out(payload.name))


# Before /{name}: Django tries the routes in order, and /audit must not be taken for a name.
@router.get("/audit", response={200: list[AuditEventOut], **ERRORS})
def audit_log(
    request: HttpRequest,
    limit: int = Query(
        200, ge=1, le=MAX_AUDIT_EVENTS, description=f"events per answer, at most {MAX_AUDIT_EVENTS}"
    ),
) -> Any:
    _require(request, ADMIN, "read audit log", [])
    return actions.audit_log(limit=limit)


@router.put("/{name}", response={200: SecretOut, **ERRORS})
def replace_secret(request: HttpRequest, name: str, payload: SecretUpdate) -> dict[str, Any]:
    _require(request, EDITOR, "update", [name])
    actions.do_replace_secret(name, payload.value, user=request.user, description=payload.description)
    return _out(name)


@router.delete("/{name}", response={204: None, **ERRORS})
def delete_secret(request: HttpRequest, name: str) -> Status[Any]:
    _require(request, EDITOR, "delete", [name])
    actions.do_delete_secret(name, user=request.user)
    return Status(204, None)
