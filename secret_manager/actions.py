"""Actions of the secret vault. Each owns its transaction and writes its audit event
in that same transaction, so an event exists exactly when the change it records does.

Plaintext values exist only as arguments and return values here: they are never
logged, never put in an error message and never written to the audit log.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from secret_manager.errors import DuplicateSecret, InvalidSecretValue, UnknownSecret
from secret_manager.masking import MIN_MASKED_LENGTH
from secret_manager.models import AuditAction, Secret, SecretAuditEvent
from secret_manager.references import validate_name
from secret_manager.signals import secret_audited
from secret_manager.vault import decrypt, encrypt

MIN_VALUE_CHARS = MIN_MASKED_LENGTH  # shorter values could not be masked in their encodings
MAX_VALUE_BYTES = 64 * 1024
SECRET_FIELDS = ("name", "description", "created_at", "updated_at", "last_used_at")
AUDIT_FIELDS = ("at", "action", "actor_name", "names", "run_id", "node_id", "detail")
_ID_CHARS = 200  # SecretAuditEvent.run_id and node_id


def validate_value(value: str) -> None:
    """Any text of 4 characters up to 64 KiB (65536 bytes) of UTF-8 is a value: quotes,
    backslashes, newlines, NUL, ``>>>`` and non-ASCII included. Messages give sizes,
    never content."""
    if not isinstance(value, str):
        raise InvalidSecretValue(f"a secret value must be text, not {type(value).__name__}")
    if len(value) < MIN_VALUE_CHARS:
        # Masking the encodings of a 1-3 character value would mask unrelated output,
        # and not masking them would leak it (see masking.py).
        raise InvalidSecretValue(
            f"a secret value must be at least {MIN_VALUE_CHARS} characters long; this one has {len(value)}"
        )
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidSecretValue(
            f"a secret value must be valid Unicode text; character {exc.start + 1} is an unpaired surrogate"
        ) from None
    if size > MAX_VALUE_BYTES:
        raise InvalidSecretValue(
            f"a secret value must be at most {MAX_VALUE_BYTES} bytes (64 KiB) of UTF-8; this one has {size}"
        )


def _validate_description(description: str | None) -> None:
    if description is None:
        return
    if not isinstance(description, str):
        raise InvalidSecretValue(f"a secret description must be text, not {type(description).__name__}")
    # PostgreSQL text holds neither NUL nor unpaired surrogates: refuse them clearly here.
    if _storable(description) != description:
        raise InvalidSecretValue("a secret description cannot contain NUL characters or unpaired surrogates")


def _storable(text: str, limit: int | None = None) -> str:
    """``text`` as PostgreSQL can store it: NUL and unpaired surrogates escaped."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return safe[:limit]


def _actor(user: Any) -> tuple[Any, str]:
    """The user to link an event to, and the name to keep if that user is deleted.
    No user is the system; a user who is not logged in is recorded as anonymous."""
    if user is None:
        return None, ""
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        return None, "anonymous"
    return user, user.get_username()


def _audit(
    action: AuditAction,
    names: list[str],
    *,
    user: Any = None,
    run_id: str = "",
    node_id: str = "",
    detail: str = "",
) -> SecretAuditEvent:
    actor, actor_name = _actor(user)
    # Names and details of refused requests are whatever the requester sent; an audit
    # event must still be written, so they are made storable rather than refused.
    stored_names = [_storable(name, _ID_CHARS) for name in names]
    event = SecretAuditEvent.objects.create(
        action=action, names=stored_names, actor=actor, actor_name=actor_name,
        run_id=_storable(run_id, _ID_CHARS), node_id=_storable(node_id, _ID_CHARS), detail=_storable(detail),
    )  # fmt: skip
    # The general audit log (control_unit.audit, a layer above) says the same, in this
    # transaction: signal receivers run synchronously.
    secret_audited.send(SecretAuditEvent, event=event, user=user)
    return event


def _locked(name: str) -> Secret:
    secret = Secret.objects.select_for_update().filter(name=name).first()
    if secret is None:
        raise UnknownSecret(name)
    return secret


@transaction.atomic
def do_create_secret(name: str, value: str, *, user: Any, description: str = "") -> Secret:
    """A new secret; DuplicateSecret if the name is taken (nothing is changed then)."""
    validate_name(name)
    validate_value(value)
    _validate_description(description)
    if Secret.objects.filter(name=name).exists():
        raise DuplicateSecret(f"a secret named {name} already exists")
    actor, _ = _actor(user)
    try:
        # A savepoint, so that losing a race for the name leaves the transaction usable.
        with transaction.atomic():
            secret = Secret.objects.create(
                name=name, description=description or "", ciphertext=encrypt(name, value),
                created_by=actor, updated_by=actor,
            )  # fmt: skip
    except IntegrityError:
        if not Secret.objects.filter(name=name).exists():
            raise  # not a lost race for the name: let the real problem show
        raise DuplicateSecret(f"a secret named {name} already exists") from None
    _audit(AuditAction.CREATED, [name], user=user)
    return secret


@transaction.atomic
def do_replace_secret(name: str, value: str, *, user: Any, description: str | None = None) -> Secret:
    """A new value for an existing secret (and a new description unless None);
    UnknownSecret if there is no such secret."""
    validate_name(name)
    validate_value(value)
    _validate_description(description)
    secret = _locked(name)
    secret.ciphertext = encrypt(name, value)
    secret.updated_by, _ = _actor(user)
    fields = ["ciphertext", "updated_by", "updated_at"]
    if description is not None:
        secret.description = description
        fields.append("description")
    secret.save(update_fields=fields)
    _audit(AuditAction.UPDATED, [name], user=user)
    return secret


@transaction.atomic
def do_set_secret(name: str, value: str, *, user: Any, description: str | None = None) -> Secret:
    """Create the secret, or replace its value if it exists. A None description keeps
    the existing one (or leaves a new secret's empty)."""
    validate_name(name)
    validate_value(value)
    _validate_description(description)
    if Secret.objects.filter(name=name).exists():
        return do_replace_secret(name, value, user=user, description=description)
    try:
        # do_create_secret runs in a savepoint here, so a lost race leaves us usable.
        return do_create_secret(name, value, user=user, description=description or "")
    except DuplicateSecret:
        # Created by someone else since we looked: ours is the later write, so it wins.
        return do_replace_secret(name, value, user=user, description=description)


@transaction.atomic
def do_delete_secret(name: str, *, user: Any) -> None:
    """Delete a secret; UnknownSecret if there is no such secret."""
    _locked(name).delete()
    _audit(AuditAction.DELETED, [name], user=user)


@transaction.atomic
def do_rotate_secret_keys(*, user: Any = None, detail: str = "") -> int:
    """Re-encrypt every secret under the current primary key; returns how many.

    All rows are locked and rewritten in one transaction: if any secret cannot be
    decrypted, the error names it and nothing changes. Afterwards only the primary key
    is needed, and older keys can be removed from FLOWKIT_SECRET_KEYS.
    """
    secrets = list(Secret.objects.select_for_update().order_by("name"))
    for secret in secrets:
        secret.ciphertext = encrypt(secret.name, decrypt(secret.name, secret.ciphertext))
    # bulk_update leaves updated_at alone: the values did not change.
    Secret.objects.bulk_update(secrets, ["ciphertext"], batch_size=500)
    _audit(AuditAction.ROTATED, [secret.name for secret in secrets], user=user, detail=detail)
    return len(secrets)


@transaction.atomic
def resolve_secrets(names: list[str], *, run_id: str, node_id: str) -> dict[str, str]:
    """The values of exactly ``names``, for one node of one run.

    UnknownSecret names the first name that is not defined (and carries them all)
    before anything is decrypted or recorded. A successful resolution marks the secrets
    used and is audited with the names, the run and the node; never the values.
    """
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return {}
    rows = {secret.name: secret for secret in Secret.objects.filter(name__in=wanted)}
    unknown = [name for name in wanted if name not in rows]
    if unknown:
        raise UnknownSecret(unknown[0], unknown)
    values = {name: decrypt(name, rows[name].ciphertext) for name in wanted}
    # update() leaves updated_at alone: using a secret does not change it.
    Secret.objects.filter(name__in=wanted).update(last_used_at=timezone.now())
    _audit(AuditAction.RESOLVED, wanted, run_id=run_id, node_id=node_id)
    return values


def do_record_denied(user: Any, action: str, names: list[str], detail: str) -> SecretAuditEvent:
    """Audit a refused attempt (``action`` is what was attempted: create, update, ...)."""
    shown = [str(name) for name in names if name]
    summary = f"{action} refused: {detail}" if detail else f"{action} refused"
    return _audit(AuditAction.DENIED, shown, user=user, detail=summary)


def list_secrets() -> list[dict[str, Any]]:
    """Every secret's name, description and dates, by name. Never a value."""
    return list(Secret.objects.order_by("name").values(*SECRET_FIELDS))


def audit_log(limit: int = 200) -> list[dict[str, Any]]:
    """The latest ``limit`` audit events, newest first."""
    return list(SecretAuditEvent.objects.order_by("-at", "-id").values(*AUDIT_FIELDS)[: max(0, limit)])
