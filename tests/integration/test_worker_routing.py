"""Capability routing with real workers: a node that requires ``gpu`` runs only on a
worker declaring it; while none is online it waits in plain sight (queued, with the
reason, in its trace and the API) and starts as soon as such a worker comes up."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.conftest import (
    WorkerProcess,
    nodes_of,
    quick_heartbeats,
    start_worker,
    stop_worker,
    wait_for_node,
    wait_for_run,
    wait_until,
)
from trace_monitor.models import NodeExecution, TraceEvent, WorkerStatus
from web_ui.api.runs import run_out

pytestmark = pytest.mark.django_db(transaction=True)

WAITING_REASON = "waiting for a worker with capability gpu: none is online"


PASS = (
    "from flowkit.node import Node\nnode = Node()\nnode.register_main(lambda: ([], {}, 'ok'))\nnode.run()\n"
)


def node(node_id: str, **fields: Any) -> dict[str, Any]:
    code = PASS
    return {
        "id": node_id,
        "code": code,
        "inputs": [{"name": "in", "list": True}],
        "outputs": ["out"],
        **fields,
    }


def edge(source: str, target: str) -> dict[str, str]:
    return {"source": source, "source_port": "out", "target": target, "target_port": "in"}


@pytest.fixture
def workers(transactional_db: None, worker_queue: str, tmp_path: Any) -> Iterator[dict[str, WorkerProcess]]:
    live: dict[str, WorkerProcess] = {}
    yield live
    for worker in live.values():
        stop_worker(worker)


def start(workers: dict[str, WorkerProcess], role: str, queue: str, tmp_path: Any, **env: str) -> str:
    name = f"{role}-{os.getpid()}@{socket.gethostname()}"
    workers[name] = start_worker(name, tmp_path / f"{role}.log", quick_heartbeats(queue, **env))
    return name


def workers_of(run: Any, node_ids: set[str]) -> set[str]:
    return set(NodeExecution.objects.filter(run=run, node_id__in=node_ids).values_list("worker", flat=True))


def test_a_node_requiring_a_capability_waits_visibly_until_a_worker_offers_it_and_runs_only_there(
    workers, worker_queue, tmp_path
):
    plain = start(workers, "plain", worker_queue, tmp_path)
    document = {
        "schema_version": 1,
        "nodes": [node("prepare"), node("train", requires=["gpu"]), node("report")],
        "edges": [edge("prepare", "train"), edge("train", "report")],
    }
    version = do_create_pipeline("routing", document).latest_version()
    run = do_start_run(version)

    # No worker offers gpu: the node waits, and says why, rather than vanishing.
    wait_for_node(run, "train", ("queued",), wait_s=60)
    wait_until("the node says why it waits", lambda: nodes_of(run)["train"].reason == WAITING_REASON)
    assert nodes_of(run)["prepare"].state == "succeeded"
    event = TraceEvent.objects.get(run=run, node_id="train", kind="waiting")
    assert event.data == {"reason": WAITING_REASON, "requires": ["gpu"]}
    shown = {item["node_id"]: item for item in run_out(run, detail=True)["nodes"]}
    assert (shown["train"]["state"], shown["train"]["reason"]) == ("queued", WAITING_REASON)
    assert not NodeExecution.objects.filter(run=run, node_id="train").exists()

    gpu = start(workers, "gpu", worker_queue, tmp_path, FLOWKIT_WORKER_CAPABILITIES="gpu")
    run = wait_for_run(run, wait_s=90)
    assert run.state == "succeeded", nodes_of(run)
    assert workers_of(run, {"train"}) == {gpu}
    status = wait_until("the gpu worker reports its capabilities", lambda: WorkerStatus.objects.filter(
        name=gpu, capabilities=["gpu"]).first())  # fmt: skip
    assert status.queues == [worker_queue, f"{worker_queue}@gpu"]
    assert WorkerStatus.objects.get(name=plain).queues == [worker_queue]

    # Both workers online: plain nodes go to either, gpu nodes only ever to the gpu worker.
    wide = {
        "schema_version": 1,
        "nodes": [node(f"plain{index}") for index in range(4)]
        + [node(f"gpu{index}", requires=["gpu"]) for index in range(4)],
    }
    run = wait_for_run(do_start_run(do_create_pipeline("wide", wide).latest_version()), wait_s=120)
    assert run.state == "succeeded", nodes_of(run)
    assert workers_of(run, {f"gpu{index}" for index in range(4)}) == {gpu}
    assert workers_of(run, {f"plain{index}" for index in range(4)}) <= {plain, gpu}
    assert not TraceEvent.objects.filter(run=run, kind="waiting").exists()
