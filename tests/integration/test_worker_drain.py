"""Draining a worker with real workers: it finishes the node it runs, takes nothing
new (a node queued after the drain runs on the other worker), hands back what it had
fetched but not started (a retry waiting for its backoff), exits, and shows stopped."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from control_unit.models import AuditEvent
from node_runner.celery import app
from tests.integration.conftest import (
    WorkerProcess,
    node_code,
    nodes_of,
    quick_heartbeats,
    single_node_run,
    start_worker,
    stop_worker,
    wait_for_node,
    wait_for_run,
    wait_until,
)
from trace_monitor.models import NodeExecution, WorkerStatus
from web_ui.cli.main import main as flowkit

pytestmark = pytest.mark.django_db(transaction=True)

LONG = node_code("import time\ntime.sleep(4)  # the drain is ordered while the node is here\nvalue = 'long'")
QUICK = node_code("value = 'quick'")
# Fails its first attempt; the retry waits out its backoff (15 to 45 s with the jitter)
# on the worker that fetched it, well past the long node's end, so the drained worker
# exits while still holding it.
RETRY_BACKOFF_S = 30
FLAKY = node_code(
    "value = node.attempt\nif node.attempt == 1:\n    raise RuntimeError('first attempt fails')"
)


@pytest.fixture
def workers(transactional_db: None, worker_queue: str, tmp_path: Any) -> Iterator[dict[str, WorkerProcess]]:
    live: dict[str, WorkerProcess] = {}
    yield live
    for worker in live.values():
        stop_worker(worker)


def start(workers: dict[str, WorkerProcess], role: str, queue: str, tmp_path: Any) -> str:
    name = f"{role}-{os.getpid()}@{socket.gethostname()}"
    workers[name] = start_worker(name, tmp_path / f"{role}.log", quick_heartbeats(queue))
    return name


def executions(run: Any) -> list[tuple[int, str, str]]:
    return list(
        NodeExecution.objects.filter(run=run).order_by("attempt").values_list("attempt", "worker", "outcome")
    )


def holds_a_scheduled_task(worker: str) -> bool:
    replies = app.control.inspect(destination=[worker], timeout=1.0).scheduled() or {}
    return bool(replies.get(worker))


def test_a_drained_worker_finishes_its_node_takes_nothing_new_hands_back_what_it_held_and_stops(
    workers, worker_queue, tmp_path, capsys
):
    first = start(workers, "first", worker_queue, tmp_path)
    long_run = single_node_run(LONG, "long", timeout_s=60)
    flaky_run = single_node_run(FLAKY, "flaky", retries=1, backoff_s=RETRY_BACKOFF_S)
    wait_for_node(long_run, "n", ("running",), wait_s=60)
    wait_until("the retry waits out its backoff on the first worker", lambda: holds_a_scheduled_task(first))

    assert flowkit(["workers", "drain", first]) == 0
    assert "no longer takes nodes" in capsys.readouterr().out
    assert WorkerStatus.objects.get(name=first).state == "draining"
    second = start(workers, "second", worker_queue, tmp_path)
    quick_run = single_node_run(QUICK, "quick")

    for run in (long_run, flaky_run, quick_run):
        run = wait_for_run(run, wait_s=90)
        assert run.state == "succeeded", nodes_of(run)
    assert executions(long_run) == [(1, first, "succeeded")], "the running node finished where it was"
    assert executions(quick_run) == [(1, second, "succeeded")], "the drained worker took nothing new"
    assert executions(flaky_run) == [(1, first, "failed"), (2, second, "succeeded")], (
        "the retry the drained worker held went back to the queue"
    )

    process = workers[first].process
    wait_until("the drained worker exits", lambda: process.poll() is not None, wait_s=60)
    assert process.returncode == 0, workers[first].log()[-3000:]
    wait_until("it shows stopped", lambda: WorkerStatus.objects.get(name=first).state == "stopped")
    assert WorkerStatus.objects.get(name=second).state == "online"


def test_draining_an_unknown_worker_is_refused_with_the_reason(workers, capsys):
    assert flowkit(["workers", "drain", "nobody@nowhere"]) == 1
    assert "there is no worker named 'nobody@nowhere'" in capsys.readouterr().err


def client_with_role(role: str) -> Client:
    user = User.objects.create_user(f"{role}-user", password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = Client()
    client.force_login(user)
    return client


def test_an_admin_drains_a_worker_through_the_api_and_others_may_not(workers, worker_queue, tmp_path):
    name = start(workers, "api", worker_queue, tmp_path)
    path = f"/api/workers/{name}/drain"
    assert client_with_role("editor").post(path).status_code == 403
    admin = client_with_role("admin")
    missing = admin.post("/api/workers/nobody@nowhere/drain")
    assert (missing.status_code, missing.json()["code"]) == (404, "cannot_drain")

    response = admin.post(path)
    assert response.status_code == 202, response.content
    assert response.json() == {"worker": name, "state": "draining", "queues": [worker_queue]}
    audited = AuditEvent.objects.get(action="worker.drain", target=name)
    assert (audited.actor, audited.via, audited.detail) == ("admin-user", "api", {"queues": [worker_queue]})
    wait_until("the drained worker exits", lambda: workers[name].process.poll() is not None, wait_s=60)
    wait_until("it shows stopped", lambda: WorkerStatus.objects.get(name=name).state == "stopped")
    again = admin.post(path)
    assert (again.status_code, again.json()["message"]) == (
        409,
        f"worker {name} is stopped, so there is nothing to drain",
    )
