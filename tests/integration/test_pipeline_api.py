"""The pipelines and runs API: validation errors name their culprit and change
nothing, roles are enforced, session calls need CSRF, tokens work."""

from __future__ import annotations

import json
import uuid

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.models import Pipeline, PipelineVersion, Run
from tests.integration.conftest import EXAMPLES
from web_ui.models import ApiToken

# Runs started here are never executed: no worker runs in these tests.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]
NODE = {"id": "a", "code": "", "outputs": ["out"]}


def doc(nodes, edges=()):
    return {"schema_version": 1, "nodes": nodes, "edges": list(edges)}


def edge(source, source_port, target, target_port, edge_id=None):
    data = {"source": source, "source_port": source_port, "target": target, "target_port": target_port}
    if edge_id:
        data["id"] = edge_id
    return data


def user_with_role(role: str) -> User:
    user = User.objects.create_user(f"{role}-user", password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name=role)[0])  # transactional tests flush migrations data
    return user


@pytest.fixture
def editor() -> Client:
    client = Client()
    client.force_login(user_with_role("editor"))
    return client


@pytest.fixture
def viewer() -> Client:
    client = Client()
    client.force_login(user_with_role("viewer"))
    return client


def post(client, url, data):
    return client.post(url, json.dumps(data), content_type="application/json")


def put(client, url, data):
    return client.put(url, json.dumps(data), content_type="application/json")


INVALID = {
    "empty graph": (doc([]), "empty_graph", None, None),
    "duplicate node id": (doc([NODE, NODE]), "duplicate_node_id", "a", None),
    "dangling edge": (doc([NODE], [edge("a", "out", "ghost", "in", "e1")]), "dangling_edge", None, "e1"),
    "unknown port": (
        doc([NODE, {"id": "b", "code": "", "inputs": ["in"]}], [edge("a", "nope", "b", "in", "e1")]),
        "unknown_port", None, "e1",
    ),
    "cycle": (
        doc([{"id": "a", "code": "", "inputs": ["in"], "outputs": ["out"]},
             {"id": "b", "code": "", "inputs": ["in"], "outputs": ["out"]}],
            [edge("a", "out", "b", "in"), edge("b", "out", "a", "in")]),
        "cycle", None, None,
    ),
    "input fed twice": (
        doc([NODE, {"id": "c", "code": "", "outputs": ["out"]}, {"id": "b", "code": "", "inputs": ["in"]}],
            [edge("a", "out", "b", "in"), edge("c", "out", "b", "in")]),
        "input_fed_twice", "b", None,
    ),
    "limit out of range": (doc([{**NODE, "limits": {"memory_mb": 1}}]), "limit_out_of_range", "a", None),
    "code too large": (doc([{**NODE, "code": "x = 1\n" * 100_000}]), "code_too_large", "a", None),
}  # fmt: skip


@pytest.mark.parametrize("case", INVALID, ids=list(INVALID))
def test_invalid_document_is_refused_with_a_message_naming_the_culprit(editor, case):
    document, code, node, edge_id = INVALID[case]
    response = post(editor, "/api/pipelines", {"name": "bad", "document": document})
    assert response.status_code == 422, response.content
    body = response.json()
    assert body["code"] == "invalid_pipeline"
    problem = next(p for p in body["problems"] if p["code"] == code)
    if node:
        assert problem["node"] == node
        assert repr(node) in problem["message"] or node in problem["message"]
    if edge_id:
        assert problem["edge"] == edge_id
    if code == "cycle":
        assert "a -> b -> a" in problem["message"] or "b -> a -> b" in problem["message"]
    assert Pipeline.objects.count() == 0


def test_document_over_the_size_limit_is_refused(editor, settings):
    settings.FLOWKIT_MAX_DOCUMENT_BYTES = 10_000
    response = post(
        editor, "/api/pipelines", {"name": "big", "document": doc([{**NODE, "label": "x" * 20_000}])}
    )
    assert response.status_code == 422
    assert response.json()["problems"][0]["code"] == "document_too_large"


def test_every_problem_is_reported_at_once(editor):
    document = doc(
        [NODE, NODE, {"id": "b", "code": "", "limits": {"cpus": 0}}], [edge("a", "out", "ghost", "x")]
    )
    codes = {
        p["code"]
        for p in post(editor, "/api/pipelines", {"name": "bad", "document": document}).json()["problems"]
    }
    assert {"duplicate_node_id", "limit_out_of_range", "dangling_edge"} <= codes


def test_a_rejected_new_version_leaves_the_stored_pipeline_unchanged(editor):
    created = post(editor, "/api/pipelines", {"name": "good", "document": doc([NODE])}).json()
    response = put(editor, f"/api/pipelines/{created['id']}/document", {"document": doc([])})
    assert response.status_code == 422
    assert PipelineVersion.objects.filter(pipeline_id=created["id"]).count() == 1
    assert editor.get(f"/api/pipelines/{created['id']}").json()["document"] == doc([NODE])


def test_saving_a_document_creates_an_immutable_new_version(editor):
    created = post(editor, "/api/pipelines", {"name": "good", "document": doc([NODE])}).json()
    second = doc([NODE, {"id": "b", "code": "", "inputs": ["in"]}], [edge("a", "out", "b", "in")])
    assert put(editor, f"/api/pipelines/{created['id']}/document", {"document": second}).json()["number"] == 2
    versions = editor.get(f"/api/pipelines/{created['id']}/versions").json()
    assert [v["number"] for v in versions] == [2, 1]
    assert editor.get(f"/api/pipelines/{created['id']}/versions/1").json()["document"] == doc([NODE])


def test_validate_endpoint_reports_problems_without_storing(editor):
    body = post(editor, "/api/pipelines/validate", {"document": doc([])}).json()
    assert body["valid"] is False
    assert body["problems"][0]["code"] == "empty_graph"


def test_export_then_import_round_trips_a_pipeline(editor):
    document = json.loads((EXAMPLES / "fan_out.json").read_text())
    created = post(editor, "/api/pipelines", {"name": "fan", "description": "d", "document": document}).json()
    exported = editor.get(f"/api/pipelines/{created['id']}/export")
    assert exported["Content-Disposition"] == 'attachment; filename="fan.flowkit.json"'
    imported = post(editor, "/api/pipelines/import", json.loads(exported.content)).json()
    assert imported["id"] != created["id"]
    assert imported["name"] == "fan"
    assert imported["document"] == document


def test_rename_duplicate_search_and_delete(editor):
    created = post(editor, "/api/pipelines", {"name": "first", "document": doc([NODE])}).json()
    renamed = editor.patch(f"/api/pipelines/{created['id']}", json.dumps({"name": "renamed"}),
                           content_type="application/json").json()  # fmt: skip
    assert renamed["name"] == "renamed"
    copy = post(editor, f"/api/pipelines/{created['id']}/duplicate", {"name": "renamed copy"}).json()
    assert copy["document"] == doc([NODE])
    assert [p["name"] for p in editor.get("/api/pipelines?search=copy").json()] == ["renamed copy"]
    assert editor.delete(f"/api/pipelines/{created['id']}").status_code == 204
    assert editor.get(f"/api/pipelines/{created['id']}").json()["code"] == "not_found"


def test_runs_are_started_listed_filtered_and_controlled(editor):
    created = post(editor, "/api/pipelines", {"name": "p", "document": doc([NODE])}).json()
    started = post(editor, f"/api/pipelines/{created['id']}/runs", {"input": {"x": 1}})
    assert started.status_code == 201
    run_id = started.json()["id"]
    assert [r["id"] for r in editor.get(f"/api/runs?pipeline={created['id']}&state=running").json()] == [
        run_id
    ]
    detail = editor.get(f"/api/runs/{run_id}").json()
    assert detail["input"] == {"x": 1}
    assert detail["nodes"][0]["state"] == "queued"
    assert post(editor, f"/api/runs/{run_id}/pause", {}).json()["state"] == "paused"
    assert post(editor, f"/api/runs/{run_id}/pause", {}).json()["code"] == "invalid_transition"
    assert post(editor, f"/api/runs/{run_id}/resume", {}).json()["state"] == "running"
    assert post(editor, f"/api/runs/{run_id}/cancel", {}).json()["state"] == "cancelled"
    conflict = post(editor, f"/api/runs/{run_id}/resume", {})
    assert conflict.status_code == 409
    assert conflict.json() == {
        "code": "invalid_transition",
        "message": "run cannot go from cancelled to running",
    }
    restarted = post(editor, f"/api/runs/{run_id}/restart", {}).json()
    assert restarted["source_run_id"] == run_id
    assert post(editor, f"/api/runs/{run_id}/rerun", {"node_id": "nope"}).json()["code"] == "cannot_rerun"


def test_runs_are_listed_page_by_page_without_repeats_or_gaps(editor):
    created = post(editor, "/api/pipelines", {"name": "paged", "document": doc([NODE])}).json()
    ids = [post(editor, f"/api/pipelines/{created['id']}/runs", {}).json()["id"] for _ in range(7)]
    # Three runs created in the same microsecond: paging on the time alone would lose some.
    Run.objects.filter(id__in=ids[2:5]).update(created_at=Run.objects.get(id=ids[2]).created_at)

    pages, before = [], ""
    while True:
        page = editor.get(f"/api/runs?pipeline={created['id']}&limit=2{before}").json()
        if not page:
            break
        pages.append([run["id"] for run in page])
        before = f"&before={page[-1]['id']}"
    listed = [run_id for page in pages for run_id in page]
    assert sorted(listed) == sorted(ids), "every run once"
    assert listed == [run["id"] for run in editor.get(f"/api/runs?pipeline={created['id']}").json()]
    assert [len(page) for page in pages] == [2, 2, 2, 1]

    unknown = editor.get(f"/api/runs?before={uuid.uuid4()}")
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_run")


def test_anonymous_requests_are_refused_with_401():
    response = Client().get("/api/pipelines")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthenticated"


def test_a_viewer_can_read_but_not_change_anything(viewer, editor):
    created = post(editor, "/api/pipelines", {"name": "p", "document": doc([NODE])}).json()
    assert viewer.get("/api/pipelines").status_code == 200
    for response in (
        post(viewer, "/api/pipelines", {"name": "x", "document": doc([NODE])}),
        put(viewer, f"/api/pipelines/{created['id']}/document", {"document": doc([NODE])}),
        post(viewer, f"/api/pipelines/{created['id']}/runs", {}),
        viewer.delete(f"/api/pipelines/{created['id']}"),
    ):
        assert response.status_code == 403
        assert response.json()["code"] == "forbidden"
    assert Run.objects.count() == 0


def test_session_calls_without_a_csrf_token_are_refused():
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_with_role("editor"))
    response = post(client, "/api/pipelines", {"name": "x", "document": doc([NODE])})
    assert response.status_code in (401, 403)
    assert Pipeline.objects.count() == 0


def test_a_bearer_token_authenticates_without_csrf():
    _, token = ApiToken.issue(user_with_role("editor"), "ci")
    client = Client(enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token}"})
    assert post(client, "/api/pipelines", {"name": "x", "document": doc([NODE])}).status_code == 201
    assert Client(headers={"Authorization": "Bearer fk_wrong"}).get("/api/pipelines").status_code == 401


def test_openapi_description_lists_the_endpoints(editor):
    spec = editor.get("/api/openapi.json").json()
    assert "/api/pipelines" in spec["paths"]
    assert "/api/runs/{run_id}/rerun" in spec["paths"]
