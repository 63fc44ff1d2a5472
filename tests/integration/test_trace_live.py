"""The live trace through a real Daphne process and a real worker: a flooding node,
a restart of the web process mid-run, and the resource monitor's stream."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from contextlib import contextmanager

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from websockets.sync.client import connect

from tests.integration.conftest import node_code, nodes_of, session_cookie, single_node_run, wait_for_run
from trace_monitor.models import TraceEvent, WorkerStatus
from web_ui.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)
ORIGIN = "http://localhost"  # with HOST: a page of this site
HOST = "localhost"
TERMINAL = ("succeeded", "failed", "cancelled")


@contextmanager
def run_stream(server, run_id, cookie, after=None):
    query = "" if after is None else f"?after={after}"
    url = f"ws://127.0.0.1:{server.port}/ws/runs/{run_id}/{query}"
    origin = f"http://127.0.0.1:{server.port}"  # the page that Daphne serves there
    with connect(url, additional_headers={"Origin": origin, "Cookie": cookie}, max_size=None) as ws:
        yield ws


def ended(frame) -> bool:
    if frame["type"] == "snapshot":
        return frame["run"]["state"] in TERMINAL
    return any(e["kind"] == "run" and e["data"]["target"] in TERMINAL for e in frame.get("events", []))


def events_in(frames):
    return [event for frame in frames for event in frame.get("events", [])]


def follow(ws, frames, until, timeout_s=90):
    deadline = time.monotonic() + timeout_s
    while not any(until(frame) for frame in frames):
        frames.append(json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))))
    return frames


def test_a_node_printing_100000_lines_leaves_the_web_process_responsive_and_the_trace_bounded(web_server):
    flood = node_code("for i in range(100_000):\n    print(f'line {i}')\nvalue = 'done'")
    cookie = session_cookie()
    run = single_node_run(flood, "flood", timeout_s=120)
    answered: list[int] = []
    stop = threading.Event()

    slowest = [0.0]

    def probe_the_web_process():
        while not stop.is_set():
            asked = time.monotonic()
            with urllib.request.urlopen(f"{web_server.url}/accounts/login/", timeout=5) as response:
                answered.append(response.status)
            slowest[0] = max(slowest[0], time.monotonic() - asked)
            time.sleep(0.05)

    prober = threading.Thread(target=probe_the_web_process)
    with run_stream(web_server, run.id, cookie) as ws:
        frames = [json.loads(ws.recv(timeout=10))]
        prober.start()
        try:
            follow(ws, frames, ended)
        finally:
            stop.set()
            prober.join()
    assert wait_for_run(run).state == "succeeded", nodes_of(run)["n"].error
    assert answered, "the web process answered no request during the run"
    assert set(answered) == {200}

    stored = TraceEvent.objects.filter(run=run)
    logs = stored.filter(kind="log")
    kept = settings.FLOWKIT_NPU_MAX_LOG_LINES
    assert logs.count() == kept
    assert list(logs.order_by("seq").values_list("data__message", flat=True)[:2]) == ["line 0", "line 1"]
    marker = stored.get(kind="logs_dropped")
    assert marker.data["lines"] == 100_000 - kept
    assert marker.seq > logs.order_by("-seq").first().seq, "the marker comes after the last kept line"
    assert nodes_of(run)["n"].dropped_log_lines == 100_000 - kept

    # The browser got everything after its snapshot, in order, in few large frames.
    seen = [event["seq"] for event in events_in(frames)]
    expected = list(stored.filter(seq__gt=frames[0]["seq"]).order_by("seq").values_list("seq", flat=True))
    assert seen == expected
    event_frames = [frame for frame in frames if frame["type"] == "events"]
    if len(seen) > 1000:
        assert len(event_frames) <= len(seen) / 20, f"{len(event_frames)} frames for {len(seen)} events"
    print(
        f"figures: {len(answered)} page loads during the run, slowest {slowest[0] * 1000:.0f} ms;"
        f" {kept} log lines kept, {100_000 - kept} dropped behind one marker;"
        f" {len(seen)} events in {len(event_frames)} frames"
    )


def test_no_event_is_lost_across_a_restart_of_the_web_process(web_server):
    ticking = node_code(
        "import time\nfor i in range(30):\n    print(f'tick {i}')\n    time.sleep(0.2)\nvalue = 30"
    )
    cookie = session_cookie()
    run = single_node_run(ticking, "restart", timeout_s=60)

    before: list[dict] = []

    def five_ticks_or_the_end(frame):
        return ended(frame) or len([e for e in events_in(before) if e["kind"] == "log"]) >= 5

    with run_stream(web_server, run.id, cookie) as ws:
        before.append(json.loads(ws.recv(timeout=10)))
        snapshot_seq = before[0]["seq"]
        follow(ws, before, five_ticks_or_the_end, timeout_s=60)
    last_seq = max([snapshot_seq, *(event["seq"] for event in events_in(before))])

    web_server.kill()
    web_server.start()
    after: list[dict] = []
    if not ended(before[-1]):
        with run_stream(web_server, run.id, cookie, after=last_seq) as ws:
            follow(ws, after, ended, timeout_s=60)

    assert wait_for_run(run).state == "succeeded", nodes_of(run)["n"].error
    received = [event["seq"] for event in events_in(before) + events_in(after)]
    assert received == list(range(snapshot_seq + 1, snapshot_seq + 1 + len(received))), "in order, no gap"
    stored = TraceEvent.objects.filter(run=run, seq__gt=snapshot_seq).order_by("seq")
    assert received == list(stored.values_list("seq", flat=True))
    ticks = [e["data"]["message"] for e in events_in(before) + events_in(after) if e["kind"] == "log"]
    assert ticks == [f"tick {i}" for i in range(30)][30 - len(ticks) :]
    assert len(ticks) >= 25, "the client connected while the node was starting"
    print(f"figures: {len(events_in(before))} events before the restart, {len(events_in(after))} after")


def test_the_resource_monitor_shows_workers_their_npus_and_live_samples(celery_worker):
    headers = [(b"origin", ORIGIN.encode()), (b"host", HOST.encode()), (b"cookie", session_cookie().encode())]
    worker = celery_worker.name
    # Each test starts on emptied tables; the worker's next heartbeat registers it again.
    deadline = time.monotonic() + 15
    while not WorkerStatus.objects.filter(name=worker).exists():
        assert time.monotonic() < deadline, "no heartbeat from the worker"
        time.sleep(0.1)
    run = single_node_run(node_code("import time\ntime.sleep(4)\nvalue = 1"), "monitored", timeout_s=30)
    run_id = str(run.id)

    def npus_of_run(frame):
        if frame["type"] != "worker" or frame["worker"]["name"] != worker:
            return []
        return [npu for npu in frame["worker"]["npus"] if npu["run_id"] == run_id]

    def samples_of_run(frame):
        return [s for s in frame.get("samples", []) if frame["type"] == "samples" and s["run_id"] == run_id]

    async def watch():
        communicator = WebsocketCommunicator(application, "/ws/monitor/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        snapshot = await communicator.receive_json_from(timeout=10)
        frames = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frames.append(await communicator.receive_json_from(timeout=30))
            if any(map(npus_of_run, frames)) and any(map(samples_of_run, frames)):
                break
        await communicator.disconnect()
        return snapshot, frames

    snapshot, frames = async_to_sync(watch)()
    workers = {entry["name"]: entry for entry in snapshot["workers"]}
    assert workers[worker]["state"] == "online"
    assert workers[worker]["memory_total_bytes"] > 0
    # The host's traffic: whatever the machine does, a rate is never negative.
    assert workers[worker]["net_rx_bytes_per_s"] >= 0
    assert workers[worker]["net_tx_bytes_per_s"] >= 0
    npus = [npu for frame in frames for npu in npus_of_run(frame)]
    assert npus, "no heartbeat listed the NPU"
    assert npus[0]["node_id"] == "n"
    samples = [sample for frame in frames for sample in samples_of_run(frame)]
    assert samples, "no live sample"
    assert samples[0]["memory_bytes"] > 0
    assert wait_for_run(run).state == "succeeded"


def test_the_resource_monitor_refuses_anonymous_users(transactional_db):
    async def attempt():
        communicator = WebsocketCommunicator(
            application, "/ws/monitor/", headers=[(b"origin", ORIGIN.encode()), (b"host", HOST.encode())]
        )
        connected, _ = await communicator.connect()
        closed = await communicator.receive_output(timeout=5)
        await communicator.disconnect()
        return connected, closed

    # Accepted, then closed with the reason, which the page shows instead of retrying.
    assert async_to_sync(attempt)() == (True, {"type": "websocket.close", "code": 4401})
