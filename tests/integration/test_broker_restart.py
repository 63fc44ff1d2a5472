"""A restart of the Redis broker in the middle of a run (Redis keeps nothing on disk
here, so every message in it is lost): the dispatch that could not be sent, or was
lost, is re-sent once overdue, and the run finishes.

The test gives its worker a Redis of its own, so that restarting it disturbs no
other test running beside it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from control_unit.models import Run
from tests.integration.conftest import (
    REPO,
    node_code,
    nodes_of,
    server_environment,
    start_worker,
    stop_worker,
    wait_for_run,
)
from trace_monitor.models import NodeExecution, WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)


class PrivateRedis:
    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout
            != b"PONG\n"
        ):
            assert time.monotonic() < deadline, "the private Redis did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    redis = PrivateRedis()
    redis.start()
    yield redis
    redis.stop()


def wait_for(condition, what: str, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_broker_restart_mid_run_loses_no_node(private_redis, transactional_db, tmp_path):
    env = {
        "REDIS_URL": private_redis.url,
        "CELERY_BROKER_URL": private_redis.url,
        "FLOWKIT_WORKER_HEARTBEAT_S": "0.5",
        "FLOWKIT_REDISPATCH_AFTER_S": "2",
    }
    name = f"broker-{os.getpid()}@{socket.gethostname()}"
    # Its readiness shows in its heartbeat: this test process talks to the main Redis.
    worker = start_worker(name, tmp_path / "worker.log", env, wait=False)
    try:
        wait_for(lambda: WorkerStatus.objects.filter(name=name, state="online").exists(), "the worker")
        pipeline = tmp_path / "two_steps.json"
        first = {
            "id": "first",
            "code": node_code("import time\ntime.sleep(3)\nvalue = 1"),
            "outputs": ["value"],
        }
        second = {"id": "second", "code": node_code("print('second done')\nvalue = 2"), "inputs": ["value"]}
        edge = {"source": "first", "source_port": "value", "target": "second", "target_port": "value"}
        pipeline.write_text(json.dumps({"schema_version": 1, "nodes": [first, second], "edges": [edge]}))
        started = subprocess.run(
            [sys.executable, "-m", "web_ui.cli.main", "run", str(pipeline), "--name", "broker restart"],
            cwd=REPO, env={**server_environment(), **env}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        run = Run.objects.get(id=started.stdout.split()[1])
        wait_for(lambda: nodes_of(run)["first"].state == "running", "the first node to run")

        private_redis.stop()  # every message in Redis is gone with it
        wait_for(lambda: nodes_of(run)["first"].state == "succeeded", "the first node to finish")
        assert nodes_of(run)["second"].state == "queued", "its dispatch could not be sent"
        private_redis.start()

        run = wait_for_run(run, wait_s=60)
        assert run.state == "succeeded", nodes_of(run)
        second = nodes_of(run)["second"]
        assert second.attempt == 1, "the same attempt, sent again"
        assert [line["message"] for line in second.logs] == ["second done"]
        # However many times its dispatch was sent, the node ran once.
        assert NodeExecution.objects.filter(run=run, node_id="second").count() == 1
        assert worker.process.poll() is None, "the worker survived the broker's restart"
    finally:
        stop_worker(worker)
