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

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator

from control_unit.models import NodeRun
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.conftest import (
    HostWorkers,
    assert_no_npu_left,
    crash,
    nodes_of,
    session_cookie,
    wait_for_run,
    wait_until_serving,
)
from trace_monitor.models import NodeExecution, WorkerStatus
from web_ui.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.exclusive]

CHAINS = 10
LAYERS = 5


def effect_node(url: str, sleep_s: float) -> str:
    """A short node with a side effect, sent once per node with its idempotency key."""
    return (
        "import time, urllib.request\n"
        "from flowkit.node import Node\n"
        "node = Node()\n"
        "def main():\n"
        f"    time.sleep({sleep_s})\n"
        f"    request = urllib.request.Request({url!r}, data=b'one step',\n"
        "                                     headers={'Idempotency-Key': node.idempotency_key})\n"
        "    urllib.request.urlopen(request, timeout=10).read()\n"
        "    return [], {'value': node.attempt}, 'stepped'\n"
        "node.register_main(main)\n"
        "node.run()\n"
    )


def chains_document(url: str, chains: int, layers: int, sleep_s: float) -> dict[str, Any]:
    """``chains`` parallel chains of ``layers`` nodes each: wide enough to keep every
    worker busy, long enough that a worker can be stopped while the run goes on."""
    limits = {"network": True, "retries": 1, "timeout_s": 60}
    nodes, edges = [], []
    for chain in range(chains):
        for layer in range(layers):
            node_id = f"c{chain}l{layer}"
            inputs = ["previous"] if layer else []
            nodes.append({"id": node_id, "code": effect_node(url, sleep_s), "inputs": inputs,
                          "outputs": ["value"], "limits": limits})  # fmt: skip
            if layer:
                edges.append({"source": f"c{chain}l{layer - 1}", "source_port": "value",
                              "target": node_id, "target_port": "previous"})  # fmt: skip
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


@pytest.fixture
def workers(two_hosts, own_queue, tmp_path) -> Iterator[HostWorkers]:
    workers = HostWorkers(two_hosts, own_queue, tmp_path, {})
    try:
        for host in two_hosts:
            workers.start(host.label, wait=False)
        for worker in workers.started:
            # Both must serve before the run starts, or one takes all of the first layer.
            wait_until_serving(worker)
        yield workers
    finally:
        workers.stop_all()


def succeeded_executions(run) -> Counter[str]:
    executions = NodeExecution.objects.filter(run=run, outcome="succeeded")
    return Counter(executions.values_list("node_id", flat=True))


def assert_every_node_succeeded_once(run, effects) -> None:
    nodes = nodes_of(run)
    assert len(nodes) == CHAINS * LAYERS
    not_succeeded = {node_id: (node.state, node.error) for node_id, node in nodes.items()
                     if node.state != "succeeded"}  # fmt: skip
    assert not not_succeeded, f"run {run.state} ({run.reason}): {not_succeeded}"
    assert run.state == "succeeded"
    assert set(succeeded_executions(run).values()) == {1}, succeeded_executions(run)
    applied = {node_id: effects.applied[f"{run.id}/{node_id}"] for node_id in nodes}
    assert set(applied.values()) == {1}, f"side effects applied: {applied}"


def wait_until(condition, what: str, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def monitor_snapshot() -> dict[str, Any]:
    """The snapshot the resource monitor page receives on /ws/monitor/."""
    headers = [(b"origin", b"http://localhost"), (b"cookie", session_cookie().encode())]

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


def test_a_pipeline_spreads_over_two_hosts_and_survives_losing_one(workers, side_effects, docker_engine):
    effects, url = side_effects
    version = do_create_pipeline("spread", chains_document(url, CHAINS, LAYERS, 0.5)).latest_version()
    host_a, host_b = workers.name_on("hostA"), workers.name_on("hostB")

    # Both hosts take part.
    spread = wait_for_run(do_start_run(version), wait_s=180)
    assert_every_node_succeeded_once(spread, effects)
    ran_on = Counter(NodeExecution.objects.filter(run=spread).values_list("worker", flat=True))
    assert set(ran_on) == {host_a, host_b}, ran_on
    assert min(ran_on.values()) >= 5, f"one host ran almost nothing: {ran_on}"
    assert Counter(NodeRun.objects.filter(run=spread).values_list("worker", flat=True)) == ran_on
    hosts = dict(WorkerStatus.objects.values_list("name", "host"))
    assert (hosts[host_a], hosts[host_b]) == ("hostA", "hostB"), "each worker reports its own host"

    # hostA dies mid-run, while it runs nodes and after some have finished.
    run = do_start_run(version)
    wait_until(
        lambda: (
            NodeRun.objects.filter(run=run, state="succeeded").count() >= CHAINS
            and NodeRun.objects.filter(run=run, state="running", worker=host_a).exists()
        ),
        f"hostA never ran a node of the second run: {nodes_of(run)}",
    )
    crash(workers.live.pop("hostA"))
    running = NodeRun.objects.filter(run=run, state="running", worker=host_a)
    stranded = set(running.values_list("node_id", flat=True))
    assert stranded, "hostA had finished its nodes when it was killed"
    run = wait_for_run(run, wait_s=180)

    assert_every_node_succeeded_once(run, effects)
    retried = {node_id: node.attempt for node_id, node in nodes_of(run).items() if node.attempt > 1}
    assert stranded <= set(retried), f"running on hostA when it died: {stranded}; retried: {retried}"
    lost_attempts = NodeExecution.objects.filter(run=run, worker=host_a).exclude(outcome="succeeded")
    assert all(execution.node_id in retried for execution in lost_attempts)
    assert not NodeExecution.objects.filter(run=run, node_id__in=retried, attempt=2, worker=host_a).exists()

    assert WorkerStatus.objects.get(name=host_a).state == "lost"
    shown = {worker["name"]: worker["state"] for worker in monitor_snapshot()["workers"]}
    assert shown[host_a] == "lost"
    assert shown[host_b] == "online"
    assert_no_npu_left(docker_engine, host_a)
    of_run = {"label": f"flowkit.run={run.id}"}
    wait_until(
        lambda: not docker_engine.containers.list(all=True, sparse=True, filters=of_run),
        "an NPU of the run was left",
        wait_s=10,
    )
