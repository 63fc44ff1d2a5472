"""The audit log: one append-only record per sign-in, pipeline edit, run control and
secret operation, written in the same transaction as what it records."""

from __future__ import annotations

from typing import Any

from control_unit.models import AuditEvent


def actor_name(user: Any) -> str:
    if user is None or not getattr(user, "is_authenticated", False):
        return ""
    return str(user.get_username())[:150]


def record(
    action: str, user: Any = None, target: Any = "", *, via: str = "", ip: str | None = None, **detail: Any
) -> AuditEvent:
    """Record ``action`` on ``target`` by ``user``. ``detail`` must never hold a secret
    value: names, ids and reasons only."""
    return AuditEvent.objects.create(
        actor=actor_name(user),
        via=via,
        action=action,
        target=str(target)[:200],
        detail=detail,
        ip=ip,
    )
