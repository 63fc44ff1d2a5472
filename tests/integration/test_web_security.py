"""Web security: deploy checks, CSRF, the role matrix over every endpoint and stream,
rate limits, the append-only audit log, and oversized or malformed input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.db import connection
from django.db.utils import DatabaseError
from django.test import Client

from control_unit.models import AuditEvent, ImmutableRowError
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.conftest import REPO, server_environment
from web_ui.api.api import api
from web_ui.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "a long enough password 123"
DOCUMENT = {"schema_version": 1, "nodes": [{"id": "a", "code": ""}], "edges": []}
RANK = {None: 0, "none": 0, "viewer": 1, "editor": 2, "admin": 3}
# Endpoints any signed-in user may call, whatever their role.
ANY_USER = {("GET", "/api/me")}
# POSTs that change nothing, open to viewers: checking a document stores nothing.
READ_ONLY_POSTS = {("POST", "/api/pipelines/validate")}


# A valid body for every operation that takes one, so that a refusal can only come from
# the role check: with a body that does not validate, the 422 would hide a missing check.
BODIES: dict[tuple[str, str], dict] = {
    ("POST", "/api/pipelines"): {"name": "matrix", "document": DOCUMENT},
    ("POST", "/api/pipelines/validate"): {"document": DOCUMENT},
    ("POST", "/api/pipelines/import"): {"name": "imported", **DOCUMENT},
    ("PATCH", "/api/pipelines/{pipeline_id}"): {"name": "renamed"},
    ("PUT", "/api/pipelines/{pipeline_id}/document"): {"document": DOCUMENT},
    ("POST", "/api/pipelines/{pipeline_id}/duplicate"): {"name": "copy"},
    ("POST", "/api/pipelines/{pipeline_id}/runs"): {"input": None},
    ("POST", "/api/runs/{run_id}/rerun"): {"node_id": "a"},
    ("POST", "/api/secrets"): {"name": "MATRIX_KEY", "value": "matrix value"},
    ("PUT", "/api/secrets/{name}"): {"value": "matrix value"},
    ("POST", "/api/node-tests"): {"code": "value = 1"},
}


def user_with(role: str | None) -> User | None:
    if role is None:
        return None
    user = User.objects.create_user(f"sec-{role}-{uuid.uuid4().hex[:6]}", password=PASSWORD)
    if role != "none":
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    return user


def client_for(role: str | None, **kwargs) -> Client:
    client = Client(**kwargs)
    user = user_with(role)
    if user is not None:
        client.force_login(user)
    return client


def needed_role(method: str, path: str) -> str | None:
    if (method, path) in ANY_USER:
        return "none"
    if path.startswith("/api/audit") or path.endswith("/secrets/audit"):
        return "admin"
    if method == "POST" and path.startswith("/api/workers/"):
        return "admin"  # draining a worker
    return "viewer" if method == "GET" or (method, path) in READ_ONLY_POSTS else "editor"


def operations() -> list[tuple[str, str]]:
    schema = api.get_openapi_schema()
    found = []
    for path, methods in schema["paths"].items():
        for method in methods:
            if method.upper() in ("GET", "POST", "PUT", "PATCH", "DELETE"):
                found.append((method.upper(), path))
    return sorted(found)


def concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.endswith("_id") and name not in ("node_id",):
            return str(uuid.uuid4())
        return "1" if name == "number" else "x"

    return re.sub(r"\{(\w+)\}", value, path)


def test_the_api_has_the_operations_the_matrix_covers():
    ops = operations()
    assert len(ops) >= 30, ops
    assert ("POST", "/api/pipelines/{pipeline_id}/runs") in ops
    assert ("GET", "/api/audit") in ops
    schema = api.get_openapi_schema()["paths"]
    with_body = {(m, p) for m, p in ops if "requestBody" in schema[p][m.lower()]}
    assert with_body == set(BODIES), "every operation that takes a body has a valid one in BODIES"


@pytest.mark.parametrize("role", [None, "none", "viewer", "editor", "admin"])
def test_every_endpoint_refuses_whoever_lacks_its_role_and_admits_who_has_it(role, no_broker):
    client = client_for(role)
    wrong = []
    for method, path in operations():
        url = concrete(path)
        body = json.dumps(BODIES.get((method, path), {}))
        response = client.generic(method, url, data=body, content_type="application/json")
        needed = needed_role(method, path)
        if role is None:
            ok = response.status_code == 401
        elif RANK[role] < RANK[needed]:
            ok = response.status_code == 403
        else:
            ok = response.status_code not in (401, 403, 422)
        if not ok:
            wrong.append((method, path, response.status_code))
    assert wrong == [], f"role {role}: {wrong}"


@pytest.mark.parametrize("path", ["/ws/runs/{run}/", "/ws/monitor/"])
@pytest.mark.parametrize(
    ("role", "code"), [(None, 4401), ("none", 4403), ("viewer", None), ("editor", None), ("admin", None)]
)
def test_every_stream_refuses_anonymous_users_and_users_without_a_role_and_admits_the_others(
    path, role, code, no_broker
):
    run = do_start_run(do_create_pipeline("streams", DOCUMENT).latest_version())
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if role is not None:
        client = client_for(role)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))

    async def attempt():
        communicator = WebsocketCommunicator(application, path.format(run=run.id), headers=headers)
        connected, _ = await communicator.connect()
        first = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return connected, first

    connected, first = async_to_sync(attempt)()
    # A refusal is accepted, then closed with its code, so that the page can tell why.
    assert connected
    if code is None:
        assert first["type"] == "websocket.send", f"{role} refused: {first}"
    else:
        assert first == {"type": "websocket.close", "code": code}


def test_session_authenticated_writes_need_the_csrf_token(no_broker):
    client = client_for("editor", enforce_csrf_checks=True)
    body = json.dumps({"name": "csrf", "document": DOCUMENT})
    refused = client.post("/api/pipelines", body, content_type="application/json")
    assert refused.status_code == 403
    assert AuditEvent.objects.filter(action="pipeline.create").count() == 0
    client.get("/accounts/login/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    accepted = client.post("/api/pipelines", body, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 201, accepted.content


def test_production_settings_pass_the_deploy_checks():
    env = {
        **server_environment(),
        "DJANGO_SETTINGS_MODULE": "web_ui.settings",
        "FLOWKIT_HTTPS": "true",
        "DEBUG": "false",
        "SECRET_KEY": "a-production-like-key-" + uuid.uuid4().hex + uuid.uuid4().hex,
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_sign_in_attempts_are_rate_limited_per_user_name(settings):
    settings.FLOWKIT_SIGN_IN_RATE = "3/m"
    user = user_with("viewer")
    client = Client()
    statuses = [
        client.post("/accounts/login/", {"username": user.username, "password": "wrong"}).status_code
        for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    # Even the right password is refused until the minute is over.
    right = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert right.status_code == 429
    assert b"Too many sign-in attempts" in right.content
    failed = AuditEvent.objects.filter(action="auth.sign_in_failed", target=user.username)
    assert failed.count() == 3, "refused attempts never reach the password check"


def test_starting_runs_is_rate_limited_per_user(settings, no_broker):
    settings.FLOWKIT_RUN_START_RATE = "2/m"
    pipeline = do_create_pipeline("rate", DOCUMENT)
    client = client_for("editor")
    url = f"/api/pipelines/{pipeline.id}/runs"
    statuses = [client.post(url, "{}", content_type="application/json").status_code for _ in range(3)]
    assert statuses == [201, 201, 429]
    response = client.post(url, "{}", content_type="application/json")
    assert response.json() == {"code": "rate_limited", "message": "too many runs started; the limit is 2/m"}
    other = client_for("editor")
    assert other.post(url, "{}", content_type="application/json").status_code == 201, "limits are per user"
    # A node test runs code as a run does, and draws on the same budget.
    node_test = other.post("/api/node-tests", '{"code": "value = 1"}', content_type="application/json")
    assert node_test.status_code == 201
    assert other.post("/api/node-tests", '{"code": "value = 1"}', content_type="application/json").json() == {
        "code": "rate_limited",
        "message": "too many runs started; the limit is 2/m",
    }


def test_the_audit_log_records_sign_ins_edits_run_controls_and_secret_operations(no_broker):
    admin = User.objects.create_superuser("auditor", password=PASSWORD)
    client = Client()
    assert client.post("/accounts/login/", {"username": "auditor", "password": "nope"}).status_code == 200
    assert client.post("/accounts/login/", {"username": "auditor", "password": PASSWORD}).status_code == 302

    def call(method, url, body=None):
        data = json.dumps(body) if body is not None else ""
        response = client.generic(method, url, data, content_type="application/json")
        assert response.status_code < 400, (url, response.content)
        return response.json() if response.content else None

    pipeline = call("POST", "/api/pipelines", {"name": "audited", "document": DOCUMENT})
    call("PUT", f"/api/pipelines/{pipeline['id']}/document", {"document": DOCUMENT})
    call("PATCH", f"/api/pipelines/{pipeline['id']}", {"name": "audited 2"})
    run = call("POST", f"/api/pipelines/{pipeline['id']}/runs", {})
    call("POST", f"/api/runs/{run['id']}/pause")
    call("POST", f"/api/runs/{run['id']}/resume")
    call("POST", f"/api/runs/{run['id']}/cancel")
    call("POST", f"/api/runs/{run['id']}/restart")
    call("POST", "/api/secrets", {"name": "AUDITED", "value": "a secret value 123"})
    call("DELETE", "/api/secrets/AUDITED")
    call("DELETE", f"/api/pipelines/{pipeline['id']}")
    call("POST", "/api/node-tests", {"code": "value = 1", "label": "audited test"})

    log = call("GET", "/api/audit?limit=100")
    actions = [(event["actor"], event["action"]) for event in reversed(log)]
    assert actions == [
        ("", "auth.sign_in_failed"), ("auditor", "auth.sign_in"), ("auditor", "pipeline.create"),
        ("auditor", "pipeline.save"), ("auditor", "pipeline.update"), ("auditor", "run.start"),
        ("auditor", "run.pause"), ("auditor", "run.resume"), ("auditor", "run.cancel"),
        ("auditor", "run.restart"), ("auditor", "secret.created"), ("auditor", "secret.deleted"),
        ("auditor", "pipeline.delete"), ("auditor", "node_test.start"),
    ]  # fmt: skip
    assert "a secret value 123" not in json.dumps(log)
    assert log[-1]["ip"] == "127.0.0.1"
    assert log[0]["detail"] == {"label": "audited test"}
    assert [e["action"] for e in call("GET", "/api/audit?action=run.")] == [
        "run.restart", "run.cancel", "run.resume", "run.pause", "run.start",
    ]  # fmt: skip
    assert client_for("editor").get("/api/audit").status_code == 403
    assert admin.is_superuser


def test_the_audit_log_cannot_be_changed_or_deleted_even_around_the_orm():
    event = AuditEvent.objects.create(actor="x", action="run.start", target="t")
    with pytest.raises(ImmutableRowError):
        event.save()
    with pytest.raises(ImmutableRowError):
        event.delete()
    for statement in (
        "UPDATE control_unit_auditevent SET actor = 'someone else'",
        "DELETE FROM control_unit_auditevent",
    ):
        with pytest.raises(DatabaseError, match="append-only"), connection.cursor() as cursor:
            cursor.execute(statement)
        connection.close()  # the failed statement aborted that connection's transaction
    assert AuditEvent.objects.get(id=event.id).actor == "x"


def test_an_oversized_request_gets_a_clear_error_and_stores_nothing():
    client = client_for("editor")
    huge = {
        "name": "huge",
        "document": {**DOCUMENT, "padding": "x" * (settings.FLOWKIT_MAX_DOCUMENT_BYTES + 1)},
    }
    response = client.post("/api/pipelines", json.dumps(huge), content_type="application/json")
    assert response.status_code in (413, 422), response.status_code
    assert "code" in response.json()
    assert AuditEvent.objects.filter(action="pipeline.create").count() == 0


@pytest.mark.parametrize(
    "frame",
    ["not json at all", '{"type": "pause"}', "[" * 10_000, "x" * 2_000_000],
    ids=["garbage", "a command", "deeply nested", "2 MB"],
)
def test_malformed_and_oversized_websocket_frames_change_nothing_and_are_answered(frame, no_broker):
    run = do_start_run(do_create_pipeline("frames", DOCUMENT).latest_version())
    client = client_for("editor")
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()),
    ]

    async def send():
        communicator = WebsocketCommunicator(application, f"/ws/runs/{run.id}/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        await communicator.receive_json_from(timeout=5)  # the snapshot
        await communicator.send_to(text_data=frame)
        reply = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return reply

    reply = async_to_sync(send)()
    if reply["type"] == "websocket.send":
        assert json.loads(reply["text"]) == {"type": "error", "message": "this stream is read-only"}
    else:
        assert reply == {"type": "websocket.close", "code": 1009}, reply
    run.refresh_from_db()
    assert run.state == "running"
