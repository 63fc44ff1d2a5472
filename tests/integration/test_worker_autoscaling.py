"""Autoscaling with a real worker: Celery's --autoscale grows the pool while nodes
wait, and each heartbeat reports the pool size within its bounds, the queue depth,
and the change with the depth seen then (what the resource monitor shows)."""

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
    wait_for_run,
    wait_until,
)
from trace_monitor.models import WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)

NODES = 6
SLOW = (
    "import time\nfrom flowkit.node import Node\nnode = Node()\n"
    "def main():\n    time.sleep(3)  # keeps the pool busy while others wait\n    return [], {}, 'slept'\n"
    "node.register_main(main)\nnode.run()\n"
)


@pytest.fixture
def worker(transactional_db: None, worker_queue: str, tmp_path: Any) -> Iterator[WorkerProcess]:
    name = f"scaling-{os.getpid()}@{socket.gethostname()}"
    process = start_worker(name, tmp_path / "worker.log", quick_heartbeats(worker_queue), autoscale=(3, 1))
    yield process
    stop_worker(process)


def test_the_pool_grows_with_waiting_nodes_and_the_heartbeat_reports_each_change(worker):
    idle = wait_until("the first heartbeat", lambda: WorkerStatus.objects.filter(name=worker.name).first())
    assert (idle.concurrency_min, idle.concurrency, idle.pool_size) == (1, 3, 1)

    nodes = [{"id": f"slow{index}", "code": SLOW} for index in range(NODES)]
    run = do_start_run(do_create_pipeline("busy", {"schema_version": 1, "nodes": nodes}).latest_version())
    depths: list[int] = []

    def grown() -> WorkerStatus | None:
        status = WorkerStatus.objects.get(name=worker.name)
        depths.append(status.queue_depth)
        return status if status.scaling and max(depths) > 0 else None

    status = wait_until("the pool grew and nodes waited in the queue", grown, wait_s=60)
    change = status.scaling[0]
    assert change["from"] == 1
    assert 1 < change["to"] <= 3
    assert 0 < max(depths) <= NODES

    run = wait_for_run(run, wait_s=120)
    assert run.state == "succeeded", nodes_of(run)
