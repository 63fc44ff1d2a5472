"""Every API error is JSON: {"code": stable_code, "message": sentence, ...}."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from control_unit.fcb import CannotRerun, InvalidTransition
from control_unit.graph import InvalidPipeline
from control_unit.limits import LimitError
from secret_manager.errors import DuplicateSecret, SecretError, UnknownSecret
from web_ui.roles import Forbidden


class ApiError(Exception):
    """An error a view raises with its status, stable code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def in_utc(value: datetime | None, name: str) -> datetime | None:
    """A query's date-time in UTC. PostgreSQL refuses offsets beyond ±15:59 (ISO 8601
    allows ±23:59), and a naive time is taken as UTC."""
    if value is None:
        return None
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError:
        raise ApiError(422, "invalid_request", f"{name} is out of range") from None


def error(
    api: NinjaAPI, request: HttpRequest, status: int, code: str, message: str, **extra: Any
) -> HttpResponse:
    return api.create_response(request, {"code": code, "message": message, **extra}, status=status)


def no_such_endpoint(request: HttpRequest) -> JsonResponse:
    """The answer under /api/ to a path no operation serves: JSON like every API error,
    not the site's HTML page."""
    return JsonResponse(
        {"code": "not_found", "message": f"there is no API endpoint {request.path_info}"}, status=404
    )


def install_error_handlers(api: NinjaAPI) -> None:
    def on_invalid_pipeline(request: HttpRequest, exc: Any) -> HttpResponse:
        problems = [problem.as_dict() for problem in exc.problems]
        return error(api, request, 422, "invalid_pipeline", str(exc), problems=problems)

    def on_invalid_transition(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, 409, "invalid_transition", str(exc))

    def on_cannot_rerun(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, 409, "cannot_rerun", str(exc))

    def on_forbidden(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, 403, "forbidden", str(exc))

    def on_not_found(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, 404, "not_found", str(exc) or "not found")

    def on_unauthenticated(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, 401, "unauthenticated", "log in, or send Authorization: Bearer <token>")

    def on_validation(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(
            api, request, 422, "invalid_request", "the request does not match the schema", detail=exc.errors
        )

    def on_http_error(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, exc.status_code, "http_error", str(exc))

    def on_secret_error(request: HttpRequest, exc: Any) -> HttpResponse:
        if isinstance(exc, UnknownSecret):
            return error(api, request, 404, "unknown_secret", str(exc))
        if isinstance(exc, DuplicateSecret):
            return error(api, request, 409, "duplicate_secret", str(exc))
        return error(api, request, 422, "invalid_secret", str(exc))

    def on_api_error(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, exc.status, exc.code, str(exc))

    def on_too_big(request: HttpRequest, exc: Any) -> HttpResponse:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return error(
            api, request, 413, "request_too_large", f"the request body is larger than {limit:,} bytes"
        )

    api.add_exception_handler(ApiError, on_api_error)
    api.add_exception_handler(RequestDataTooBig, on_too_big)

    def on_limit_error(request: HttpRequest, exc: Any) -> HttpResponse:
        return error(api, request, 422, "invalid_limits", str(exc))

    api.add_exception_handler(LimitError, on_limit_error)
    api.add_exception_handler(SecretError, on_secret_error)
    api.add_exception_handler(InvalidPipeline, on_invalid_pipeline)
    api.add_exception_handler(InvalidTransition, on_invalid_transition)
    api.add_exception_handler(CannotRerun, on_cannot_rerun)
    api.add_exception_handler(Forbidden, on_forbidden)
    api.add_exception_handler(Http404, on_not_found)
    api.add_exception_handler(AuthenticationError, on_unauthenticated)
    api.add_exception_handler(ValidationError, on_validation)
    api.add_exception_handler(HttpError, on_http_error)
