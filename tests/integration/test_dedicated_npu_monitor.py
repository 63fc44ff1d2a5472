"""The resource monitor lists each node's dedicated NPU: its pipeline and node, the
executions it served, since when it is idle (or the run it executes now) and its memory,
read from its cgroup; through a real worker, Docker engine and /ws/monitor/."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from control_unit.run_actions import do_start_run
from node_runner.npu_inventory import container_memory_bytes, running_npus
from tests.integration.conftest import (
    WorkerProcess,
    node_code,
    nodes_of,
    quick_heartbeats,
    session_cookie,
    single_node_run,
    start_worker,
    stop_worker,
    wait_for_run,
    wait_until,
)
from trace_monitor.models import NodeExecution
from trace_monitor.resource_monitor import snapshot
from web_ui.asgi import application

MiB = 2**20


@pytest.fixture
def one_process_worker(transactional_db: None, worker_queue: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker of one process on the test's own queue: every execution of a node goes
    to the same process, and so to the same dedicated NPU (each process keeps its own)."""
    name = f"dedicated-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    worker = start_worker(name, tmp_path / "worker.log", quick_heartbeats(worker_queue), autoscale=(1, 1))
    yield worker
    stop_worker(worker)


def the_npu(npus: list[dict[str, Any]], container_id: str) -> dict[str, Any] | None:
    return next((npu for npu in npus if npu["container_id"] == container_id), None)


def succeeded(run: Any) -> Any:
    run = wait_for_run(run)
    assert run.state == "succeeded", nodes_of(run)["n"].error
    return run


def test_a_node_run_twice_shows_its_dedicated_npu_with_two_executions_and_its_memory(one_process_worker):
    worker = one_process_worker.name
    first = succeeded(single_node_run(node_code("import time\ntime.sleep(2)\nvalue = 1"), "dedicated shown"))
    container_id = NodeExecution.objects.get(run=first).container_id
    pipeline = first.pipeline

    second = do_start_run(first.version)

    def executing_second() -> dict[str, Any] | None:
        npu = the_npu(running_npus(worker), container_id)
        return npu if npu is not None and npu["run_id"] == str(second.id) else None

    busy = wait_until("the NPU shows the second run executing in it", executing_second)
    assert busy["kind"] == "dedicated"
    assert (busy["pipeline_id"], busy["pipeline_name"]) == (str(pipeline.id), "dedicated shown")
    assert (busy["node_id"], busy["attempt"]) == ("n", 1)
    assert busy["idle_since"] is None, "an NPU that executes is not idle"
    succeeded(second)
    assert NodeExecution.objects.get(run=second).container_id == container_id, "the node kept its NPU"

    # Its worker process counts the executions every few seconds.
    idle = wait_until(
        "the NPU shows two executions",
        lambda: (npu := the_npu(running_npus(worker), container_id)) and npu["executions"] == 2 and npu,
    )
    assert idle["kind"] == "dedicated"
    assert idle["state"] == "idle"
    assert idle["worker"] == worker
    assert (idle["pipeline_id"], idle["pipeline_name"], idle["node_id"]) == (
        str(pipeline.id),
        "dedicated shown",
        "n",
    )
    assert idle["run_id"] is None
    second_started = NodeExecution.objects.get(run=second).started_at
    assert datetime.fromisoformat(idle["idle_since"]) >= second_started - timedelta(seconds=1)
    # Its fork server, read from the container's cgroup on the host: a few MiB.
    assert 1 * MiB < idle["memory_bytes"] < 256 * MiB, idle["memory_bytes"]
    assert idle["memory_limit_bytes"] == 256 * MiB

    # The worker's heartbeats carry it to the monitor's snapshot and stream.
    def listed_by_heartbeat() -> dict[str, Any] | None:
        workers = {entry["name"]: entry for entry in snapshot()["workers"]}
        npu = the_npu(workers[worker]["npus"], container_id) if worker in workers else None
        return npu if npu is not None and npu["executions"] == 2 else None

    wait_until("a heartbeat lists the NPU with its two executions", listed_by_heartbeat)
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", session_cookie().encode()),
    ]

    async def monitor_snapshot() -> dict[str, Any]:
        communicator = WebsocketCommunicator(application, "/ws/monitor/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        frame = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return frame

    frame = async_to_sync(monitor_snapshot)()
    workers = {entry["name"]: entry for entry in frame["workers"]}
    shown = the_npu(workers[worker]["npus"], container_id)
    assert shown is not None
    assert {key: shown[key] for key in ("kind", "pipeline_name", "node_id", "executions", "state")} == {
        "kind": "dedicated",
        "pipeline_name": "dedicated shown",
        "node_id": "n",
        "executions": 2,
        "state": "idle",
    }
    assert shown["idle_since"] is not None
    assert shown["memory_bytes"] > 1 * MiB
    # The pool's NPUs waiting beside it are listed as such.
    assert any(npu["kind"] == "pooled" and npu["state"] == "warm" for npu in workers[worker]["npus"])
    print(f"figures: dedicated NPU {container_id[:12]} holds {shown['memory_bytes'] / MiB:.1f} MiB idle")


def test_the_memory_of_a_container_is_read_from_cgroup_v1_or_v2(tmp_path):
    v1 = tmp_path / "v1" / "memory" / "docker" / "abc"
    v1.mkdir(parents=True)
    (v1 / "memory.usage_in_bytes").write_text("12345\n")
    assert container_memory_bytes("abc", tmp_path / "v1") == 12345
    systemd = tmp_path / "v2" / "system.slice" / "docker-abc.scope"
    systemd.mkdir(parents=True)
    (systemd / "memory.current").write_text("678\n")
    assert container_memory_bytes("abc", tmp_path / "v2") == 678
    cgroupfs = tmp_path / "v2fs" / "docker" / "abc"
    cgroupfs.mkdir(parents=True)
    (cgroupfs / "memory.current").write_text("910\n")
    assert container_memory_bytes("abc", tmp_path / "v2fs") == 910
    assert container_memory_bytes("other", tmp_path / "v1") is None
