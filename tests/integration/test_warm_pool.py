"""The warm pool with a real worker and the real Docker engine. With single-use NPUs
(isolation: container) every node runs in an NPU of its own that the pool started
before the node arrived, which is removed after it and never handed out again; the
pool refills; pausing and resource sampling work on pooled NPUs; a worker that shuts
down leaves none behind, and the pooled NPUs of a crashed worker exit by themselves
and are removed by its next life."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_pause_run, do_resume_run, do_start_run
from node_runner.container_spec import POOL_LABEL, ROLE_LABEL, ROLE_NPU
from tests.integration.conftest import (
    WorkerProcess,
    execution_processes,
    node_code,
    nodes_of,
    start_worker,
    stop_worker,
    wait_for_node,
    wait_for_run,
)
from trace_monitor.models import NodeExecution, ResourceSample

pytestmark = pytest.mark.django_db(transaction=True)

# The worker's NPU host keeps one NPU of the default profile waiting, for both of the
# worker's pool processes.
MINIMUM = 1


def pool_environment(queue: str) -> dict[str, str]:
    return {
        "FLOWKIT_CELERY_QUEUE": queue,
        "FLOWKIT_NPU_POOL_MIN": str(MINIMUM),
        "FLOWKIT_NPU_POOL_MAX": "2",
        # Single-use NPUs: what the pool hands out is seen once per execution. (A
        # dedicated NPU adopts a pooled one too: tests/integration/test_dedicated_npus.py.)
        "FLOWKIT_NPU_ISOLATION": "container",
    }


@pytest.fixture
def own_queue(settings) -> str:
    # This test's nodes must reach this test's worker, not the session's.
    settings.FLOWKIT_CELERY_QUEUE = f"pool-{os.getpid()}-{time.monotonic_ns()}"
    return str(settings.FLOWKIT_CELERY_QUEUE)


@pytest.fixture
def pool_worker(transactional_db, own_queue, tmp_path) -> Iterator[WorkerProcess]:
    name = f"pool-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    worker = start_worker(name, tmp_path / "worker.log", pool_environment(own_queue))
    yield worker
    stop_worker(worker)


def pooled(engine, worker: str, **filters) -> list:
    labels = [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}", POOL_LABEL]
    return engine.containers.list(all=True, sparse=True, filters={"label": labels, **filters})


def waiting_npus(engine, worker: WorkerProcess, count: int = MINIMUM) -> set[str]:
    """The ids of the worker's pooled NPUs once ``count`` of them are up and waiting."""
    deadline = time.monotonic() + 60
    while len(running := pooled(engine, worker.name, status="running")) < count:
        assert worker.process.poll() is None, worker.log()[-3000:]
        assert time.monotonic() < deadline, f"{len(running)} of {count} are up\n{worker.log()[-2000:]}"
        time.sleep(0.1)
    return {container.id for container in running}


def chain_of(count: int, body: str) -> dict:
    nodes = [{"id": f"n{i}", "code": node_code(body), "inputs": ["in"], "outputs": ["out"]}
             for i in range(count)]  # fmt: skip
    edges = [{"source": f"n{i}", "source_port": "out", "target": f"n{i + 1}", "target_port": "in"}
             for i in range(count - 1)]  # fmt: skip
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


def fan_out(count: int, body: str) -> dict:
    nodes = [{"id": f"n{i}", "code": node_code(body), "outputs": ["out"]} for i in range(count)]
    return {"schema_version": 1, "nodes": nodes, "edges": []}


def wait_until_removed(engine, containers: list[str]) -> None:
    deadline = time.monotonic() + 10
    while engine.containers.list(all=True, sparse=True, filters={"id": containers}):
        assert time.monotonic() < deadline, "a used NPU was not removed"
        time.sleep(0.1)


def containers_used(run) -> list[str]:
    return list(NodeExecution.objects.filter(run=run).values_list("container_id", flat=True))


def test_each_node_runs_in_its_own_pooled_npu_which_is_never_handed_out_again(pool_worker, docker_engine):
    warm = waiting_npus(docker_engine, pool_worker)
    version = do_create_pipeline("pooled chain", chain_of(6, "return [], {'out': 1}, 'ok'")).latest_version()
    run = wait_for_run(do_start_run(version))
    assert run.state == "succeeded", run.reason

    used = containers_used(run)
    assert len(used) == 6
    assert len(set(used)) == 6, "an NPU ran two nodes"
    assert warm & set(used), "no node took an NPU that was waiting in the pool"
    # Each used NPU is removed (in the background, once its outcome was known); none
    # of them waits in the pool again.
    wait_until_removed(docker_engine, used)
    assert not set(used) & {container.id for container in pooled(docker_engine, pool_worker.name)}


def test_the_pool_refills_with_new_npus_after_nodes_took_its_own(pool_worker, docker_engine):
    first = waiting_npus(docker_engine, pool_worker)
    version = do_create_pipeline("pooled fan-out", fan_out(4, "return [], {'out': 1}, 'ok'")).latest_version()
    run = wait_for_run(do_start_run(version))
    assert run.state == "succeeded", run.reason
    assert first & set(containers_used(run))

    # A used NPU keeps its pool label until its removal (in the background): only
    # what runs after that is waiting.
    wait_until_removed(docker_engine, containers_used(run))
    refilled = waiting_npus(docker_engine, pool_worker)
    assert refilled - first, "no new NPU was started"
    assert refilled.isdisjoint(containers_used(run)), "a used NPU came back to the pool"


def test_pausing_and_sampling_work_on_a_pooled_npu(pool_worker, docker_engine):
    warm = waiting_npus(docker_engine, pool_worker)
    busy = "import time\nend = time.time() + 3\nwhile time.time() < end:\n    pass\nreturn [], {'out': 1}, ''"
    version = do_create_pipeline("pooled burner", fan_out(1, busy)).latest_version()
    run = do_start_run(version)
    wait_for_node(run, "n0", ("running",))
    deadline = time.monotonic() + 30
    while not (used := containers_used(run)):
        assert time.monotonic() < deadline, "the node never reached an NPU"
        time.sleep(0.05)
    assert used[0] in warm, "the node did not take a waiting NPU"

    do_pause_run(run.id)
    deadline = time.monotonic() + 10
    container = docker_engine.containers.get(used[0])
    while set(execution_processes(container).values()) != {"T"}:
        assert time.monotonic() < deadline, "the execution in the pooled NPU was not stopped"
        time.sleep(0.05)
    do_resume_run(run.id)
    run = wait_for_run(run)
    assert run.state == "succeeded", nodes_of(run)["n0"].error
    samples = ResourceSample.objects.filter(run=run, node_id="n0")
    assert samples.filter(cpu_percent__gt=0).exists(), "no CPU sample of the pooled NPU"


def test_a_worker_shutdown_leaves_no_pooled_npu_behind(pool_worker, docker_engine):
    waiting_npus(docker_engine, pool_worker)
    stop_worker(pool_worker)
    assert pool_worker.process.returncode == 0, pool_worker.log()[-3000:]
    assert pooled(docker_engine, pool_worker.name) == []


def test_the_pooled_npus_of_a_crashed_worker_exit_and_its_next_life_removes_them(
    pool_worker, own_queue, docker_engine, tmp_path
):
    orphans = waiting_npus(docker_engine, pool_worker)
    os.killpg(pool_worker.process.pid, signal.SIGKILL)
    pool_worker.process.wait(timeout=10)
    # Their stdin closed with the dead processes' connections: they end by themselves.
    deadline = time.monotonic() + 30
    while pooled(docker_engine, pool_worker.name, status="running", id=sorted(orphans)):
        assert time.monotonic() < deadline, "a crashed worker's pooled NPU kept running"
        time.sleep(0.2)

    next_life = start_worker(pool_worker.name, tmp_path / "next-life.log", pool_environment(own_queue))
    try:
        deadline = time.monotonic() + 30
        while docker_engine.containers.list(all=True, sparse=True, filters={"id": sorted(orphans)}):
            assert time.monotonic() < deadline, "the next life did not remove its previous life's NPUs"
            time.sleep(0.2)
        assert waiting_npus(docker_engine, next_life).isdisjoint(orphans)
    finally:
        stop_worker(next_life)


def test_the_pool_counts_the_nodes_waiting_in_every_queue_its_worker_consumes(settings):
    import redis

    from control_unit.routing import worker_queues
    from node_runner.warm_pool import queued_nodes

    base = f"depth-{os.getpid()}-{time.monotonic_ns()}"
    queues = worker_queues(base, ["gpu"])
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    try:
        client.rpush(queues[0], "a", "b")
        client.rpush(queues[1], "c", "d", "e")
        client.rpush(f"{base}-other", "not ours")
        assert queued_nodes(queues)() == 5
    finally:
        client.delete(*queues, f"{base}-other")
