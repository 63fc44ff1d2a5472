"""/ws/runs/<id>/ over the real Redis channel layer: who may listen, snapshot then
ordered events, reconnecting without gaps or duplicates, and no secret in a frame."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_claim_node, do_record_node_outcome, do_start_run
from secret_manager.actions import do_set_secret
from tests.integration.conftest import nodes_of, wait_for_run
from trace_monitor import recorder
from trace_monitor.models import TraceEvent
from web_ui import streams
from web_ui.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
# A page of this site: the origin matches the handshake's scheme, Host and port.
ORIGIN = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")
CHAIN = {
    "schema_version": 1,
    "nodes": [{"id": "a", "code": "", "outputs": ["out"]}, {"id": "b", "code": "", "inputs": ["in"]}],
    "edges": [{"source": "a", "source_port": "out", "target": "b", "target_port": "in"}],
}


def session_headers(role: str | None) -> list[tuple[bytes, bytes]]:
    if role is None:
        return [ORIGIN, HOST]
    user = User.objects.create_user(f"ws-{role}", password="a long enough password 123")
    if role != "none":
        user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return [ORIGIN, HOST, (b"cookie", cookie.encode())]


async def open_stream(run_id, headers, query=""):
    communicator = WebsocketCommunicator(application, f"/ws/runs/{run_id}/{query}", headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


def queued_chain():
    version = do_create_pipeline("stream chain", CHAIN).latest_version()
    return do_start_run(version, {"x": 1})


def finish(run, node_id, outputs):
    assert do_claim_node(run.id, node_id, 1, "test") is not None
    do_record_node_outcome(run.id, node_id, 1, {"outputs": outputs})


@pytest.mark.parametrize(("role", "code"), [(None, 4401), ("none", 4403)])
def test_anonymous_users_and_users_without_a_role_are_refused(no_broker, role, code):
    run = queued_chain()
    headers = session_headers(role)

    async def attempt():
        communicator, connected, _ = await open_stream(run.id, headers)
        closed = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return connected, closed

    # Accepted, then closed with the reason, which the page shows instead of retrying.
    assert async_to_sync(attempt)() == (True, {"type": "websocket.close", "code": code})


def test_a_foreign_origin_is_refused(no_broker):
    run = queued_chain()
    headers = [(b"origin", b"http://evil.example"), HOST, session_headers("viewer")[2]]

    async def attempt():
        communicator, connected, _ = await open_stream(run.id, headers)
        await communicator.disconnect()
        return connected

    assert async_to_sync(attempt)() is False


async def receive_events(communicator, count, timeout=5):
    """The next ``count`` events, from however many batch frames they arrive in."""
    events = []
    while len(events) < count:
        frame = await communicator.receive_json_from(timeout=timeout)
        assert frame["type"] == "events", frame
        events.extend(frame["events"])
    return events


def stored_seqs(run, after=0):
    events = TraceEvent.objects.filter(run=run, seq__gt=after).order_by("seq")
    return list(events.values_list("seq", flat=True))


def log_events(frames):
    events = [event for frame in frames for event in frame.get("events", [])]
    return [(event["seq"], event["data"]["message"]) for event in events if event["kind"] == "log"]


def run_ended(frame) -> bool:
    if frame["type"] == "snapshot":
        return frame["run"]["state"] in ("succeeded", "failed", "cancelled")
    return any(
        event["kind"] == "run" and event["data"]["target"] in ("succeeded", "failed", "cancelled")
        for event in frame.get("events", [])
    )


def test_a_viewer_gets_a_snapshot_then_events_in_order(no_broker):
    run = queued_chain()
    headers = session_headers("viewer")

    async def watch():
        communicator, connected, _ = await open_stream(run.id, headers)
        assert connected
        snapshot = await communicator.receive_json_from(timeout=5)
        await sync_to_async(finish)(run, "a", {"out": 2})
        events = await receive_events(communicator, 3)
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()
        return snapshot, events

    snapshot, events = async_to_sync(watch)()
    assert snapshot["type"] == "snapshot"
    assert snapshot["run"]["state"] == "running"
    assert {node["node_id"]: node["state"] for node in snapshot["nodes"]} == {"a": "queued", "b": "pending"}
    assert [(e["node_id"], e["kind"], e["data"]["source"], e["data"]["target"]) for e in events] == [
        ("a", "running", "queued", "running"),
        ("a", "succeeded", "running", "succeeded"),
        ("b", "queued", "pending", "queued"),
    ]
    assert [event["seq"] for event in events] == [
        snapshot["seq"] + 1,
        snapshot["seq"] + 2,
        snapshot["seq"] + 3,
    ]
    assert events[1]["data"]["outputs"] == {"out": 2}


def test_reconnecting_with_the_last_sequence_number_gives_exactly_the_missed_events(no_broker):
    run = queued_chain()
    headers = session_headers("viewer")

    async def first_visit():
        communicator, _, _ = await open_stream(run.id, headers)
        snapshot = await communicator.receive_json_from(timeout=5)
        await communicator.disconnect()
        return snapshot["seq"]

    last_seen = async_to_sync(first_visit)()
    finish(run, "a", {"out": 1})  # happens while the client is away
    finish(run, "b", {})

    async def second_visit():
        communicator, _, _ = await open_stream(run.id, headers, f"?after={last_seen}")
        missed = await receive_events(communicator, 6)
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()
        return missed

    missed = async_to_sync(second_visit)()
    assert [event["seq"] for event in missed] == stored_seqs(run, last_seen)
    assert [(e["node_id"], e["kind"]) for e in missed] == [
        ("a", "running"), ("a", "succeeded"), ("b", "queued"), ("b", "running"), ("b", "succeeded"),
        (None, "run"),
    ]  # fmt: skip
    assert missed[-1]["data"]["target"] == "succeeded"


def test_a_batch_the_channel_layer_lost_is_read_back_so_the_client_sees_no_gap(no_broker, monkeypatch):
    run = queued_chain()
    headers = session_headers("viewer")
    real_send = recorder.send
    dropped = []

    def lossy_send(group, message):
        # Lose the first batch of events sent after the client connected.
        if message["type"] == "run.events" and not dropped:
            dropped.append([event["seq"] for event in message["events"]])
            return
        real_send(group, message)

    async def watch():
        communicator, _, _ = await open_stream(run.id, headers)
        snapshot = await communicator.receive_json_from(timeout=5)
        monkeypatch.setattr(recorder, "send", lossy_send)
        await sync_to_async(do_claim_node)(run.id, "a", 1, "test")  # this batch is lost
        await sync_to_async(do_record_node_outcome)(run.id, "a", 1, {"outputs": {"out": 3}})
        events = await receive_events(communicator, 3)
        assert await communicator.receive_nothing(timeout=0.5)
        await communicator.disconnect()
        return snapshot, events

    snapshot, events = async_to_sync(watch)()
    assert dropped == [[snapshot["seq"] + 1]]
    assert [event["seq"] for event in events] == stored_seqs(run, snapshot["seq"])
    assert [event["kind"] for event in events] == ["running", "succeeded", "queued"]


def test_a_lost_last_batch_is_found_by_the_periodic_check(no_broker, monkeypatch):
    run = queued_chain()
    headers = session_headers("viewer")
    monkeypatch.setattr(streams, "CATCH_UP_EVERY_S", 0.3)

    async def watch():
        communicator, _, _ = await open_stream(run.id, headers)
        snapshot = await communicator.receive_json_from(timeout=5)
        monkeypatch.setattr(recorder, "send", lambda group, message: None)  # every message is lost
        await sync_to_async(do_claim_node)(run.id, "a", 1, "test")
        events = await receive_events(communicator, 1)
        await communicator.disconnect()
        return snapshot, events

    snapshot, events = async_to_sync(watch)()
    assert [(event["seq"], event["kind"]) for event in events] == [(snapshot["seq"] + 1, "running")]


def test_frames_of_a_run_that_leaked_a_secret_hold_only_the_mask(celery_worker):
    admin = User.objects.create_superuser("ws-admin", password="a long enough password 123")
    value = "ws-frame-secret-value-31337"
    do_set_secret("WS_SECRET", value, user=admin)
    code = (
        "import base64\nfrom flowkit.node import Node\nnode = Node()\nsecret = '<<<secret::WS_SECRET>>>'\n"
        "print('leaking', secret)\n"
        "def main():\n"
        "    return [], {'copy': secret, 'b64': base64.b64encode(secret.encode()).decode()}, secret\n"
        "node.register_main(main)\nnode.run()\n"
    )
    document = {"schema_version": 1, "nodes": [{"id": "leaky", "code": code, "outputs": ["copy", "b64"]}]}
    run = do_start_run(do_create_pipeline("ws leak", document).latest_version())
    headers = session_headers("viewer")

    async def live_then_snapshot():
        communicator, _, _ = await open_stream(run.id, headers)
        frames = [await communicator.receive_json_from(timeout=5)]
        # The run may finish before the client connects: then the snapshot says so.
        while not any(run_ended(frame) for frame in frames):
            frames.append(await communicator.receive_json_from(timeout=60))
        await communicator.disconnect()
        again, _, _ = await open_stream(run.id, headers)
        frames.append(await again.receive_json_from(timeout=5))
        await again.disconnect()
        return frames

    frames = async_to_sync(live_then_snapshot)()
    assert wait_for_run(run).state == "succeeded", nodes_of(run)["leaky"].error
    text = json.dumps(frames)
    assert value not in text
    assert __import__("base64").b64encode(value.encode()).decode() not in text
    final = frames[-1]["nodes"][0]
    assert final["outputs"] == {"copy": "***", "b64": "***"}
    assert final["status_message"] == "***"
    seen = log_events(frames)
    stored = TraceEvent.objects.filter(run=run, kind="log").order_by("seq")
    assert [message for _, message in stored.values_list("seq", "data__message")] == ["leaking ***"]
    # Live, the client saw every log line stored after its snapshot.
    assert seen == list(stored.filter(seq__gt=frames[0]["seq"]).values_list("seq", "data__message"))
