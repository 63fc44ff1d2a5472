"""Sign-ins, failed sign-ins and sign-outs go to the audit log."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from control_unit import audit


def client_ip(request: Any) -> str | None:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client sends unless a trusted
    # proxy sets it, and the audit log must not record what an attacker chose.
    return getattr(request, "META", {}).get("REMOTE_ADDR") or None


@receiver(user_logged_in)
def _signed_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    audit.record("auth.sign_in", user, user.get_username(), via="web", ip=client_ip(request))


@receiver(user_login_failed)
def _sign_in_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any) -> None:
    # The password is never in ``credentials``' recorded part: only the user name.
    username = str(credentials.get("username", ""))[:150]
    audit.record("auth.sign_in_failed", None, username, via="web", ip=client_ip(request))


@receiver(user_logged_out)
def _signed_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None:
        audit.record("auth.sign_out", user, user.get_username(), via="web", ip=client_ip(request))
