"""API authentication: the browser's session (with CSRF) or a bearer token."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer, SessionAuth
from ninja.utils import check_csrf

from web_ui.api.errors import ApiError
from web_ui.models import ApiToken, hash_token


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = ApiToken.objects.select_related("user").filter(digest=hash_token(token)).first()
        if row is None or not row.user.is_active:
            return None
        ApiToken.objects.filter(id=row.id).update(last_used_at=timezone.now())
        request.user = row.user
        return row.user


class SignedInSession(SessionAuth):
    """The session of a signed-in user, whose unsafe requests must carry the CSRF token.

    Ninja's SessionAuth checks CSRF first, so a request without a session was told
    "CSRF check failed" (403) instead of "sign in" (401): here there is no session to
    forge a request with, and the answer is the 401 of every other unauthenticated call."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        if not getattr(request, "_ninja_csrf_exempt", False) and check_csrf(request):
            raise ApiError(403, "csrf_failed", "the CSRF token is missing or wrong: send it as X-CSRFToken")
        return request.COOKIES.get(self.param_name)


# Session-authenticated unsafe methods need the CSRF token; token clients need none.
AUTH = [TokenAuth(), SignedInSession(csrf=True)]
