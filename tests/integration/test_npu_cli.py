"""`flowkit npu list` and `flowkit npu reap` against the real Docker engine and a real
worker: dedicated and pooled NPUs listed with the node each serves; the NPUs of a worker
that is gone removed, with its dedicated NPUs' rows, and a live worker's left alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from node_runner.models import DedicatedNpu
from node_runner.reaper import reap_worker_containers
from tests.integration.conftest import (
    REPO,
    WorkerProcess,
    crash,
    node_code,
    nodes_of,
    quick_heartbeats,
    server_environment,
    single_node_run,
    start_worker,
    stop_worker,
    wait_for_run,
    wait_until,
)
from trace_monitor.models import NodeExecution, WorkerStatus

# The CLI's own judgement of a silent worker, shorter than the shared test worker's (15 s),
# so that this test's reap comes before that worker's recovery of the same worker.
CLI_LOST_AFTER_S = 2


def flowkit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**server_environment(), "COLUMNS": "250", "FLOWKIT_WORKER_LOST_AFTER_S": str(CLI_LOST_AFTER_S)}
    return subprocess.run(
        [sys.executable, "-m", "web_ui.cli.main", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def one_process_worker(transactional_db: None, worker_queue: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    name = f"npu-cli-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    worker = start_worker(name, tmp_path / "worker.log", quick_heartbeats(worker_queue), autoscale=(1, 1))
    try:
        yield worker
    finally:
        stop_worker(worker)
        # A worker the test froze and killed leaves its exited NPUs behind.
        reap_worker_containers(name)


def dedicated_npu_of(name: str) -> str:
    """Run a one-node pipeline and return the container of its node's dedicated NPU,
    once its worker process has counted the execution in the table."""
    run = wait_for_run(single_node_run(node_code("value = 1"), name))
    assert run.state == "succeeded", nodes_of(run)["n"].error
    container_id = NodeExecution.objects.get(run=run).container_id
    wait_until(
        "the execution is counted",
        lambda: DedicatedNpu.objects.filter(container_id=container_id, executions=1).exists(),
    )
    return container_id


def exists(docker_engine: Any, container_id: str) -> bool:
    return bool(docker_engine.containers.list(all=True, sparse=True, filters={"id": container_id}))


def test_npu_list_shows_dedicated_and_pooled_npus_with_the_node_each_serves(one_process_worker):
    worker = one_process_worker.name
    container_id = dedicated_npu_of("listed pipeline")

    result = flowkit("npu", "list", "--json")
    assert result.returncode == 0, result.stderr
    mine = [npu for npu in json.loads(result.stdout) if npu["worker"] == worker]
    dedicated = next(npu for npu in mine if npu["container_id"] == container_id)
    assert {key: dedicated[key] for key in ("kind", "pipeline_name", "node_id", "executions", "state")} == {
        "kind": "dedicated",
        "pipeline_name": "listed pipeline",
        "node_id": "n",
        "executions": 1,
        "state": "idle",
    }
    assert dedicated["idle_since"] is not None
    pooled = [npu for npu in mine if npu["kind"] == "pooled"]
    assert pooled, mine
    assert {(npu["state"], npu["pipeline_name"]) for npu in pooled} == {("warm", None)}

    table = flowkit("npu", "list")
    assert table.returncode == 0, table.stderr
    rows = table.stdout.splitlines()
    assert "idle since" in rows[1]
    dedicated_row = next(row for row in rows if container_id[:12] in row)
    for shown in ("dedicated", worker, "listed pipeline", " n ", " 1 ", "idle", "MiB"):
        assert shown in dedicated_row, dedicated_row
    assert any("pooled" in row and worker in row and "warm" in row for row in rows), table.stdout


def test_npu_reap_removes_the_dedicated_npu_of_a_worker_that_is_gone_with_its_row(
    one_process_worker, docker_engine
):
    worker = one_process_worker
    container_id = dedicated_npu_of("reaped pipeline")
    pooled = [
        container.id
        for container in docker_engine.containers.list(
            sparse=True, filters={"label": [f"flowkit.worker={worker.name}", "flowkit.pool"]}
        )
        if container.id != container_id
    ]

    # Its worker is alive: its NPUs stay.
    result = flowkit("npu", "reap")
    assert result.returncode == 0, result.stderr
    assert container_id[:12] not in result.stdout
    assert exists(docker_engine, container_id)
    assert DedicatedNpu.objects.filter(container_id=container_id).exists()

    # Frozen (a hung host), the worker holds its NPUs' connections open, so they keep
    # running, but it beats no more: it is gone.
    os.killpg(worker.process.pid, signal.SIGSTOP)
    try:
        wait_until(
            "the worker has been silent long enough",
            lambda: WorkerStatus.objects.filter(
                name=worker.name, last_seen__lt=timezone.now() - timedelta(seconds=CLI_LOST_AFTER_S + 1)
            ).exists(),
        )
        assert exists(docker_engine, container_id), "the frozen worker's NPU still runs"
        result = flowkit("npu", "reap")
        assert result.returncode == 0, result.stderr
        assert container_id[:12] in result.stdout
        assert not exists(docker_engine, container_id)
        assert not DedicatedNpu.objects.filter(worker=worker.name).exists()
        # Its pooled NPUs were nobody's either.
        assert not [npu for npu in pooled if exists(docker_engine, npu)]
    finally:
        crash(worker)
