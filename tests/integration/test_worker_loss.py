"""Workers killed mid-node (SIGKILL of the whole process group, like a crashed host):
the surviving worker declares the lost one lost, the stranded attempt fails with
WorkerLost and is retried on a live worker, the orphaned NPU is removed, and the
node's side effect, sent with its idempotency key, is applied once."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from django.utils import timezone

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from node_runner.heartbeat import recover_lost_workers
from tests.integration.conftest import (
    WorkerProcess,
    assert_no_npu_left,
    crash,
    fast,
    node_code,
    nodes_of,
    single_node_run,
    start_worker,
    stop_worker,
    wait_for_run,
    wait_until_serving,
)
from trace_monitor.models import NodeExecution, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)


KILLS = 10


def effect_node(url: str) -> str:
    return (
        "import time, urllib.request\n"
        "from flowkit.node import Node\n"
        "node = Node()\n"
        "def main():\n"
        "    time.sleep(1.5)  # the worker is killed while the node is here\n"
        f"    request = urllib.request.Request({url!r}, data=b'charge 10 EUR',\n"
        "                                     headers={'Idempotency-Key': node.idempotency_key})\n"
        "    urllib.request.urlopen(request, timeout=10).read()\n"
        "    return [], {'attempt': node.attempt}, 'charged'\n"
        "node.register_main(main)\n"
        "node.run()\n"
    )


@pytest.fixture
def workers(transactional_db, own_queue, tmp_path) -> Iterator[dict[str, WorkerProcess]]:
    """Two workers of this test's own, named per test process."""
    live: dict[str, WorkerProcess] = {}
    prefix = f"loss-{os.getpid()}"
    for index in range(2):
        name = f"{prefix}-{index}@{socket.gethostname()}"
        live[name] = start_worker(name, tmp_path / f"worker-{index}.log", fast(own_queue))
    yield live
    for worker in live.values():
        stop_worker(worker)


def running_on(run, wait_s: float = 30) -> str:
    """The worker running the run's node, once its NPU has started."""
    deadline = time.monotonic() + wait_s
    while True:
        execution = NodeExecution.objects.filter(run=run, node_id="charge").order_by("-attempt").first()
        if execution is not None:
            return execution.worker
        assert time.monotonic() < deadline, f"the node never started: {nodes_of(run)}"
        time.sleep(0.05)


def test_killing_the_worker_mid_node_ten_times_loses_nothing_and_applies_no_side_effect_twice(
    workers, own_queue, side_effects, docker_engine, tmp_path
):
    effects, url = side_effects
    document = {
        "schema_version": 1,
        "nodes": [{"id": "charge", "code": effect_node(url), "outputs": ["attempt"],
                   "limits": {"network": True, "retries": 1, "timeout_s": 30}}],
    }  # fmt: skip
    version = do_create_pipeline("charge", document).latest_version()
    outcomes = []
    for kill in range(KILLS):
        run = do_start_run(version)
        victim = running_on(run)
        crash(workers.pop(victim))
        # A replacement starts while the survivor recovers the run (a new name: the
        # crashed host is still down).
        name = f"loss-{os.getpid()}-r{kill}@{socket.gethostname()}"
        replacement = start_worker(name, tmp_path / f"replacement-{kill}.log", fast(own_queue), wait=False)
        run = wait_for_run(run, wait_s=60)
        wait_until_serving(replacement)
        workers[name] = replacement

        charge = nodes_of(run)["charge"]
        outcomes.append((run.state, charge.attempt, charge.error))
        assert run.state == "succeeded", f"kill {kill}: {charge.error} {run.reason}"
        assert charge.attempt == 2, "the lost attempt was retried once"
        executions = list(NodeExecution.objects.filter(run=run).order_by("attempt"))
        assert executions[-1].worker != victim, "the retry ran on a live worker"
        assert executions[-1].outcome == "succeeded"
        lost = WorkerStatus.objects.get(name=victim)
        assert lost.state == "lost"
        key = f"{run.id}/charge"
        assert effects.applied[key] == 1, f"kill {kill}: the charge was applied {effects.applied[key]} times"
        assert_no_npu_left(docker_engine, victim)

    assert len(outcomes) == KILLS
    assert len(effects.applied) == KILLS
    assert set(effects.applied.values()) == {1}


def test_a_lost_attempt_of_a_node_without_retries_fails_the_run_with_a_clear_reason(
    workers, docker_engine, transactional_db
):
    sleeper = "import time\ntime.sleep(30)\n"
    document = {
        "schema_version": 1,
        "nodes": [{"id": "charge", "code": sleeper, "limits": {"timeout_s": 60}}],
    }
    run = do_start_run(do_create_pipeline("no retries", document).latest_version())
    victim = running_on(run)
    crash(workers.pop(victim))
    run = wait_for_run(run, wait_s=30)
    assert run.state == "failed"
    error = nodes_of(run)["charge"].error
    assert error["error_type"] == "WorkerLost"
    assert error["message"] == f"worker {victim} was lost (no heartbeat for 3 s) while running this node"
    assert run.reason == "node charge failed"
    # The run's timeline shows the attempt ended, not running for ever.
    execution = NodeExecution.objects.get(run=run, node_id="charge", attempt=1)
    assert (execution.outcome, execution.error_type) == ("failed", "WorkerLost")
    assert execution.finished_at is not None
    assert_no_npu_left(docker_engine, victim)


def test_a_worker_restarted_under_the_same_name_recovers_what_its_previous_life_left(
    transactional_db, own_queue, docker_engine, tmp_path
):
    # Only the restart can recover the node here: no peer would call the worker lost
    # within the test.
    slow_loss = {
        "FLOWKIT_WORKER_HEARTBEAT_S": "0.5",
        "FLOWKIT_WORKER_LOST_AFTER_S": "600",
        "FLOWKIT_CELERY_QUEUE": own_queue,
    }
    name = f"restart-{os.getpid()}@{socket.gethostname()}"
    worker = start_worker(name, tmp_path / "worker.log", slow_loss)
    node = {"id": "charge", "code": "import time\ntime.sleep(30)\n", "limits": {"timeout_s": 60}}
    run = do_start_run(do_create_pipeline("restart", {"schema_version": 1, "nodes": [node]}).latest_version())
    assert running_on(run) == name
    crash(worker)
    # Its NPUs: the node's, and the pool's waiting ones (which exit by themselves).
    left = docker_engine.containers.list(all=True, sparse=True, filters={"label": f"flowkit.worker={name}"})
    assert left, "the crash left its NPU running"
    worker = start_worker(name, tmp_path / "worker.log", slow_loss)
    try:
        run = wait_for_run(run, wait_s=30)
        assert run.state == "failed"
        error = nodes_of(run)["charge"].error
        assert error == {
            "error_type": "WorkerLost",
            "message": f"worker {name} restarted while running this node",
        }
        # The new life's own pool starts NPUs under the same name: only the old ones must go.
        deadline = time.monotonic() + 10
        while docker_engine.containers.list(all=True, sparse=True, filters={"id": [c.id for c in left]}):
            assert time.monotonic() < deadline, "an NPU of the previous life was not removed"
            time.sleep(0.2)
    finally:
        stop_worker(worker)


def test_dispatches_a_lost_worker_took_but_never_claimed_are_sent_again_at_once(
    transactional_db, own_queue, settings
):
    settings.FLOWKIT_WORKER_LOST_AFTER_S = 3
    settings.FLOWKIT_REDISPATCH_AFTER_S = 3600
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        # No worker serves this test's queue: the dispatch waits there until the
        # "worker" below takes it, as a worker that prefetched it would, and dies.
        run = single_node_run(node_code("value = 1"), "taken and lost")
        assert broker.rpop(own_queue) is not None
        silent = timezone.now() - timedelta(seconds=60)
        WorkerStatus.objects.create(
            name="gone@hostA", host="hostA", pid=1, state="online", started_at=silent, last_seen=silent
        )
        recover_lost_workers()
        assert WorkerStatus.objects.get(name="gone@hostA").state == "lost"
        message = broker.rpop(own_queue)
        assert message is not None, "the dispatch was not sent again"
        envelope = json.loads(message)
        assert envelope["headers"]["task"] == "node_runner.run_node"
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert args == [str(run.id), "n", 1]
        assert broker.llen(own_queue) == 0, "sent once"
    finally:
        broker.delete(own_queue)
