"""The worker's NPU host (node_runner.npu_host) with a real worker and Docker engine:
killed, it is started again by the worker, the new one removes the NPUs the old one
held, and the node's next run succeeds in a new NPU; a pool process killed in the
middle of an execution has that execution killed, its attempt failed by the watchdog
(RunnerLost), and the node's NPU serves the next run."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.conf import settings

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from node_runner.models import DedicatedNpu
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
from trace_monitor.models import NodeExecution

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # The test sees an execution's processes from the host, which gVisor hides.
    pytest.mark.skipif(settings.FLOWKIT_NPU_RUNTIME == "runsc", reason="processes inside gVisor"),
]

# Runs `sleep` as long as its run asks (a process the host can see), then answers.
SLEEPER = node_code(
    "import subprocess\nwait = node.get_inputs().get('wait')\n"
    "if wait:\n    subprocess.run(['sleep', str(wait)])\nvalue = 1"
)


@pytest.fixture
def worker(transactional_db, settings, tmp_path) -> Iterator[WorkerProcess]:
    settings.FLOWKIT_CELERY_QUEUE = f"npu-host-{os.getpid()}-{time.monotonic_ns()}"
    name = f"{settings.FLOWKIT_CELERY_QUEUE}@{socket.gethostname()}"
    env = {
        "FLOWKIT_CELERY_QUEUE": settings.FLOWKIT_CELERY_QUEUE,
        "FLOWKIT_NPU_POOL_MAX": "0",
        # An attempt whose runner died is failed 3 s after its last stamp.
        "FLOWKIT_ATTEMPT_STAMP_S": "0.5",
        "FLOWKIT_ATTEMPT_SILENT_AFTER_S": "3",
    }
    started = start_worker(name, tmp_path / "worker.log", env, autoscale=(1, 1))
    yield started
    stop_worker(started)


def wait_until(condition: Any, what: str, wait_s: float = 30) -> Any:
    deadline = time.monotonic() + wait_s
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def hosts_of(worker: WorkerProcess) -> list[psutil.Process]:
    """The worker's live NPU host (a killed one may linger a moment as a zombie)."""
    hosts = []
    for child in psutil.Process(worker.process.pid).children():
        try:
            if "node_runner.npu_host" in " ".join(child.cmdline()):
                hosts.append(child)
        except psutil.Error:
            continue  # gone, or a zombie
    return hosts


def pool_processes_of(worker: WorkerProcess) -> list[psutil.Process]:
    hosts = {host.pid for host in hosts_of(worker)}
    return [child for child in psutil.Process(worker.process.pid).children() if child.pid not in hosts]


def one_node_pipeline(name: str) -> Any:
    document = {
        "schema_version": 1,
        "nodes": [{"id": "n", "code": SLEEPER, "outputs": ["value"]}],
        "edges": [],
    }
    return do_create_pipeline(name, document).latest_version()


def npu_of(run: Any) -> str:
    run = wait_for_run(run, wait_s=90)
    assert run.state == "succeeded", nodes_of(run)["n"].error
    return str(NodeExecution.objects.get(run=run, node_id="n").container_id)


def sleeping(container: Any) -> bool:
    """Whether a process of the NPU runs `sleep` (an execution of SLEEPER)."""
    for pid in execution_processes(container):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"sleep\0"):
                return True
        except OSError:
            continue
    return False


def exists(engine: Any, container_id: str) -> bool:
    return bool(engine.containers.list(all=True, sparse=True, filters={"id": container_id}))


def test_a_killed_npu_host_is_started_again_and_the_old_one_s_npus_are_removed(worker, docker_engine):
    version = one_node_pipeline("host killed")
    before = npu_of(do_start_run(version))
    [host] = hosts_of(worker)

    host.send_signal(signal.SIGKILL)

    wait_until(
        lambda: [other for other in hosts_of(worker) if other.pid != host.pid], "the host was not restarted"
    )
    after = npu_of(do_start_run(version))
    assert after != before, "a node was given an NPU of the dead host"
    wait_until(lambda: not exists(docker_engine, before), "the dead host's NPU was not removed")
    assert not DedicatedNpu.objects.filter(container_id=before).exists()
    assert DedicatedNpu.objects.filter(container_id=after).exists()


def test_a_pool_process_killed_mid_execution_has_its_execution_killed_and_the_npu_serves_on(
    worker, docker_engine
):
    version = one_node_pipeline("pool process killed")
    stranded = do_start_run(version, {"wait": 120})
    wait_for_node(stranded, "n", ("running",))
    npu = wait_until(
        lambda: (
            NodeExecution.objects.filter(run=stranded, node_id="n")
            .values_list("container_id", flat=True)
            .first()
        ),
        "the execution never started",
    )
    container = docker_engine.containers.get(npu)
    wait_until(lambda: sleeping(container), "the execution's process never showed")

    [pool_process] = pool_processes_of(worker)
    pool_process.send_signal(signal.SIGKILL)

    wait_until(lambda: not sleeping(container), "the orphaned execution kept running")
    # Its runner gone with the process, the attempt stops being stamped: the watchdog
    # fails it (Celery's redelivery of its task to a new process finds it taken).
    stranded = wait_for_run(stranded, wait_s=30)
    assert stranded.state == "failed"
    assert nodes_of(stranded)["n"].error["error_type"] == "RunnerLost"
    assert npu_of(do_start_run(version)) == npu, "the NPU was not kept for the node's next run"
