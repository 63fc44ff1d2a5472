"""The engine's figures (issue 8): dispatch latency with the NPU pool warm and
disabled, the 40-node fibo(10) chain beside Prefect 3 and plain `docker run`, a
200-node fan-out beside the Docker engine's raw churn, engine overhead per node,
trace latency to a WebSocket client, and memory. Real PostgreSQL, Redis, Celery
workers, Docker engine and Daphne; each figure beside a baseline measured in the
same run. The measurements only record; test_report (last: pytest keeps a file's
order) prints them and rewrites their sections of docs/PERFORMANCE.md. Nothing here
asserts a target: the Targets table reports them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import psutil
import pytest
from websockets.sync.client import connect

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from node_runner.resource_sampler import npu_sample
from tests.benchmarks import figures
from tests.benchmarks.engine_runs import (
    FIBO_NODE,
    TRIVIAL_NODE,
    chain_document,
    fan_out_document,
    run_to_completion,
)
from tests.benchmarks.peers import bench_npu_options, docker_churn_per_s, docker_run_chain_s, prefect_chain
from tests.benchmarks.timings import NodeTimeline
from tests.benchmarks.workers import POOL_DISABLED, POOL_WARM, BenchWorker, bench_worker
from tests.integration.conftest import WebServer, session_cookie, wait_for_run
from trace_monitor.kinds import TRANSITION_KINDS
from trace_monitor.recorder import run_group, send

# A shared 2-core machine can take seconds per container: a benchmark reports slowness,
# it does not time out on it.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(3600)]

CHAIN_LENGTH = 40
CHAIN_REPEATS = 2
MAX_FAILED_RUNS = 2
FAN_OUT_WIDTH = 200
WORKER_CONCURRENCY = 2  # tests/integration/conftest.py start_worker's --concurrency
TRACE_CHAIN_LENGTH = 20
TRANSPORT_PROBES = 50
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-workers")


@pytest.fixture(scope="module")
def warm_worker(django_db_setup: None, log_dir: Path) -> Iterator[BenchWorker]:
    with bench_worker(POOL_WARM, log_dir) as worker:
        figures.record("pool", pooled_npus_seen=worker.wait_until_pool_is_warm())
        yield worker


@pytest.fixture(scope="module")
def daphne(django_db_setup: None) -> Iterator[WebServer]:
    server = WebServer()
    server.start()
    yield server
    server.stop()


def test_prefect_and_plain_docker_run_the_same_chain(tmp_path: Path):
    walls, version = prefect_chain(CHAIN_LENGTH, CHAIN_REPEATS, tmp_path)
    figures.record("prefect", walls_s=walls, version=version)
    figures.record("docker run", wall_s=docker_run_chain_s(CHAIN_LENGTH))


def test_the_docker_engine_churns_containers():
    figures.record("churn", per_s=docker_churn_per_s(FAN_OUT_WIDTH, WORKER_CONCURRENCY))


def test_chain_with_the_pool_disabled(django_db_setup: None, log_dir: Path):
    with bench_worker(POOL_DISABLED, log_dir) as worker:
        measure_chain(worker)


def test_chain_with_the_pool_warm(warm_worker: BenchWorker):
    measure_chain(warm_worker)


def measure_chain(worker: BenchWorker) -> None:
    """CHAIN_REPEATS runs that succeed; a run whose node failed is reported, not
    counted, and replaced (a few times at most)."""
    walls: list[float] = []
    timelines: list[NodeTimeline] = []
    failures: list[str] = []
    for attempt in range(CHAIN_REPEATS + MAX_FAILED_RUNS):
        if len(walls) == CHAIN_REPEATS:
            break
        worker.wait_until_pool_is_warm()
        finished = run_to_completion(
            f"chain {attempt} ({worker.pool.name})", chain_document(CHAIN_LENGTH, FIBO_NODE)
        )
        assert finished.workers == {worker.name}, f"nodes ran elsewhere: {finished.workers}"
        if not finished.succeeded:
            failures += [f"{node}: {error}" for node, error in finished.failures.items()]
            continue
        walls.append(finished.wall_s)
        timelines += finished.timelines
    figures.record(worker.pool.name, chain_walls_s=walls, chain_timelines=timelines, chain_failures=failures)


def test_fan_out_with_the_pool_warm(warm_worker: BenchWorker):
    warm_worker.wait_until_pool_is_warm()
    finished = run_to_completion("fan-out", fan_out_document(FAN_OUT_WIDTH, TRIVIAL_NODE))
    assert finished.workers == {warm_worker.name}, f"nodes ran elsewhere: {finished.workers}"
    source = next(t for t in finished.timelines if t.node_id == "source")
    assert finished.run.finished_at is not None
    leaves_s = finished.run.finished_at.timestamp() - source.succeeded
    # Every leaf took its worker slot and its container, failed or not.
    figures.record(
        "fan-out",
        per_s=FAN_OUT_WIDTH / leaves_s,
        wall_s=leaves_s,
        failures=[f"{node}: {error}" for node, error in finished.failures.items()],
    )


def test_trace_latency_to_a_websocket_client(warm_worker: BenchWorker, daphne: WebServer):
    version = do_create_pipeline("trace latency", chain_document(TRACE_CHAIN_LENGTH, TRIVIAL_NODE))
    latest = version.latest_version()
    assert latest is not None
    run = do_start_run(latest)
    events: list[tuple[str, float]] = []  # (kind, received - at)
    transport: list[float] = []
    with connect(
        f"ws://127.0.0.1:{daphne.port}/ws/runs/{run.id}/",
        additional_headers={"Origin": "http://localhost", "Cookie": session_cookie("viewer")},
        max_size=None,
    ) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "snapshot"
        deadline = time.monotonic() + 300
        ended = False
        while not ended:
            frame = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            received = time.time()
            for event in frame.get("events", []):
                events.append((event["kind"], received - datetime.fromisoformat(event["at"]).timestamp()))
                ended = ended or (event["kind"] == "run" and event["data"]["target"] in TERMINAL)
        # The floor: a message put on the run's channel group by this process, straight
        # through Redis and Daphne to the client, with no database and no worker.
        for _ in range(TRANSPORT_PROBES):
            send(run_group(run.id), {"type": "run.samples", "samples": [{"probe_sent": time.time()}]})
            frame = json.loads(ws.recv(timeout=10))
            transport.append(time.time() - frame["samples"][0]["probe_sent"])
            time.sleep(0.02)
    assert wait_for_run(run).state == "succeeded"
    figures.record(
        "trace",
        transitions_s=[lag for kind, lag in events if kind in TRANSITION_KINDS],
        execution_s=[lag for kind, lag in events if kind not in TRANSITION_KINDS],
        transport_s=transport,
    )


def test_memory_of_the_web_process_a_worker_and_an_idle_npu(warm_worker: BenchWorker, daphne: WebServer):
    assert daphne.process is not None
    pooled = warm_worker.pooled_containers()
    if pooled:
        npu_bytes, npu_source = container_memory_bytes(pooled[0]), "an idle pooled NPU (flowkit.pool)"
    else:
        npu_bytes, npu_source = idle_npu_memory_bytes(), "an NPU waiting on stdin (no pooled NPU seen)"
    figures.record(
        "memory",
        web_bytes=psutil.Process(daphne.process.pid).memory_info().rss,
        worker_bytes=warm_worker.rss_bytes(),
        npu_bytes=npu_bytes,
        npu_source=npu_source,
        python_bytes=bare_python_rss_bytes(),
    )


def test_report():
    figures.report(figures.Sizes(CHAIN_LENGTH, FAN_OUT_WIDTH, WORKER_CONCURRENCY, TRACE_CHAIN_LENGTH))


# -- helpers ---------------------------------------------------------------------------


def container_memory_bytes(container: Any) -> int:
    """What `docker stats` shows, as the resource sampler reads it: the cgroup's memory
    less its inactive file cache."""
    sample = npu_sample(container.stats(stream=False))
    assert sample is not None, "the container stopped before it was measured"
    return sample.memory_bytes


def idle_npu_memory_bytes() -> int:
    """An NPU as the pool would hold it: hardened, started, its runtime waiting for a
    job on stdin (nobody attaches, so stdin stays open)."""
    options = bench_npu_options("idle-npu")
    container = docker.from_env().containers.run(**{**options, "detach": True})
    try:
        time.sleep(2)  # the runtime is up and blocked on stdin
        container.reload()
        assert container.status == "running", container.logs()
        return container_memory_bytes(container)
    finally:
        container.remove(force=True)


def bare_python_rss_bytes() -> int:
    """The baseline: this interpreter doing nothing."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        return psutil.Process(process.pid).memory_info().rss
    finally:
        process.kill()
        process.wait()
