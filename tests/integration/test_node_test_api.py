"""/api/node-tests runs one node through the real worker and NPU; /api/me tells the
front end the caller's role; both enforce roles."""

from __future__ import annotations

import json
import time

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.integration.conftest import node_code

pytestmark = pytest.mark.django_db(transaction=True)


def client_with_role(role: str | None) -> Client:
    user = User.objects.create_user(f"{role}-user", password="a long enough password 123")
    if role:
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = Client()
    client.force_login(user)
    return client


def start(client: Client, body: dict) -> object:
    return client.post("/api/node-tests", json.dumps(body), content_type="application/json")


def wait_finished(client: Client, test_run_id: str, wait_s: float = 90) -> dict:
    deadline = time.monotonic() + wait_s
    while True:
        body = client.get(f"/api/node-tests/{test_run_id}").json()
        if body["state"] in ("succeeded", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, f"node test {test_run_id} still {body['state']}"
        time.sleep(0.1)


def test_an_editor_tests_a_node_and_reads_its_outputs_and_logs(celery_worker):
    editor = client_with_role("editor")
    code = node_code("import flowkit\nprint('hello from the test')\nvalue = node.get_inputs()['a'] * 2")
    body = {"code": code, "inputs": {"a": 21}, "limits": {"timeout_s": 30}, "label": "double"}
    response = start(editor, body)
    assert response.status_code == 201, response.content
    result = wait_finished(editor, response.json()["id"])
    assert result["state"] == "succeeded", result
    assert result["outputs"] == {"value": 42}
    assert result["status_message"] == "probed"
    assert result["error"] is None
    assert any("hello from the test" in line.get("message", "") for line in result["logs"]), result["logs"]


def test_a_failing_node_test_reports_its_error(celery_worker):
    editor = client_with_role("editor")
    response = start(editor, {"code": node_code("value = 1 / 0")})
    result = wait_finished(editor, response.json()["id"])
    assert result["state"] == "failed"
    assert "ZeroDivisionError" in json.dumps(result["error"])


def test_an_editor_cancels_a_running_node_test_and_its_execution_stops(celery_worker, docker_engine):
    editor = client_with_role("editor")
    sleeper = node_code("import time\ntime.sleep(300)\nvalue = 1")
    response = start(editor, {"code": sleeper, "label": "sleeper"})
    test_run_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while (body := editor.get(f"/api/node-tests/{test_run_id}").json())["state"] != "running":
        assert time.monotonic() < deadline, body
        time.sleep(0.1)
    labels = {"label": f"flowkit.test_run={test_run_id}"}
    while not docker_engine.containers.list(filters=labels):
        assert time.monotonic() < deadline, "the node test's NPU never started"
        time.sleep(0.1)
    viewer = client_with_role("viewer")
    assert viewer.post(f"/api/node-tests/{test_run_id}/cancel").status_code == 403

    cancelled = editor.post(f"/api/node-tests/{test_run_id}/cancel")

    assert cancelled.status_code == 200, cancelled.content
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["error"]["error_type"] == "NodeCancelled"
    # The runner stops the execution and removes its single-use container.
    deadline = time.monotonic() + 30
    while docker_engine.containers.list(all=True, filters=labels):
        assert time.monotonic() < deadline, "the cancelled node test's NPU is still there"
        time.sleep(0.2)
    assert wait_finished(editor, test_run_id)["state"] == "cancelled"
    again = editor.post(f"/api/node-tests/{test_run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_transition"


def test_bad_limits_are_refused_before_anything_is_stored():
    from control_unit.models import NodeTestRun

    editor = client_with_role("editor")
    response = start(editor, {"code": "x = 1", "limits": {"timeout_s": -1}})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_limits"
    response = start(editor, {"code": "x = 1", "limits": {"retries": 2}})
    assert response.status_code == 422
    assert "retries" in response.json()["message"]
    assert NodeTestRun.objects.count() == 0


def test_a_viewer_cannot_start_a_node_test_but_can_read_one():
    from control_unit.models import NodeTestRun

    viewer = client_with_role("viewer")
    response = start(viewer, {"code": "x = 1"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert NodeTestRun.objects.count() == 0
    stored = NodeTestRun.objects.create(code="x = 1", label="seen")
    assert viewer.get(f"/api/node-tests/{stored.id}").json()["label"] == "seen"


def test_node_tests_need_a_role_and_a_login():
    stored_id = "00000000-0000-0000-0000-000000000000"
    assert Client().get(f"/api/node-tests/{stored_id}").status_code == 401
    assert client_with_role(None).get(f"/api/node-tests/{stored_id}").status_code == 403
    assert client_with_role("viewer").get(f"/api/node-tests/{stored_id}").status_code == 404


def test_session_calls_need_the_csrf_token():
    user = User.objects.create_user("csrf-user", password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name="editor")[0])
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/api/node-tests", json.dumps({"code": "x = 1"}), content_type="application/json")
    assert response.status_code in (401, 403)


@pytest.mark.parametrize("role", ["admin", "editor", "viewer", None])
def test_me_reports_the_callers_role(role):
    body = client_with_role(role).get("/api/me").json()
    assert body == {"username": f"{role}-user", "role": role}


def test_me_needs_a_login():
    response = Client().get("/api/me")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"
