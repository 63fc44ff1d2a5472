"""/api/me: who is calling and with which role, so the front end shows only the
controls that role may use (the API enforces the role regardless)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router

from web_ui.api.schemas import ErrorOut, MeOut
from web_ui.roles import role_of

router = Router(tags=["me"])


@router.get("", response={200: MeOut, 401: ErrorOut})
def me(request: HttpRequest) -> dict[str, Any]:
    # Any authenticated user may ask, even one without a role: the answer is how the
    # page explains that it shows nothing.
    return {"username": request.user.get_username(), "role": role_of(request.user)}
