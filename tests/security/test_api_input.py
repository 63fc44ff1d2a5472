"""The API's input layer (web_ui/api/input.py), attacked as in issue 16 item 7: text no
column can hold (NUL, unpaired surrogates) in bodies, query strings and path parameters,
NaN and Infinity, bodies that are not JSON objects, unauthenticated writes, unknown
paths, limits past their cap, and refused run controls. Each answer is a JSON 4xx
naming the field, and nothing is stored, audited or dispatched."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.models import AuditEvent, NodeTestRun, Pipeline, Run
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_cancel_run, do_start_run
from secret_manager.models import Secret
from web_ui.api.api import api

pytestmark = pytest.mark.django_db(transaction=True)
PASSWORD = "a long enough password 123"
DOCUMENT = {"schema_version": 1, "nodes": [{"id": "a", "code": ""}], "edges": []}


def signed_in(role: str, **kwargs) -> Client:
    user = User.objects.create_user(f"input-{role}-{uuid.uuid4().hex[:6]}", password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def editor() -> Client:
    return signed_in("editor")


@pytest.fixture
def pipeline() -> Pipeline:
    return do_create_pipeline("input", DOCUMENT)


def stored() -> dict[str, int]:
    """What a request could have changed: its rows, and the audit log."""
    return {
        "pipelines": Pipeline.objects.count(),
        "runs": Run.objects.count(),
        "node tests": NodeTestRun.objects.count(),
        "secrets": Secret.objects.count(),
        "audit events": AuditEvent.objects.count(),
    }


PIPELINES, PIPELINE, RUNS = "/api/pipelines", "/api/pipelines/{p}", "/api/pipelines/{p}/runs"
# (method, path, body, field): {p} is a pipeline's id, {r} a run's. json.dumps writes
# "\x00" and "\ud800" as the escapes \u0000 and \ud800, and NaN as the bare NaN.
UNSTORABLE_TEXT = [
    ("POST", PIPELINES, {"name": "a\x00b", "document": {}}, "body.name"),
    ("POST", PIPELINES, {"name": "a\ud800", "document": {}}, "body.name"),
    ("POST", PIPELINES, {"name": "x", "description": "\x00", "document": {}}, "body.description"),
    ("POST", PIPELINES, {"name": "x", "document": {"nodes": [{"code": "\udfff"}]}}, "body.document.nodes.0.code"),  # noqa: E501
    ("POST", PIPELINES, {"name": "x", "document": {"k\x00": 1}}, "body.document.k\\u0000"),
    ("PATCH", PIPELINE, {"name": "\x00"}, "body.name"),
    ("PATCH", PIPELINE, {"description": "\ud800"}, "body.description"),
    ("POST", PIPELINE + "/duplicate", {"name": "\x00"}, "body.name"),
    ("POST", RUNS, {"input": "\x00"}, "body.input"),
    ("POST", RUNS, {"input": {"a": ["\ud800"]}}, "body.input.a.0"),
    ("POST", "/api/pipelines/import", {"name": "\x00"}, "body.name"),
    ("POST", "/api/node-tests", {"code": "value = 1\x00"}, "body.code"),
    ("POST", "/api/node-tests", {"code": "value = 1", "label": "\ud800"}, "body.label"),
    ("POST", "/api/secrets", {"name": "K", "value": "v\x00"}, "body.value"),
    ("POST", "/api/secrets", {"name": "K", "value": "value", "description": "\ud800"}, "body.description"),
    ("POST", "/api/runs/{r}/rerun", {"node_id": "\x00"}, "body.node_id"),
]  # fmt: skip
NOT_FINITE = [
    ("POST", RUNS, {"input": math.nan}, "body.input"),
    ("POST", RUNS, {"input": {"x": math.inf}}, "body.input.x"),
    ("POST", RUNS, {"input": [-math.inf]}, "body.input.0"),
    ("PUT", PIPELINE + "/document", {"document": {"nodes": math.nan}}, "body.document.nodes"),
    ("POST", "/api/node-tests", {"code": "value = 1", "inputs": {"x": math.nan}}, "body.inputs.x"),
]
# A number Python reads as a float overflowing to infinity, which json.dumps never writes.
OVERFLOWING = [("POST", RUNS, '{"input": {"big": 1e400}}', 400, "invalid_number", "body.input.big")]
# (method, path, raw body, status, code): the field is the body itself.
NOT_AN_OBJECT = [
    ("POST", RUNS, "null", 422, "invalid_request"),
    ("POST", RUNS, "[1, 2]", 422, "invalid_request"),
    ("POST", RUNS, '"str"', 422, "invalid_request"),
    ("POST", RUNS, "7", 422, "invalid_request"),
    ("PATCH", PIPELINE, "null", 422, "invalid_request"),
    ("PATCH", PIPELINE, "[1, 2]", 422, "invalid_request"),
    ("PATCH", PIPELINE, '"str"', 422, "invalid_request"),
    ("POST", "/api/node-tests", "null", 422, "invalid_request"),
    ("POST", "/api/runs/{r}/rerun", '["a"]', 422, "invalid_request"),
    ("POST", RUNS, "not json", 400, "invalid_json"),
    ("POST", RUNS, "[" * 100_000, 400, "invalid_json"),
    ("POST", RUNS, b'{"input": "\xff"}', 400, "invalid_json"),
]
GARBAGE_BODIES = [
    *[(m, path, json.dumps(body), 400, "invalid_text", field) for m, path, body, field in UNSTORABLE_TEXT],
    *[(m, path, json.dumps(body), 400, "invalid_number", field) for m, path, body, field in NOT_FINITE],
    *[(m, path, body, status, code, "body") for m, path, body, status, code in NOT_AN_OBJECT],
    *OVERFLOWING,
]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    GARBAGE_BODIES,
    ids=[f"{case[0]} {case[1]} {case[2][:30]!r}" for case in GARBAGE_BODIES],
)
def test_a_body_no_field_can_hold_gets_a_json_answer_naming_the_field_and_changes_nothing(
    editor, pipeline, no_broker, method, path, body, status, code, field
):
    run = do_start_run(pipeline.latest_version())
    no_broker.nodes.clear()
    before = stored()
    url = path.format(p=pipeline.id, r=run.id)
    response = editor.generic(method, url, body, content_type="application/json")
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    answer = response.json()
    assert (answer["code"], answer["field"]) == (code, field)
    assert stored() == before
    assert no_broker.nodes == [], "no node was dispatched"
    assert no_broker.node_tests == [], "no node test was dispatched"
    pipeline.refresh_from_db()
    assert pipeline.name == "input"


@pytest.mark.parametrize("body", ["null", "[1,2]", '"str"'])
def test_a_run_start_whose_body_is_not_an_object_starts_no_run(editor, pipeline, no_broker, body):
    response = editor.post(f"/api/pipelines/{pipeline.id}/runs", body, content_type="application/json")
    assert response.status_code == 422
    assert response.json()["field"] == "body"
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert Run.objects.count() == 0
    assert no_broker.nodes == []
    assert not AuditEvent.objects.filter(action="run.start").exists()


def test_a_rename_that_changes_nothing_writes_no_audit_entry(editor, pipeline):
    for body in ("{}", '{"name": "input"}', '{"name": null, "description": null}'):
        response = editor.patch(f"/api/pipelines/{pipeline.id}", body, content_type="application/json")
        assert response.status_code == 200, response.content
        assert response.json()["name"] == "input"
    assert not AuditEvent.objects.filter(action="pipeline.update").exists()
    renamed = editor.patch(
        f"/api/pipelines/{pipeline.id}", '{"name": "renamed"}', content_type="application/json"
    )
    assert renamed.status_code == 200
    assert AuditEvent.objects.get(action="pipeline.update").detail == {
        "name": {"from": "input", "to": "renamed"}
    }


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/pipelines?search=a%00b", "query.search"),
        ("/api/runs?state=%00", "query.state"),
        ("/api/audit?action=run.%00", "query.action"),
        ("/api/audit?actor=%00", "query.actor"),
        ("/api/runs/{r}/events?node=%00", "query.node"),
        ("/api/runs/{r}/events?kind=log&kind=%00", "query.kind"),
        ("/api/pipelines?x%00=1", "query.x\\u0000"),
        ("/api/runs/{r}/nodes/a%00b", "path.node_id"),
        ("/api/runs/{r}/nodes/a/outputs/p%00", "path.port"),
        ("/api/runs/{r}/nodes/a%00/resources", "path.node_id"),
        ("/api/secrets/K%00", "path.name"),
        ("/api/workers/w%00/drain", "path.name"),
        ("/api/no%00such", "path"),
    ],
)
def test_nul_in_a_query_or_path_parameter_gets_a_json_answer_naming_it(path, field, no_broker):
    admin = Client()
    admin.force_login(User.objects.create_superuser("input-admin", password=PASSWORD))
    run = do_start_run(do_create_pipeline("paths", DOCUMENT).latest_version())
    before = stored()
    method = "POST" if path.endswith("/drain") else "GET"
    response = admin.generic(method, path.format(r=run.id))
    assert response.status_code == 400, response.content
    assert response.json() == {
        "code": "invalid_text",
        "message": f"{field} contains a NUL character",
        "field": field,
    }
    assert stored() == before


def test_a_malformed_id_in_the_path_gets_a_json_422_naming_it(editor):
    response = editor.post("/api/runs/not-a-uuid/pause")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "run_id"]


def test_broken_utf8_in_a_query_or_path_is_read_as_replacement_characters(editor, pipeline):
    # An unpaired surrogate cannot be sent in a URL: its UTF-8 bytes are invalid, and
    # Django decodes them as U+FFFD, which is ordinary text.
    assert editor.get("/api/pipelines?search=%ED%A0%80").json() == []
    response = editor.get(f"/api/runs/{uuid.uuid4()}/nodes/%ED%A0%80")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


def test_unauthenticated_writes_get_401_not_a_csrf_failure(pipeline, no_broker):
    anonymous = Client(enforce_csrf_checks=True)
    for method, path, body in [
        ("POST", "/api/pipelines", {"name": "x", "document": DOCUMENT}),
        ("PATCH", f"/api/pipelines/{pipeline.id}", {"name": "x"}),
        ("DELETE", f"/api/pipelines/{pipeline.id}", None),
        ("POST", f"/api/pipelines/{pipeline.id}/runs", {}),
        ("POST", f"/api/runs/{uuid.uuid4()}/cancel", None),
        ("POST", "/api/secrets", {"name": "K", "value": "a secret value"}),
    ]:
        data = json.dumps(body) if body is not None else ""
        response = anonymous.generic(method, path, data, content_type="application/json")
        assert response.status_code == 401, (method, path, response.content)
        assert response.json()["code"] == "unauthenticated"
    assert Pipeline.objects.get(id=pipeline.id).name == "input"
    assert Run.objects.count() == 0


def test_a_signed_in_write_without_the_csrf_token_is_still_refused(pipeline):
    client = signed_in("editor", enforce_csrf_checks=True)
    response = client.patch(f"/api/pipelines/{pipeline.id}", '{"name": "x"}', content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "csrf_failed"
    assert Pipeline.objects.get(id=pipeline.id).name == "input"


@pytest.mark.parametrize("path", ["/api/nope", "/api/pipelines/x/y/z", "/api/", "/api/runs/a/b/c/d/e/f"])
def test_an_unknown_api_path_gets_a_json_404(editor, path):
    for client in (editor, Client()):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response["Content-Type"].startswith("application/json")
        assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("path", "cap"),
    [("/api/runs", 1000), ("/api/runs/{r}/events", 1000), ("/api/audit", 1000), ("/api/secrets/audit", 5000)],
)
def test_limit_is_capped_and_the_cap_is_in_the_openapi_description(path, cap, no_broker):
    admin = Client()
    admin.force_login(User.objects.create_superuser("limit-admin", password=PASSWORD))
    url = path.format(r=do_start_run(do_create_pipeline("limits", DOCUMENT).latest_version()).id)
    assert admin.get(f"{url}?limit={cap}").status_code == 200
    for refused in (cap + 1, 0, 10**30):
        response = admin.get(f"{url}?limit={refused}")
        assert response.status_code == 422, refused
        assert response.json()["detail"][0]["loc"] == ["query", "limit"]
    operation = api.get_openapi_schema()["paths"][path.replace("{r}", "{run_id}")]["get"]
    (limit,) = [param for param in operation["parameters"] if param["name"] == "limit"]
    assert limit["schema"]["maximum"] == cap
    assert f"at most {cap}" in limit["schema"]["description"]


def refused_controls() -> list[tuple[str, str]]:
    return [
        (event.action, event.detail["status"])
        for event in AuditEvent.objects.order_by("id")
        if "refused" in event.action
    ]


def test_refused_run_controls_are_audited_with_who_what_and_why(pipeline, no_broker):
    run = do_start_run(pipeline.latest_version())
    viewer, editor = signed_in("viewer"), signed_in("editor")
    for action in ("pause", "resume", "cancel", "restart"):
        assert viewer.post(f"/api/runs/{run.id}/{action}").status_code == 403
    assert (
        viewer.post(
            f"/api/runs/{run.id}/rerun", '{"node_id": "a"}', content_type="application/json"
        ).status_code
        == 403
    )
    assert editor.post(f"/api/runs/{run.id}/resume").status_code == 409  # it is not paused
    do_cancel_run(run.id)
    assert editor.post(f"/api/runs/{run.id}/pause").status_code == 409
    assert editor.post(f"/api/runs/{run.id}/cancel").status_code == 409
    assert (
        editor.post(
            f"/api/runs/{run.id}/rerun", '{"node_id": "nope"}', content_type="application/json"
        ).status_code
        == 409
    )
    assert refused_controls() == [
        ("run.pause_refused", 403), ("run.resume_refused", 403), ("run.cancel_refused", 403),
        ("run.restart_refused", 403), ("run.rerun_refused", 403), ("run.resume_refused", 409),
        ("run.pause_refused", 409), ("run.cancel_refused", 409), ("run.rerun_refused", 409),
    ]  # fmt: skip
    refusal = AuditEvent.objects.filter(action="run.resume_refused").order_by("id").last()
    assert refusal is not None
    assert (refusal.target, refusal.via, refusal.ip) == (str(run.id), "api", "127.0.0.1")
    assert refusal.actor.startswith("input-editor-")
    assert "running" in refusal.detail["reason"]
    run.refresh_from_db()
    assert run.state == "cancelled"


def test_refused_node_test_cancels_and_drains_are_audited(no_broker):
    editor, viewer = signed_in("editor"), signed_in("viewer")
    started = editor.post("/api/node-tests", '{"code": "value = 1"}', content_type="application/json").json()
    assert viewer.post(f"/api/node-tests/{started['id']}/cancel").status_code == 403
    assert editor.post(f"/api/node-tests/{started['id']}/cancel").status_code == 200
    assert editor.post(f"/api/node-tests/{started['id']}/cancel").status_code == 409
    assert editor.post("/api/workers/w1/drain").status_code == 403
    assert refused_controls() == [
        ("node_test.cancel_refused", 403), ("node_test.cancel_refused", 409), ("worker.drain_refused", 403),
    ]  # fmt: skip


def test_a_missing_run_is_404_and_not_audited_as_a_refusal(editor):
    assert editor.post(f"/api/runs/{uuid.uuid4()}/pause").status_code == 404
    assert refused_controls() == []
