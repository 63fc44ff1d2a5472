"""A rolling restart during a run (issue 9): the worker on hostA, then the one on hostB
(each on a host of its own, tests/integration/hosts.py) is drained and started again
under the same name while a pipeline runs. The run finishes with every node succeeded
exactly once, in its first attempt, and every side effect sent and applied once:
nothing was lost, retried or run twice.

Draining is Celery's warm shutdown (SIGTERM): the worker finishes the nodes it runs,
takes no new ones and exits; dispatches it had received but not started are not
acknowledged (acks late), so they go back to the queue for the other worker.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from typing import cast

import pytest
import redis

from control_unit.models import NodeRun, Run
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.chains import assert_every_node_succeeded_once, chains_document
from tests.integration.conftest import (
    HostWorkers,
    WorkerProcess,
    node_code,
    nodes_of,
    single_node_run,
    wait_for_run,
    wait_until,
    wait_until_serving,
)
from trace_monitor.models import NodeExecution, WorkerStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.exclusive]

CHAINS = 10
LAYERS = 6
DRAIN_TIMEOUT_S = 120


def drain(worker: WorkerProcess) -> int:
    """Let the worker finish what it runs and exit (Celery's warm shutdown); its exit code."""
    worker.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (code := worker.process.poll()) is None:
        assert time.monotonic() < deadline, f"{worker.name} did not drain:\n{worker.log()[-3000:]}"
        time.sleep(0.1)
    return code


@pytest.fixture
def patient_workers(two_hosts, own_queue, tmp_path) -> Iterator[HostWorkers]:
    """A worker on each host that the other declares lost only after 30 s of silence:
    no worker is lost in these tests, and a heartbeat late on a busy machine must not
    make one so."""
    workers = HostWorkers(two_hosts, own_queue, tmp_path, {"FLOWKIT_WORKER_LOST_AFTER_S": "30"})
    try:
        yield workers
    finally:
        workers.stop_all()


def test_a_rolling_restart_of_every_worker_during_a_run_loses_nothing(patient_workers, side_effects):
    host_workers = patient_workers
    for label in ("hostA", "hostB"):
        host_workers.start(label, wait=False)
    for worker in host_workers.started:
        wait_until_serving(worker)
    effects, url = side_effects
    document = chains_document(url, CHAINS, LAYERS, sleep_s=1.0)
    run = do_start_run(do_create_pipeline("rolling restart", document).latest_version())

    for label in ("hostA", "hostB"):
        name = host_workers.name_on(label)
        running_there = NodeRun.objects.filter(run=run, state="running", worker=name)
        wait_until(f"{label} ran a node: {nodes_of(run)}", running_there.exists, wait_s=60)
        assert drain(host_workers.live[label]) == 0
        # Whatever it ran when told to drain, it finished: no node is left running there.
        assert not running_there.exists(), f"{label} exited during {list(running_there)}"
        assert WorkerStatus.objects.get(name=name).state == "stopped"
        host_workers.start(label)

    assert Run.objects.get(id=run.id).state == "running", "the run ended before the restarts did"
    run = wait_for_run(run, wait_s=240)
    assert_every_node_succeeded_once(run, effects, CHAINS * LAYERS)
    retried = {node_id: node.attempt for node_id, node in nodes_of(run).items() if node.attempt != 1}
    assert not retried, f"nodes lost an attempt: {retried}"
    assert set(effects.received.values()) == {1}, "a side effect was sent twice"
    ran_on = set(NodeExecution.objects.filter(run=run).values_list("worker", flat=True))
    assert ran_on == {host_workers.name_on("hostA"), host_workers.name_on("hostB")}
    names = [host_workers.name_on("hostA"), host_workers.name_on("hostB")]
    assert set(WorkerStatus.objects.filter(name__in=names).values_list("state", flat=True)) == {"online"}


def held_from(broker: redis.Redis, queue: str) -> int:
    """How many messages of ``queue`` a worker has taken and not acknowledged (kombu's
    Redis transport keeps them in its "unacked" hash as [message, exchange, queue])."""
    unacked = cast(list[bytes], broker.hvals("unacked"))  # the sync client's reply
    return sum(json.loads(value)[2] == queue for value in unacked)


def test_a_drained_worker_gives_back_a_dispatch_it_held_but_had_not_started(
    patient_workers, own_queue, settings
):
    # A retry waits out its backoff on the worker that received it (a Celery ETA task):
    # the plainest case of a dispatch a worker holds without running it.
    workers = patient_workers
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    first = workers.start("hostA")
    first_fails = "if node.attempt == 1:\n    raise RuntimeError('the first attempt fails')\nvalue = 1"
    flaky = node_code(first_fails)
    run = single_node_run(flaky, "held retry", retries=1, backoff_s=20, timeout_s=30)
    wait_until(
        f"the retry is dispatched: {nodes_of(run)}",
        lambda: NodeRun.objects.filter(run=run, node_id="n", attempt=2, state="queued").exists(),
        wait_s=60,
    )
    wait_until("hostA took the retry's dispatch", lambda: held_from(broker, own_queue) == 1, wait_s=60)
    assert drain(first) == 0
    assert NodeRun.objects.get(run=run, node_id="n").state == "queued", "hostA started the retry"
    assert held_from(broker, own_queue) == 0
    assert broker.llen(own_queue) == 1, "the dispatch hostA held did not go back to the queue"

    workers.start("hostB")
    run = wait_for_run(run, wait_s=90)
    assert run.state == "succeeded", nodes_of(run)["n"].error
    retry = NodeExecution.objects.get(run=run, node_id="n", attempt=2)
    assert retry.worker == workers.name_on("hostB")
