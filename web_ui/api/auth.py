"""API authentication: the browser's session (with CSRF) or a bearer token."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer, SessionAuth

from web_ui.models import ApiToken, hash_token


class TokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = ApiToken.objects.select_related("user").filter(digest=hash_token(token)).first()
        if row is None or not row.user.is_active:
            return None
        ApiToken.objects.filter(id=row.id).update(last_used_at=timezone.now())
        request.user = row.user
        return row.user


# SessionAuth checks the CSRF token on unsafe methods; token clients need none.
AUTH = [TokenAuth(), SessionAuth(csrf=True)]
