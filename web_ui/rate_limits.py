"""Rate limits on signing in and on starting runs (django-ratelimit, counters in the
shared Redis cache, so every web process counts together)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse
from django_ratelimit.core import is_ratelimited

from web_ui.api.errors import ApiError


def _sign_in_rate(group: str, request: HttpRequest) -> str:
    return str(settings.FLOWKIT_SIGN_IN_RATE)


def _run_start_rate(group: str, request: HttpRequest) -> str:
    return str(settings.FLOWKIT_RUN_START_RATE)


class RateLimitedLoginView(LoginView):
    """Django's sign-in view, refusing more than FLOWKIT_SIGN_IN_RATE attempts from one
    address or for one user name: guessing passwords gets slow."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        limited = False
        for key in ("ip", "post:username"):
            # Count on both keys every time, so that neither can be reset by the other.
            limited |= is_ratelimited(
                request, group="sign-in", key=key, rate=_sign_in_rate, method="POST", increment=True
            )
        if limited:
            response = self.render_to_response(
                self.get_context_data(
                    rate_limited="Too many sign-in attempts. Wait a minute, then try again."
                )
            )
            response.status_code = 429
            return response
        return super().post(request, *args, **kwargs)


def check_run_start_rate(request: HttpRequest) -> None:
    """Refuse with 429 when the user started more runs than FLOWKIT_RUN_START_RATE."""
    if is_ratelimited(request, group="run-start", key="user", rate=_run_start_rate, increment=True):
        raise ApiError(
            429, "rate_limited", f"too many runs started; the limit is {settings.FLOWKIT_RUN_START_RATE}"
        )
