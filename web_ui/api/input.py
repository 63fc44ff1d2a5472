"""The API's one input layer: every /api/ request's path, query and body are read here
before any view runs, and input that no field of ours can hold is refused with a JSON
answer naming where it was.

PostgreSQL refuses NUL in text and jsonb, and UTF-8 cannot encode an unpaired surrogate
(a JSON body may spell one as "\\ud800"); Python's json module reads NaN, Infinity and
1e400 (a float overflowing to infinity), which jsonb refuses. Left to the database, each
was an HTML 500 after part of the work was done. Every API body is a JSON object: a
body of ``null``, ``[1, 2]`` or ``"str"`` used to be read as "no fields given".

A body passed here is kept on the request, and the API's parser (``VettedParser``)
hands ninja that same value: read once, checked once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import Resolver404, resolve
from django.utils.datastructures import MultiValueDict
from ninja.parser import Parser

from control_unit.storable import UNSTORABLE

API_PREFIX = "/api/"
_VETTED = "_flowkit_vetted_body"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


class BadInput(Exception):
    """Input the API refuses before any view sees it: ``field`` says where."""

    def __init__(self, status: int, code: str, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"code": self.code, "message": str(self), "field": self.field}
        if self.code == "invalid_request":
            body["detail"] = [{"type": "object_type", "loc": self.field.split("."), "msg": str(self)}]
        return JsonResponse(body, status=self.status)


def printable(text: str) -> str:
    """``text`` with what made it unstorable spelled as escapes, safe to echo back."""
    return UNSTORABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _what(text: str) -> str:
    found = UNSTORABLE.search(text)
    assert found is not None
    return "a NUL character" if found.group() == "\x00" else "an unpaired surrogate"


def check_text(text: str, field: str) -> None:
    if UNSTORABLE.search(text):
        raise BadInput(400, "invalid_text", field, f"{field} contains {_what(text)}")


class _NonFinite:
    """Stands for NaN, Infinity or an overflowing number while the body is read, so that
    the walk below can name the field that held it."""

    def __init__(self, text: str) -> None:
        self.text = text


def _finite_float(text: str) -> float | _NonFinite:
    value = float(text)
    return value if math.isfinite(value) else _NonFinite(text)


def _field(path: list[str | int]) -> str:
    return ".".join(printable(str(part)) for part in ["body", *path])


def strict_json(raw: bytes) -> Any:
    """The body's JSON value, or BadInput naming the field that no column can hold."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(400, "invalid_json", "body", "the body is not UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_NonFinite, parse_float=_finite_float)
    except RecursionError:
        raise BadInput(400, "invalid_json", "body", "the body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of over 4300 digits
        raise BadInput(400, "invalid_json", "body", f"the body is not valid JSON: {exc}") from None
    # Iterative, so that no depth json.loads accepts can exhaust the stack here.
    pending: list[tuple[list[str | int], Any]] = [([], value)]
    while pending:
        path, item = pending.pop()
        if isinstance(item, str):
            if UNSTORABLE.search(item):
                field = _field(path)
                raise BadInput(400, "invalid_text", field, f"{field} contains {_what(item)}")
        elif isinstance(item, dict):
            for key, child in item.items():
                if UNSTORABLE.search(key):
                    field = _field([*path, key])
                    raise BadInput(400, "invalid_text", field, f"the key {field} contains {_what(key)}")
                pending.append(([*path, key], child))
        elif isinstance(item, list):
            pending.extend(([*path, index], child) for index, child in enumerate(item))
        elif isinstance(item, _NonFinite):
            field = _field(path)
            message = f"{field} is {item.text[:40]}: numbers must be finite"
            raise BadInput(400, "invalid_number", field, message)
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", type(None): "null", bool: "a boolean"}.get(
            type(value), "a number"
        )
        raise BadInput(422, "invalid_request", "body", f"the body must be a JSON object, not {kind}")
    return value


def _vet_path(request: HttpRequest) -> None:
    path = request.path_info
    if not UNSTORABLE.search(path):
        return
    field = "path"
    try:
        kwargs = resolve(path).kwargs
    except Resolver404:
        kwargs = {}
    for name, value in kwargs.items():
        if isinstance(value, str) and UNSTORABLE.search(value):
            field = f"path.{name}"
            break
    raise BadInput(400, "invalid_text", field, f"{field} contains {_what(path)}")


def _vet_query(query: MultiValueDict[str, str]) -> None:
    for key, values in query.lists():
        check_text(key, f"query.{printable(key)}")
        for value in values:
            check_text(value, f"query.{printable(key)}")


def vet_request(request: HttpRequest) -> None:
    """Raise BadInput unless the path, query and body are input the API can hold."""
    _vet_path(request)
    _vet_query(request.GET)
    # A form encoding is not read here: no operation takes one, and clients send an empty
    # form with a bodiless POST (pause, cancel). An operation that reads a body still
    # gets it through VettedParser, whose refusal ninja answers with 400.
    if request.content_type in FORM_TYPES:
        return
    body = request.body
    if body:
        setattr(request, _VETTED, strict_json(body))


class ApiInputMiddleware:
    """Runs ``vet_request`` on every /api/ request, before sessions, authentication and
    the view: a refused request changes nothing and starts nothing."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(API_PREFIX):
            try:
                vet_request(request)
            except BadInput as refusal:
                return refusal.response()
            except RequestDataTooBig:
                limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
                message = f"the request body is larger than {limit:,} bytes"
                return JsonResponse({"code": "request_too_large", "message": message}, status=413)
        return self.get_response(request)


class VettedParser(Parser):
    """Ninja's parser, handing over the body ApiInputMiddleware read and checked."""

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        if hasattr(request, _VETTED):
            vetted: dict[str, Any] = getattr(request, _VETTED)
            return vetted
        # Only a request that bypassed the middleware (none in this project) gets here.
        value: dict[str, Any] = strict_json(request.body)
        return value
