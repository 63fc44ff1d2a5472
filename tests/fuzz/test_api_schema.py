"""Schemathesis against the API's own OpenAPI description: for every operation,
generated requests (valid and invalid) never get a 5xx, and every response matches
the schema (status code, content type, body). The budget is fixed and derandomised,
so CI runs the same cases every time."""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks

from web_ui.models import ApiToken

schema = schemathesis.openapi.from_wsgi("/api/openapi.json", get_wsgi_application())
# What issue 7 asks of every response. Schemathesis' stricter opinions are left out on
# purpose: rejecting schema-valid requests is how semantic validation (an invalid
# pipeline document, a weak secret value) answers, and pydantic's lax parsing accepts
# some values the schema's formats do not list (a Unix time for a date-time).
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 12


@pytest.fixture
def keep_the_test_connection():
    """Like Django's test client: a request must not close the connection that holds
    the test's transaction (rolled back at the end, so no run is ever dispatched)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def admin_token(db, keep_the_test_connection) -> str:
    admin = User.objects.create_superuser("fuzz-admin", password="a long enough password 123")
    return ApiToken.issue(admin, "schemathesis")[1]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_generated_requests_without_a_server_error_and_as_described(
    case, admin_token
):
    case.call_and_validate(headers={"Authorization": f"Bearer {admin_token}"}, checks=CHECKS)
