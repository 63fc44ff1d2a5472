"""A restart of the Docker engine in the middle of a node (it stops every container):
the attempt fails as EngineUnavailable, is retried once the engine is back without
using the node's own retries, the worker keeps serving, and no NPU is left behind,
none in Created. Runs alone: it stops every container."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import docker
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from node_runner.container_spec import ROLE_LABEL, ROLE_NPU
from node_runner.reaper import CREATED_GRACE_S
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


def created_npus(engine: docker.DockerClient, worker: str) -> list[Any]:
    labels = [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={worker}"]
    return engine.containers.list(all=True, sparse=True, filters={"label": labels, "status": ["created"]})


def test_an_engine_restart_mid_node_uses_none_of_the_node_s_retries_and_leaves_no_created_npu(celery_worker):
    # The engine gives running containers 15 s to stop before it kills them; the first
    # attempt outlasts that, the retry does not. The node has no retries of its own:
    # only a retry on the infrastructure's budget can finish the run.
    sleeper = node_code(
        "import time\nfrom flowkit.node import Node\n"
        "time.sleep(40 if Node().attempt == 1 else 0)\nvalue = 'slept'"
    )
    run = single_node_run(sleeper, "engine restart", timeout_s=90, retries=0)
    wait_for_node(run, "n", ("running",))
    deadline = time.monotonic() + 30
    while not NodeExecution.objects.filter(run=run, attempt=1).exists():
        assert time.monotonic() < deadline, "the NPU never started"
        time.sleep(0.1)

    restart_the_engine()

    run = wait_for_run(run, wait_s=180)
    node = nodes_of(run)["n"]
    assert run.state == "succeeded", node.error
    assert node.outputs == {"value": "slept"}
    assert node.infra_retries >= 1, "the engine's failure was retried on the infrastructure's budget"
    assert node.attempt - node.infra_retries == 1, "and none of the node's own retries was used"
    shown = api_client().get(f"/api/runs/{run.id}").json()["nodes"]
    assert [(n["node_id"], n["infra_retries"]) for n in shown] == [("n", node.infra_retries)]
    attempts = list(NodeExecution.objects.filter(run=run).order_by("attempt"))
    assert attempts[0].outcome == "failed", "the attempt the restart stopped"
    assert attempts[0].error_type == "EngineUnavailable", attempts[0].error_type
    assert attempts[-1].outcome == "succeeded"
    assert celery_worker.process.poll() is None, "the worker kept serving"

    # A container the engine created but never started (a start the restart broke) is
    # removed by the worker's heartbeat once it is CREATED_GRACE_S old.
    engine = docker.from_env()
    leftover = engine.containers.create(
        settings.FLOWKIT_NPU_IMAGE, labels={ROLE_LABEL: ROLE_NPU, "flowkit.worker": celery_worker.name}
    )
    deadline = time.monotonic() + CREATED_GRACE_S + 30
    while created_npus(engine, celery_worker.name):
        assert time.monotonic() < deadline, (
            f"NPUs left in Created: {[c.short_id for c in created_npus(engine, celery_worker.name)]}"
        )
        time.sleep(0.5)
    assert not engine.containers.list(all=True, filters={"id": leftover.id})

    # The first attempt's NPU could not be removed while the engine was away; the
    # worker's heartbeat removes it once it has been exited for 30 s. (The retry's
    # dedicated NPU stays for the node's next execution.)
    deadline = time.monotonic() + 60
    stopped = attempts[0].container_id
    assert stopped, "the first attempt's NPU is in its trace"
    while any(npu.id == stopped for npu in npu_containers(engine, run)):
        assert time.monotonic() < deadline, "the stopped NPU was never removed"
        time.sleep(0.5)


def api_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("engine-restart-admin", password="a long password 123"))
    return client
