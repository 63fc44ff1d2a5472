"""A worker whose NPU network has no egress policy on the host refuses network-enabled
nodes with a clear node error, and still runs the others.

The seam is real: the worker is started with FLOWKIT_NPU_NETWORK naming a network for
whose bridge the host's firewall has no rule (nothing is faked; the worker reads the
firewall as it does at any start-up)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import docker
import pytest
from django.conf import settings
from django.test import override_settings

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.security.conftest import (
    TERMINAL_RUN_STATES,
    Attack,
    WorkerProcess,
    node_code,
    node_document,
    start_worker,
    stop_worker,
)

NETWORKED = node_code("value = 'ran'")


@pytest.fixture
def unpoliced_worker(
    transactional_db: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, str]]:
    network = f"unpoliced-{uuid.uuid4().hex[:6]}"
    queue = f"{settings.FLOWKIT_CELERY_QUEUE}-unpoliced"
    env = {"FLOWKIT_CELERY_QUEUE": queue, "FLOWKIT_NPU_NETWORK": network, "FLOWKIT_NPU_POOL_MAX": "0"}
    log_path = tmp_path_factory.mktemp("unpoliced-worker") / "worker.log"
    worker = start_worker(f"{queue}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}", log_path, env)
    try:
        yield worker, queue
    finally:
        stop_worker(worker)
        for left in docker.from_env().networks.list(names=[network]):
            left.remove()


def finished(worker: WorkerProcess, queue: str, **limits: Any) -> Attack:
    """Node ``n`` of a new one-node pipeline, run by ``worker``."""
    document = node_document(NETWORKED, limits, "container")
    pipeline = do_create_pipeline(f"egress {time.monotonic_ns()}", document)
    version = pipeline.latest_version()
    assert version is not None
    with override_settings(FLOWKIT_CELERY_QUEUE=queue):
        run = do_start_run(version, {})
    deadline = time.monotonic() + 90
    while run.state not in TERMINAL_RUN_STATES:
        assert worker.process.poll() is None, f"the worker died:\n{worker.log()[-3000:]}"
        assert time.monotonic() < deadline, f"run {run.id} did not finish ({run.state})"
        time.sleep(0.05)
        run.refresh_from_db()
    return Attack.of_run(run)


def test_a_worker_without_the_egress_policy_refuses_network_nodes(unpoliced_worker):
    worker, queue = unpoliced_worker
    assert "NPU egress policy missing on fk-unpoliced-" in worker.log(), worker.log()[-3000:]

    refused = finished(worker, queue, network=True)
    assert refused.state == "failed"
    assert refused.error["error_type"] == "EgressPolicyMissing", refused.error
    assert "network access refused" in refused.error["message"]
    assert "ensure_npu_egress_policy" in refused.error["message"]
    assert not refused.container_id  # no NPU was started for it

    without_network = finished(worker, queue, network=False)
    assert without_network.state == "succeeded", without_network.error
    assert without_network.outputs["value"] == "ran"
