"""A restart of the Docker engine in the middle of a node (it stops every container):
the attempt fails with a clear error, is retried once the engine is back, the worker
keeps serving, and no NPU is left behind. Runs alone: it stops every container."""

from __future__ import annotations

import subprocess
import time

import docker
import pytest

from tests.integration.conftest import (
    REPO,
    node_code,
    nodes_of,
    npu_containers,
    single_node_run,
    wait_for_node,
    wait_for_run,
)
from trace_monitor.models import NodeExecution

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.exclusive]


def restart_the_engine() -> None:
    """Stop dockerd as its service manager would and start it again the way the
    bootstrap scripts do."""
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=True)
    deadline = time.monotonic() + 60
    while subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.2)
    subprocess.run(
        ["bash", "-c", "source deploy/bootstrap/lib.sh && ensure_docker"], cwd=REPO, check=True, timeout=120
    )


def test_an_engine_restart_mid_node_fails_the_attempt_clearly_and_the_retry_succeeds(celery_worker):
    # The engine gives running containers 15 s to stop before it kills them; the first
    # attempt outlasts that, the retry does not.
    sleeper = node_code(
        "import time\nfrom flowkit.node import Node\n"
        "time.sleep(40 if Node().attempt == 1 else 0)\nvalue = 'slept'"
    )
    run = single_node_run(sleeper, "engine restart", timeout_s=90, retries=3, backoff_s=2)
    wait_for_node(run, "n", ("running",))
    deadline = time.monotonic() + 30
    while not NodeExecution.objects.filter(run=run, attempt=1).exists():
        assert time.monotonic() < deadline, "the NPU never started"
        time.sleep(0.1)

    restart_the_engine()

    run = wait_for_run(run, wait_s=120)
    assert run.state == "succeeded", nodes_of(run)["n"].error
    assert nodes_of(run)["n"].outputs == {"value": "slept"}
    attempts = list(NodeExecution.objects.filter(run=run).order_by("attempt"))
    assert attempts[0].outcome == "failed", "the attempt the restart stopped"
    assert attempts[0].error_type, "and it says why"
    assert attempts[-1].outcome == "succeeded"
    assert celery_worker.process.poll() is None, "the worker kept serving"
    # The first attempt's NPU could not be removed while the engine was away; the
    # worker's heartbeat removes it once it has been exited for 30 s. (The retry's
    # dedicated NPU stays for the node's next execution.)
    engine = docker.from_env()
    deadline = time.monotonic() + 60
    stopped = attempts[0].container_id
    assert stopped, "the first attempt's NPU is in its trace"
    while any(npu.id == stopped for npu in npu_containers(engine, run)):
        assert time.monotonic() < deadline, "the stopped NPU was never removed"
        time.sleep(0.5)
