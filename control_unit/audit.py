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


def record_secret_event(sender: Any, *, event: Any, user: Any, **kwargs: Any) -> None:
    """The vault's own audit event (secret_manager.signals.secret_audited), said again
    in the general audit log beside sign-ins, pipeline edits and run controls."""
    record(
        f"secret.{event.action}", user, ",".join(event.names), run=event.run_id or None,
        node=event.node_id or None, detail=event.detail or None,
    )  # fmt: skip
