"""Refused control attempts in the audit log: who tried to pause, resume, cancel,
restart or rerun a run, cancel a node test or drain a worker, and was told no (403 for
the role, 409 for the state). A successful control is recorded by its action, in the
same transaction as the change; a refusal rolled that transaction back, so it is
recorded here, afterwards, as ``<action>_refused``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest

from control_unit import audit
from control_unit.fcb import CannotRerun, InvalidTransition
from web_ui.api.errors import ApiError
from web_ui.roles import Forbidden
from web_ui.sign_in_audit import client_ip


def _status(exc: Exception) -> int | None:
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, InvalidTransition | CannotRerun):
        return 409
    if isinstance(exc, ApiError) and exc.status in (403, 409):
        return exc.status
    return None


@contextmanager
def refusals_audited(request: HttpRequest, action: str, target: Any) -> Iterator[None]:
    """Audit ``action`` on ``target`` as refused when the block raises a 403 or 409."""
    try:
        yield
    except (Forbidden, InvalidTransition, CannotRerun, ApiError) as exc:
        status = _status(exc)
        if status is not None:
            audit.record(
                f"{action}_refused", request.user, target, via="api", ip=client_ip(request),
                status=status, reason=str(exc)[:500],
            )  # fmt: skip
        raise
