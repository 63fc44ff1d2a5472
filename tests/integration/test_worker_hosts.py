"""Two workers as two hosts (issue 9): each in a network namespace of its own, with its
own address and hostname, against the one PostgreSQL and Redis of the machine
(tests/integration/hosts.py). A 50-node pipeline spreads over both; when one host's
worker is killed mid-run (SIGKILL of its process group), the other declares it lost,
every node still succeeds exactly once (its side effect, sent with its idempotency
key, applied once), the run ends, the resource monitor shows the lost worker as lost,
and no NPU is left behind.

Both hosts drive the same Docker engine (through its Unix socket, see hosts.py). So
the survivor can remove the lost worker's NPUs here; with an engine per host, those
would be removed when the lost host's worker starts again (recover_previous_life).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from control_unit.models import NodeRun
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from node_runner.models import DedicatedNpu
from tests.integration.chains import assert_every_node_succeeded_once, chains_document
from tests.integration.conftest import (
    assert_no_npu_left,
    crash,
    nodes_of,
    npu_containers,
    session_cookie,
    wait_for_run,
    wait_until,
)
from trace_monitor.models import NodeExecution, WorkerStatus
from web_ui.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.exclusive]

CHAINS = 10
LAYERS = 5


def monitor_snapshot() -> dict[str, Any]:
    """The snapshot the resource monitor page receives on /ws/monitor/."""
    headers = [
        (b"origin", b"http://localhost"),
        (b"host", b"localhost"),
        (b"cookie", session_cookie().encode()),
    ]

    async def receive() -> dict[str, Any]:
        communicator = WebsocketCommunicator(application, "/ws/monitor/", headers=headers)
        connected, _ = await communicator.connect()
        assert connected
        try:
            snapshot: dict[str, Any] = await communicator.receive_json_from(timeout=10)
        finally:
            await communicator.disconnect()
        return snapshot

    return async_to_sync(receive)()


def test_a_pipeline_spreads_over_two_hosts_and_survives_losing_one(host_workers, side_effects, docker_engine):
    effects, url = side_effects
    version = do_create_pipeline("spread", chains_document(url, CHAINS, LAYERS, sleep_s=0.5)).latest_version()
    host_a, host_b = host_workers.name_on("hostA"), host_workers.name_on("hostB")

    # Both hosts take part.
    spread = wait_for_run(do_start_run(version), wait_s=180)
    assert_every_node_succeeded_once(spread, effects, CHAINS * LAYERS)
    ran_on = Counter(NodeExecution.objects.filter(run=spread).values_list("worker", flat=True))
    assert set(ran_on) == {host_a, host_b}, ran_on
    assert min(ran_on.values()) >= 5, f"one host ran almost nothing: {ran_on}"
    assert Counter(NodeRun.objects.filter(run=spread).values_list("worker", flat=True)) == ran_on
    hosts = dict(WorkerStatus.objects.values_list("name", "host"))
    assert (hosts[host_a], hosts[host_b]) == ("hostA", "hostB"), "each worker reports its own host"

    # hostA dies mid-run, while it runs nodes and after some have finished: one of its
    # nodes has its NPU started (its execution is in the trace), so that the trace has
    # a lost attempt to show; one only claimed has no execution yet.
    run = do_start_run(version)
    wait_until(
        f"hostA runs a node of the second run: {nodes_of(run)}",
        lambda: (
            NodeRun.objects.filter(run=run, state="succeeded").count() >= CHAINS
            and NodeRun.objects.filter(run=run, state="running", worker=host_a).exists()
            and NodeExecution.objects.filter(run=run, worker=host_a, outcome="running").exists()
        ),
        wait_s=60,
    )
    crash(host_workers.live.pop("hostA"))
    running = NodeRun.objects.filter(run=run, state="running", worker=host_a)
    stranded = set(running.values_list("node_id", flat=True))
    assert stranded, "hostA had finished its nodes when it was killed"
    run = wait_for_run(run, wait_s=180)

    assert_every_node_succeeded_once(run, effects, CHAINS * LAYERS)
    retried = {node_id: node.attempt for node_id, node in nodes_of(run).items() if node.attempt > 1}
    assert stranded <= set(retried), f"running on hostA when it died: {stranded}; retried: {retried}"
    for node_id, attempt in retried.items():
        # The retry ran on hostB; the lost attempt on hostA, shown failed with WorkerLost
        # (or succeeded, where its NPU finished before the worker died; or not at all,
        # where it died before the NPU started).
        executions = {e.attempt: e for e in NodeExecution.objects.filter(run=run, node_id=node_id)}
        assert executions[attempt].worker == host_b
        if (lost := executions.get(attempt - 1)) is not None:
            assert lost.worker == host_a
            assert (lost.outcome, lost.error_type) in {("failed", "WorkerLost"), ("succeeded", "")}, node_id
    shown_lost = NodeExecution.objects.filter(run=run, node_id__in=stranded, attempt=1, outcome="failed")
    assert shown_lost.filter(error_type="WorkerLost").exists(), "no lost attempt is shown as lost"

    assert WorkerStatus.objects.get(name=host_a).state == "lost"
    shown = {worker["name"]: worker["state"] for worker in monitor_snapshot()["workers"]}
    assert shown[host_a] == "lost"
    assert shown[host_b] == "online"
    assert_no_npu_left(docker_engine, host_a)
    # What is left of the run are hostB's dedicated NPUs, kept for the nodes' next runs.
    kept = set(DedicatedNpu.objects.filter(worker=host_b).values_list("container_id", flat=True))
    wait_until(
        "no NPU of the run is left but hostB's dedicated ones",
        lambda: {npu.id for npu in npu_containers(docker_engine, run)} <= kept,
        wait_s=10,
    )
