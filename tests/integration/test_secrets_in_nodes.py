"""Secrets through the real path: resolved by the worker, delivered on the NPU's
stdin, substituted as data, and masked in everything stored or served."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import urllib.parse

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from secret_manager.actions import do_set_secret
from secret_manager.models import SecretAuditEvent
from tests.integration.conftest import database_url_for_processes, nodes_of, wait_for_npu, wait_for_run
from trace_monitor.models import NodeExecution

HOSTILE = {
    "QUOTES": "it's \"quoted\" and 'single'",
    "BACKSLASHES": "C:\\path\\to\\n\\x00 not an escape",
    "NEWLINES": "line one\nline two\r\nline three",
    "TRIPLE": '"""closing triple quotes""" and \'\'\'',
    "ARROWS": ">>> <<<secret::OTHER>>> >>>",
    "UNICODE": "clé secrète ✓ 鍵 🔑",
    "INJECTION": '"; import os; os.system("touch /tmp/pwned"); "',
}


def single_node_run(code: str, *, wait: bool = True):
    document = {"schema_version": 1, "nodes": [{"id": "probe", "code": code, "outputs": ["value"]}]}
    version = do_create_pipeline(f"secret probe {time.time()}", document).latest_version()
    assert version is not None
    run = do_start_run(version)
    return wait_for_run(run) if wait else run


def probe_code(body: str) -> str:
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return (
        "from flowkit.node import Node\nnode = Node()\ndef main():\n"
        f"{indented}\n    return [], {{'value': value}}, 'ok'\nnode.register_main(main)\nnode.run()\n"
    )


@pytest.fixture
def admin(transactional_db):
    return User.objects.create_superuser("root-admin", password="a long enough password 123")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_node_gets_the_exact_value_of_a_hostile_secret_and_it_stays_data(celery_worker, admin, name):
    value = HOSTILE[name]
    do_set_secret(name, value, user=admin)
    run = single_node_run(probe_code(f"""
import hashlib, os
secret = "<<<secret::{name}>>>"
value = [hashlib.sha256(secret.encode()).hexdigest(), len(secret), os.path.exists('/tmp/pwned')]
"""))  # fmt: skip
    assert run.state == "succeeded", nodes_of(run)["probe"].error
    digest, length, pwned = nodes_of(run)["probe"].outputs["value"]
    assert digest == hashlib.sha256(value.encode()).hexdigest()
    assert length == len(value)
    assert pwned is False


def test_several_references_on_one_line_and_in_f_strings(celery_worker, admin):
    do_set_secret("USER_NAME", "alice-user", user=admin)
    do_set_secret("PASS_WORD", "s3cr3t-pass", user=admin)
    run = single_node_run(
        probe_code("""
pair = "<<<secret::USER_NAME>>><<<secret::PASS_WORD>>>"
header = f"Basic {'<<<secret::USER_NAME>>>'}:{len('<<<secret::PASS_WORD>>>')}"
value = [len(pair), header.startswith('Basic alice-user:'), header.endswith(':11')]
""")
    )
    assert nodes_of(run)["probe"].outputs["value"] == [21, True, True]


def test_neither_docker_inspect_nor_the_node_environment_shows_a_secret(celery_worker, admin, docker_engine):
    value = "inspect-me-if-you-can-42"
    do_set_secret("TOKEN", value, user=admin)
    run = single_node_run(probe_code("""
import os, time
token = "<<<secret::TOKEN>>>"
time.sleep(2)
value = {k: v for k, v in os.environ.items()}
"""), wait=False)  # fmt: skip
    inspected = json.dumps(docker_engine.api.inspect_container(wait_for_npu(docker_engine, run).id))
    assert value not in inspected
    assert "SECRET_KEY" not in inspected
    assert "DATABASE_URL" not in inspected
    run = wait_for_run(run)
    environment = nodes_of(run)["probe"].outputs["value"]
    assert not any(value in item for item in environment.values())
    assert "TOKEN" not in environment


def encodings(value: str) -> dict[str, str]:
    raw = value.encode()
    return {
        "raw": value,
        "base64": base64.b64encode(raw).decode(),
        "urlsafe base64": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        "url": urllib.parse.quote(value, safe=""),
        "hex": raw.hex(),
        "json": json.dumps(value)[1:-1],
    }


LEAKY = """
import base64, json, sys, urllib.parse
from flowkit.log import Logger
logger = Logger(node)
secret = "<<<secret::LEAKY>>>"
raw = secret.encode()
forms = [secret, base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip('='),
         urllib.parse.quote(secret, safe=''), raw.hex(), json.dumps(secret)[1:-1]]
for form in forms:
    logger.info(f"logger {form}")
    print(f"stdout {form}")
    print(f"stderr {form}", file=sys.stderr)
value = {"forms": forms, "nested": [{"key": secret}]}
"""


def assert_masked(text: str, value: str) -> None:
    for name, form in encodings(value).items():
        assert form not in text, f"the {name} form of the secret leaked"


def test_logged_returned_and_raised_secrets_are_masked_in_storage_and_the_api(celery_worker, admin):
    value = 'p@ss w/ "quotes" & ünïcode+/='
    do_set_secret("LEAKY", value, user=admin)
    returned = single_node_run(probe_code(LEAKY))
    raised = single_node_run(
        probe_code('secret = "<<<secret::LEAKY>>>"\nraise RuntimeError(f"bad {secret}")')
    )
    client = Client()
    client.force_login(admin)
    for run in (returned, raised):
        node = nodes_of(run)["probe"]
        stored = json.dumps([node.logs, node.outputs, node.error, node.status_message, node.inputs])
        assert_masked(stored, value)
        assert_masked(client.get(f"/api/runs/{run.id}").content.decode(), value)
    assert returned.state == "succeeded"
    assert "***" in json.dumps(nodes_of(returned)["probe"].outputs)
    assert len(nodes_of(returned)["probe"].logs) == 18
    error = nodes_of(raised)["probe"].error
    assert error["message"] == "bad ***"
    assert "***" in error["traceback"] or "<<<secret::LEAKY>>>" in error["traceback"]


def test_an_unknown_reference_fails_the_node_before_any_container_starts(celery_worker, admin, docker_engine):
    since = int(time.time()) - 1
    run = single_node_run(probe_code('value = "<<<secret::NOT_THERE>>>"'))
    assert run.state == "failed"
    node = nodes_of(run)["probe"]
    assert node.error == {"error_type": "SecretNotDefined", "message": "secret NOT_THERE is not defined"}
    assert node.attempt == 1
    # No NPU was given the node: none started on demand, and none taken from the
    # warm pool (the trace records every execution that reached an NPU).
    filters = {"label": f"flowkit.run={run.id}", "event": "create"}
    until = int(time.time()) + 1
    created = list(docker_engine.events(since=since, until=until, decode=True, filters=filters))
    assert created == []
    assert NodeExecution.objects.get(run=run).container_id == ""


def test_resolution_is_audited_with_names_run_and_node_but_no_value(celery_worker, admin):
    do_set_secret("AUDITED", "audit-value-xyz", user=admin)
    run = single_node_run(probe_code('value = len("<<<secret::AUDITED>>>")'))
    event = SecretAuditEvent.objects.filter(action="resolved").latest("at")
    assert event.names == ["AUDITED"]
    assert event.run_id == str(run.id)
    assert event.node_id == "probe"
    assert "audit-value-xyz" not in json.dumps([event.detail, event.names, event.run_id])


def test_a_database_dump_holds_no_plaintext_secret(admin):
    value = "plaintext-must-not-appear-9f3c"
    do_set_secret("DUMPED", value, user=admin)
    url = database_url_for_processes()
    dump = subprocess.run(["pg_dump", url], capture_output=True, check=True).stdout
    assert b"DUMPED" in dump
    assert value.encode() not in dump
    assert base64.b64encode(value.encode()) not in dump


def viewer_client() -> tuple[User, Client]:
    user = User.objects.create_user("just-a-viewer", password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = Client()
    client.force_login(user)
    return user, client


def test_a_viewer_cannot_create_change_or_read_secrets_anywhere_and_each_attempt_is_audited(admin):
    do_set_secret("GUARDED", "guarded-value-123", user=admin)
    _, client = viewer_client()
    api_create = client.post("/api/secrets", json.dumps({"name": "NEW_ONE", "value": "abcd"}),
                             content_type="application/json")  # fmt: skip
    api_update = client.put(
        "/api/secrets/GUARDED", json.dumps({"value": "changed"}), content_type="application/json"
    )
    api_delete = client.delete("/api/secrets/GUARDED")
    page_create = client.post("/vault/", {"name": "NEW_TWO", "value": "abcd"})
    page_replace = client.post("/vault/GUARDED/replace/", {"value": "changed"})
    assert [r.status_code for r in (api_create, api_update, api_delete, page_create, page_replace)] == [
        403
    ] * 5
    listing = client.get("/api/secrets").json()
    assert [s["name"] for s in listing] == ["GUARDED"]
    assert "guarded-value-123" not in json.dumps(listing)
    assert "guarded-value-123" not in client.get("/vault/").content.decode()
    denied = SecretAuditEvent.objects.filter(action="denied", actor_name="just-a-viewer").count()
    assert denied == 5
    from secret_manager.actions import resolve_secrets

    assert resolve_secrets(["GUARDED"], run_id="check", node_id="check") == {"GUARDED": "guarded-value-123"}


def test_the_command_line_refuses_a_viewer_and_never_takes_a_value_from_argv(admin):
    from tests.integration.test_cli_node_run import flowkit

    viewer_client()
    refused = subprocess.run(
        [*flowkit_command(), "secrets", "--user", "just-a-viewer", "set", "CLI_SECRET"],
        input="from-stdin-value", capture_output=True, text=True, env=server_env(), timeout=60,
    )  # fmt: skip
    assert refused.returncode == 3
    assert "needs the editor role" in refused.stderr
    assert SecretAuditEvent.objects.filter(action="denied", actor_name="just-a-viewer").count() == 1
    stored = subprocess.run(
        [*flowkit_command(), "secrets", "--user", "root-admin", "set", "CLI_SECRET"],
        input="from-stdin-value\n", capture_output=True, text=True, env=server_env(), timeout=60,
    )  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    from secret_manager.actions import resolve_secrets

    assert resolve_secrets(["CLI_SECRET"], run_id="cli", node_id="cli") == {"CLI_SECRET": "from-stdin-value"}
    listed = flowkit("secrets", "--user", "just-a-viewer", "list")
    assert "CLI_SECRET" in listed.stdout
    assert "from-stdin-value" not in listed.stdout


def flowkit_command() -> list[str]:
    import sys

    return [sys.executable, "-m", "web_ui.cli.main"]


def server_env() -> dict[str, str]:
    from tests.integration.conftest import server_environment

    return server_environment()
