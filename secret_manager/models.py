"""Secret vault models.

A Secret row holds only a Fernet token (see vault.py); no model method, string form
or repr shows a value. SecretAuditEvent is append-only: who did what to which secrets,
and which run and node a secret was resolved for.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from secret_manager.errors import AuditLogIsAppendOnly
from secret_manager.references import MAX_NAME_CHARS


class Secret(models.Model):
    name = models.CharField(max_length=MAX_NAME_CHARS, unique=True)
    description = models.TextField(blank=True)
    # editable=False keeps the token out of ModelForms and the admin.
    ciphertext = models.BinaryField(editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # The same rule as references.NAME_PATTERN, so no other path stores a name
            # that a node could never reference.
            models.CheckConstraint(
                condition=models.Q(name__regex=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"), name="secret_name_format"
            )
        ]

    def __str__(self) -> str:
        return f"secret {self.name}"

    def __repr__(self) -> str:
        return f"<Secret {self.name}>"


class AuditAction(models.TextChoices):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"
    ROTATED = "rotated"
    RESOLVED = "resolved"
    DENIED = "denied"


class AuditEventQuerySet(models.QuerySet["SecretAuditEvent"]):
    """Refuses bulk changes. Deleting a user still sets ``actor`` to NULL: Django's
    deletion collector goes through the plain base manager, and ``actor_name`` keeps
    who it was."""

    def update(self, **kwargs: Any) -> int:
        raise AuditLogIsAppendOnly("the secret audit log is append-only: events cannot be updated")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> int:
        # Refused here, before Django opens the transaction it would leave broken.
        raise AuditLogIsAppendOnly("the secret audit log is append-only: events cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("the secret audit log is append-only: events cannot be deleted")


class SecretAuditEvent(models.Model):
    action = models.CharField(max_length=16, choices=AuditAction.choices)
    names = models.JSONField(default=list, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept when the user is deleted; empty for the system (a worker, a management command).
    actor_name = models.CharField(max_length=150, blank=True)
    run_id = models.CharField(max_length=200, blank=True)
    node_id = models.CharField(max_length=200, blank=True)
    detail = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["at"]), models.Index(fields=["action", "at"])]

    def __str__(self) -> str:
        return f"{self.action} {', '.join(self.names)} by {self.actor_name or 'system'}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditLogIsAppendOnly("the secret audit log is append-only: events cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("the secret audit log is append-only: events cannot be deleted")
