"""The engine's figures (issues 8 and 14): a dedicated NPU driven directly (its start
and round trip, runc and gVisor); dispatch latency; the 40-node fibo(10) chain on
dedicated NPUs cold and warm, with single-use containers (`isolation: container`, the
pool warm and disabled), beside Prefect 3 and plain `docker run`; a 200-node fan-out
beside the Docker engine's raw churn; engine overhead per node; trace latency to a
WebSocket client; and memory. Real PostgreSQL, Redis, Celery workers, Docker engine
and Daphne; each figure beside a baseline measured in the same run. The measurements
only record; test_report (last: pytest keeps a file's order) prints them and rewrites
their sections of docs/PERFORMANCE.md. Nothing here asserts a target: the Targets
tables report them."""

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

from control_unit.pipeline_actions import do_create_pipeline, do_delete_pipeline
from control_unit.run_actions import do_start_run
from node_runner.ready_npu import NpuUnavailable
from node_runner.resource_sampler import npu_sample
from tests.benchmarks import cpu_use, fcb_events, figures, npu_figures
from tests.benchmarks.engine_runs import (
    CONTAINER,
    FIBO_NODE,
    TRIVIAL_NODE,
    FinishedRun,
    chain_document,
    fan_out_document,
    run_to_completion,
    run_version_to_completion,
    saved_pipeline,
)
from tests.benchmarks.npu_driver import NpuFailed, attach_floor, drive_npu
from tests.benchmarks.peers import bench_npu_options, docker_churn_per_s, docker_run_chain_s, prefect_chain
from tests.benchmarks.timings import NodeTimeline
from tests.benchmarks.workers import (
    DEDICATED_PINNED,
    HAND_OFF_OPTIONS,
    POOL_DISABLED,
    POOL_WARM,
    BenchWorker,
    PoolSetting,
    bench_worker,
    wait_until_removed,
)
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
DEDICATED_FAN_OUT_WIDTH = 50
HAND_OFF_RUNS = 3
WORKER_CONCURRENCY = 2  # tests/integration/conftest.py start_worker's --concurrency
TRACE_CHAIN_LENGTH = 20
TRANSPORT_PROBES = 50
# A dedicated NPU driven directly: jobs measured after a warm-up, probes of the start's
# parts, and lines through the attach stream's floor.
NPU_JOBS = 200
NPU_WARM_UP = 20
NPU_PROBES = 30
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-workers")


@pytest.fixture(scope="module")
def warm_worker(django_db_setup: None, django_db_blocker: Any, log_dir: Path) -> Iterator[BenchWorker]:
    with bench_worker(POOL_WARM, log_dir) as worker:
        with django_db_blocker.unblock():  # the pool's NPUs are told from adopted ones by a table
            figures.record("pool", pooled_npus_seen=worker.wait_until_pool_is_warm())
        yield worker


@pytest.fixture(scope="module")
def daphne(django_db_setup: None) -> Iterator[WebServer]:
    server = WebServer()
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("runtime", npu_figures.RUNTIMES)
def test_a_dedicated_npu_driven_directly(runtime: str):
    try:
        driven = drive_npu(runtime, NPU_JOBS, NPU_WARM_UP, NPU_PROBES)
        floor = attach_floor(runtime, NPU_JOBS, NPU_WARM_UP)
    except (NpuFailed, NpuUnavailable) as exc:
        # Reported beside the figures; gVisor is an extra row, the default runtime a must.
        npu_figures.record_npu(runtime, [], [], [], failure=str(exc))
        if runtime == npu_figures.TARGET_RUNTIME:
            raise
        return
    npu_figures.record_npu(runtime, driven.executions, driven.parts, floor)


def test_prefect_and_plain_docker_run_the_same_chain(tmp_path: Path):
    walls, version = prefect_chain(CHAIN_LENGTH, CHAIN_REPEATS, tmp_path)
    figures.record("prefect", walls_s=walls, version=version)
    figures.record("docker run", wall_s=docker_run_chain_s(CHAIN_LENGTH))


def test_the_docker_engine_churns_containers():
    figures.record("churn", per_s=docker_churn_per_s(FAN_OUT_WIDTH, WORKER_CONCURRENCY))


def test_chain_in_single_use_containers_with_the_pool_disabled(django_db_setup: None, log_dir: Path):
    with bench_worker(POOL_DISABLED, log_dir) as worker:
        measure_chain(worker)


def test_chain_in_single_use_containers_with_the_pool_warm(warm_worker: BenchWorker):
    measure_chain(warm_worker)


def test_chain_on_dedicated_npus_cold_then_warm(django_db_setup: None, log_dir: Path):
    """Each freshly saved chain runs twice on a worker of one process: cold, then warm.
    The pipeline is deleted afterwards, and its NPUs gone, before the next one."""
    cold_walls: list[float] = []
    warm_walls: list[float] = []
    cold_timelines: list[NodeTimeline] = []
    warm_timelines: list[NodeTimeline] = []
    reused: list[tuple[int, int]] = []
    failures: list[str] = []
    idle_npu_bytes = None
    with bench_worker(DEDICATED_PINNED, log_dir) as worker:
        for attempt in range(CHAIN_REPEATS + MAX_FAILED_RUNS):
            if len(warm_walls) == CHAIN_REPEATS:
                break
            worker.wait_until_pool_is_warm()
            version = saved_pipeline(f"dedicated chain {attempt}", chain_document(CHAIN_LENGTH, FIBO_NODE))
            cold = run_version_to_completion(version)
            warm = run_version_to_completion(version)
            for finished in (cold, warm):
                assert finished.workers == {worker.name}, f"nodes ran elsewhere: {finished.workers}"
                failures += [f"{node}: {error}" for node, error in finished.failures.items()]
            if cold.succeeded and warm.succeeded:
                cold_walls.append(cold.wall_s)
                warm_walls.append(warm.wall_s)
                cold_timelines += cold.timelines
                warm_timelines += warm.timelines
                reused.append((reused_npus(cold, warm), len(warm.containers)))
                if idle_npu_bytes is None:
                    # The chain's first node has waited longest since its execution.
                    idle_npu_bytes = container_memory_bytes(
                        docker.from_env().containers.get(warm.containers["n1"])
                    )
            let_go_of(version.pipeline, cold, warm)
    figures.record(
        figures.COLD, chain_walls_s=cold_walls, chain_timelines=cold_timelines, chain_failures=failures
    )
    figures.record(
        figures.HOT,
        chain_walls_s=warm_walls,
        chain_timelines=warm_timelines,
        reused=reused,
        idle_npu_bytes=idle_npu_bytes,
    )


def test_chain_on_dedicated_npus_with_the_worker_defaults(warm_worker: BenchWorker):
    """As deployed: two pool processes sharing the dedicated NPUs of their NPU host, and
    the default bound (FLOWKIT_NPU_DEDICATED_MAX): how many nodes of the second run find
    their NPU."""
    warm_worker.wait_until_pool_is_warm()
    version = saved_pipeline("dedicated chain, worker defaults", chain_document(CHAIN_LENGTH, FIBO_NODE))
    cold = run_version_to_completion(version)
    warm = run_version_to_completion(version)
    for finished in (cold, warm):
        assert finished.workers == {warm_worker.name}, f"nodes ran elsewhere: {finished.workers}"
    figures.record(
        figures.DEFAULTS,
        cold_wall_s=cold.wall_s if cold.succeeded else None,
        warm_wall_s=warm.wall_s if warm.succeeded else None,
        reused=reused_npus(cold, warm),
        nodes=len(warm.containers),
        chain_failures=[
            f"{node}: {error}" for finished in (cold, warm) for node, error in finished.failures.items()
        ],
    )
    let_go_of(version.pipeline, cold, warm)


def reused_npus(cold: FinishedRun, warm: FinishedRun) -> int:
    """Nodes of the second run that ran in the NPU their first execution had."""
    return sum(1 for node, container in warm.containers.items() if cold.containers.get(node) == container)


def let_go_of(pipeline: Any, *runs: FinishedRun) -> None:
    """Delete the pipeline and wait until the worker has removed its dedicated NPUs, so
    that the next measurement does not pay for their removal."""
    containers = {container for finished in runs for container in finished.containers.values()}
    do_delete_pipeline(pipeline)
    assert wait_until_removed(containers), "the worker kept the NPUs of a deleted pipeline"


def measure_chain(worker: BenchWorker) -> None:
    """CHAIN_REPEATS runs in single-use containers (`isolation: container`) that
    succeed; a run whose node failed is reported, not counted, and replaced (a few
    times at most)."""
    walls: list[float] = []
    timelines: list[NodeTimeline] = []
    failures: list[str] = []
    for attempt in range(CHAIN_REPEATS + MAX_FAILED_RUNS):
        if len(walls) == CHAIN_REPEATS:
            break
        worker.wait_until_pool_is_warm()
        finished = run_to_completion(
            f"chain {attempt} ({worker.pool.name})", chain_document(CHAIN_LENGTH, FIBO_NODE, CONTAINER)
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
    finished = run_to_completion("fan-out", fan_out_document(FAN_OUT_WIDTH, TRIVIAL_NODE, CONTAINER))
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
        # The page Daphne serves at that address: the origin check compares the port too.
        additional_headers={"Origin": f"http://127.0.0.1:{daphne.port}", "Cookie": session_cookie("viewer")},
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


def test_fan_out_of_trivial_nodes_on_dedicated_npus_cold_then_warm(warm_worker: BenchWorker):
    """As deployed (two pool processes sharing their NPU host's dedicated NPUs): a new
    pipeline's first run, then its second, whose leaves find their NPUs waiting."""
    warm_worker.wait_until_pool_is_warm()
    version = saved_pipeline("dedicated fan-out", fan_out_document(DEDICATED_FAN_OUT_WIDTH, TRIVIAL_NODE))
    cold = run_version_to_completion(version)
    with cpu_use.measured() as used:
        warm = run_version_to_completion(version)
    figures.record(figures.FAN_OUT_WARM, cpu=used, nodes=DEDICATED_FAN_OUT_WIDTH + 1)
    for name, finished in ((figures.FAN_OUT_COLD, cold), (figures.FAN_OUT_WARM, warm)):
        assert finished.workers == {warm_worker.name}, f"nodes ran elsewhere: {finished.workers}"
        source = next((t for t in finished.timelines if t.node_id == "source"), None)
        assert finished.run.finished_at is not None
        leaves_s = finished.run.finished_at.timestamp() - source.succeeded if source else None
        figures.record(
            name,
            per_s=DEDICATED_FAN_OUT_WIDTH / leaves_s if leaves_s and finished.succeeded else None,
            wall_s=leaves_s,
            failures=[f"{node}: {error}" for node, error in finished.failures.items()],
        )
    let_go_of(version.pipeline, cold, warm)


@pytest.mark.parametrize("option", HAND_OFF_OPTIONS, ids=lambda option: option.name)
def test_hand_off_options(django_db_setup: None, log_dir: Path, option: PoolSetting):
    """The warm chain of trivial nodes on a worker of one process, under each Celery
    acknowledgement and prefetch setting: how fast a node reaches the next."""
    walls: list[float] = []
    timelines: list[NodeTimeline] = []
    with bench_worker(option, log_dir) as worker:
        worker.wait_until_pool_is_warm()
        version = saved_pipeline(f"hand-off {option.name}", chain_document(CHAIN_LENGTH, TRIVIAL_NODE))
        cold = run_version_to_completion(version)
        runs = [run_version_to_completion(version) for _ in range(HAND_OFF_RUNS)]
        for finished in runs:
            if finished.succeeded:
                walls.append(finished.wall_s)
                timelines += finished.timelines
        let_go_of(version.pipeline, cold, *runs)
    figures.record(figures.HAND_OFF, **{option.name: (walls, timelines)})


def test_fcb_event_cost_in_runs_of_10_and_1000_nodes():
    figures.record(
        figures.FCB_EVENTS,
        small=fcb_events.event_costs(*fcb_events.SMALL, repeats=fcb_events.SMALL_REPEATS),
        large=fcb_events.event_costs(*fcb_events.LARGE),
        cancel_small_s=fcb_events.cancel_seconds(*fcb_events.SMALL),
        cancel_large_s=fcb_events.cancel_seconds(*fcb_events.CANCELLED_SHAPE),
    )


def test_report():
    sizes = (CHAIN_LENGTH, FAN_OUT_WIDTH, WORKER_CONCURRENCY, TRACE_CHAIN_LENGTH, DEDICATED_FAN_OUT_WIDTH)
    figures.report(figures.Sizes(*sizes))
    npu_figures.report()


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
