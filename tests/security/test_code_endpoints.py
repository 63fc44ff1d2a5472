"""Node code posted to every API endpoint that accepts code, by anonymous and
authenticated callers: it is stored or checked as text, and runs only inside an NPU.
The code would leave a marker file on the host if it ever ran anywhere else."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.models import NodeTestRun, Pipeline, Run
from tests.security.conftest import marker_path, node_document, wait_for_run

pytestmark = pytest.mark.django_db(transaction=True)


def hostile_code(marker: Path) -> str:
    # Runs at import time, before any SDK call: executing it anywhere leaves the marker.
    return (
        "import os, subprocess\n"
        f"open({str(marker)!r}, 'w').write('executed')\n"
        f"subprocess.run(['touch', {str(marker) + '-shell'!r}])\n"
        "from flowkit.node import Node\n"
        "node = Node()\n"
        "def main():\n"
        f"    return [], {{'value': os.path.exists({str(marker)!r})}}, 'ran'\n"
        "node.register_main(main)\n"
        "node.run()\n"
    )


def document(code: str, isolation: str = "dedicated") -> dict[str, Any]:
    return node_document(code, {}, isolation)


def client_for(role: str | None) -> Client:
    client = Client()
    if role is not None:
        user = User.objects.create_user(f"{role}-caller", password="a long enough password 123")
        user.groups.add(Group.objects.get_or_create(name=role)[0])
        client.force_login(user)
    return client


def send(client: Client, method: str, url: str, data: Any) -> Any:
    return getattr(client, method)(url, json.dumps(data), content_type="application/json")


def post_code_everywhere(client: Client, code: str, pipeline_id: str) -> dict[str, int]:
    """Every endpoint that stores or checks code; /api/node-tests, which runs it, has its
    own tests below."""
    doc = document(code)
    exported = {"format": "flowkit-pipeline", "name": "imported", "document": doc}
    return {
        "create": send(client, "post", "/api/pipelines", {"name": "hostile", "document": doc}).status_code,
        "save": send(client, "put", f"/api/pipelines/{pipeline_id}/document", {"document": doc}).status_code,
        "import": send(client, "post", "/api/pipelines/import", exported).status_code,
        "import_bare": send(client, "post", "/api/pipelines/import", {**doc, "name": "bare"}).status_code,
        "validate": send(client, "post", "/api/pipelines/validate", {"document": doc}).status_code,
        "duplicate": send(
            client, "post", f"/api/pipelines/{pipeline_id}/duplicate", {"name": "copy"}
        ).status_code,
    }


def post_node_test(client: Client, code: str) -> Any:
    return send(client, "post", "/api/node-tests", {"code": code, "label": "hostile"})


@pytest.fixture
def existing_pipeline() -> Pipeline:
    from control_unit.pipeline_actions import do_create_pipeline

    return do_create_pipeline("existing", document("x = 1\n"))


def test_anonymous_code_posts_are_refused_with_401_and_store_nothing(existing_pipeline):
    marker = marker_path("anonymous")
    statuses = post_code_everywhere(client_for(None), hostile_code(marker), str(existing_pipeline.id))
    assert set(statuses.values()) == {401}, statuses
    assert post_node_test(client_for(None), hostile_code(marker)).status_code == 401
    assert Pipeline.objects.count() == 1
    assert NodeTestRun.objects.count() == 0
    assert existing_pipeline.versions.count() == 1
    assert not marker.exists()
    assert not Path(f"{marker}-shell").exists()


def test_editor_code_posts_are_stored_and_checked_as_text_never_executed(existing_pipeline):
    marker = marker_path("editor")
    statuses = post_code_everywhere(client_for("editor"), hostile_code(marker), str(existing_pipeline.id))
    assert statuses == {"create": 201, "save": 201, "import": 201, "import_bare": 201, "validate": 200,
                        "duplicate": 201}, statuses  # fmt: skip
    assert not marker.exists()
    assert not Path(f"{marker}-shell").exists()
    # A viewer may validate but not store; validation does not execute either.
    viewer_client = client_for("viewer")
    viewer = post_code_everywhere(viewer_client, hostile_code(marker), str(existing_pipeline.id))
    assert viewer["validate"] == 200
    assert {viewer[name] for name in ("create", "save", "import", "import_bare", "duplicate")} == {403}
    assert post_node_test(viewer_client, hostile_code(marker)).status_code == 403
    assert not marker.exists()
    assert Run.objects.count() == 0
    assert NodeTestRun.objects.count() == 0


def test_code_posted_and_run_through_the_api_executes_only_inside_an_npu(sandbox):
    marker = marker_path("run")
    editor = client_for("editor")
    hostile = document(hostile_code(marker), sandbox.isolation)
    created = send(editor, "post", "/api/pipelines", {"name": "hostile", "document": hostile})
    assert created.status_code == 201
    bystander = sandbox.start_bystander()
    with sandbox.routed():
        started = send(editor, "post", f"/api/pipelines/{created.json()['id']}/runs", {})
    assert started.status_code == 201, started.content
    run = wait_for_run(Run.objects.get(id=started.json()["id"]))
    node = sandbox.finished_run(run)
    # The code did run, and found its marker: inside its NPU, not on this host.
    assert run.state == "succeeded", node.error
    assert node.outputs == {"value": True}
    assert not marker.exists()
    assert not Path(f"{marker}-shell").exists()
    sandbox.assert_execution_left_nothing(node)
    sandbox.assert_bystander_unaffected(bystander)
    sandbox.assert_worker_still_serves()


# A node test run always gets a single-use container; [dedicated] differs only in
# its bystander and the honest node after it.
def test_code_posted_to_the_node_test_endpoint_executes_only_inside_an_npu(sandbox):
    marker = marker_path("node-test")
    editor = client_for("editor")
    bystander = sandbox.start_bystander()
    started = post_node_test(editor, hostile_code(marker))
    assert started.status_code == 201, started.content
    deadline = time.monotonic() + 120
    while (result := editor.get(f"/api/node-tests/{started.json()['id']}").json())["state"] not in (
        "succeeded",
        "failed",
    ):
        assert time.monotonic() < deadline, f"the node test is still {result['state']}"
        time.sleep(0.2)
    # The code did run, and found its marker: inside its NPU, not on this host.
    assert result["state"] == "succeeded", result["error"]
    assert result["outputs"] == {"value": True}
    assert not marker.exists()
    assert not Path(f"{marker}-shell").exists()
    sandbox.assert_bystander_unaffected(bystander)
    sandbox.assert_worker_still_serves()
