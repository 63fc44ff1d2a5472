"""What FlowKit is measured beside, in the same run: Prefect 3 running the same
40-task chain, plain `docker run` of the NPU image (the floor of one fresh container
per node), and the Docker engine's raw container churn."""

from __future__ import annotations

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
from django.conf import settings

from control_unit.limits import NodeLimits
from node_runner.container_spec import npu_container_options
from node_runner.wire import SERVER_TAG, ChunkReader, NpuJob, request
from tests.benchmarks.engine_runs import FIBO_NODE

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowkit-bench"
PREFECT_VENV = CACHE / "prefect-venv"
PREFECT_REQUIREMENT = "prefect>=3,<4"
PREFECT_INSTALL_TIMEOUT_S = 900
PREFECT_RUN_TIMEOUT_S = 300

# The chain of the public workflow-engine benchmark: `count` tasks one after the
# other, each computing fibo(10), run `repeats` times. A first, untimed flow starts
# Prefect's ephemeral API server and its SQLite database (tens of seconds here), which
# a deployed Prefect has running already.
PREFECT_FLOW = """
import json, sys, time
import prefect
from prefect import flow, task

def fibo(n):
    return n if n < 2 else fibo(n - 1) + fibo(n - 2)

@task
def fibo_task(n):
    return fibo(n)

@flow
def warm_up():
    return fibo_task(1)

@flow
def chain(count):
    for _ in range(count):
        fibo_task(10)

count, repeats = int(sys.argv[1]), int(sys.argv[2])
warm_up()
walls = []
for _ in range(repeats):
    started = time.perf_counter()
    chain(count)
    walls.append(time.perf_counter() - started)
print(json.dumps({"flow_s": walls, "version": prefect.__version__}))
"""


def prefect_python() -> Path:
    """The interpreter of a virtual environment with Prefect 3, made once and kept in
    ~/.cache/flowkit-bench (a fresh install takes minutes; it is not a figure)."""
    python = PREFECT_VENV / "bin" / "python"
    check = [str(python), "-c", "import prefect, sys; sys.exit(not prefect.__version__.startswith('3.'))"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / "prefect-install.log"
    with log.open("wb") as out:
        subprocess.run(["python3", "-m", "venv", "--clear", str(PREFECT_VENV)], check=True, stdout=out)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip", PREFECT_REQUIREMENT],
            check=True, stdout=out, stderr=subprocess.STDOUT, timeout=PREFECT_INSTALL_TIMEOUT_S,
        )  # fmt: skip
    return python


def prefect_chain(count: int, repeats: int, workdir: Path) -> tuple[list[float], str]:
    """(the wall time of each of ``repeats`` flows of ``count`` tasks, in seconds;
    Prefect's version)."""
    script = workdir / "prefect_chain.py"
    script.write_text(PREFECT_FLOW)
    # A local, ephemeral Prefect: its own home and SQLite database, no API server of
    # anyone else's, no telemetry.
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(CACHE / "prefect-home"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    finished = subprocess.run(
        [str(prefect_python()), str(script), str(count), str(repeats)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=PREFECT_RUN_TIMEOUT_S,
    )  # fmt: skip
    assert finished.returncode == 0, f"the Prefect flow failed:\n{finished.stderr[-3000:]}"
    figures = [line for line in finished.stdout.splitlines() if line.startswith("{")]
    assert figures, f"the Prefect flow printed no figures:\n{finished.stdout[-3000:]}"
    result = json.loads(figures[-1])
    return [float(wall) for wall in result["flow_s"]], str(result["version"])


def docker_run_chain_s(count: int) -> float:
    """``count`` sequential `docker run --rm -i` of the NPU image, each fed a fibo(10)
    job on stdin: one fresh container per node with nothing of FlowKit around it.
    No network, as a FlowKit node has none unless it asks."""
    job = NpuJob(node_id="fibo", label="fibo", code=FIBO_NODE, inputs={}, secrets={}).encode(
        NodeLimits.defaults()
    )
    payload = request("run", "fibo", len(job), 0) + job
    command = ["docker", "run", "--rm", "-i", "--network", "none", settings.FLOWKIT_NPU_IMAGE]
    started = time.perf_counter()
    for _ in range(count):
        one_docker_run(command, payload)
    return time.perf_counter() - started


def one_docker_run(command: list[str], payload: bytes) -> None:
    """The image's fork server takes the job behind its ``run`` request. Its stdin stays
    open until the server reports the execution ended: the end of stdin is its ``quit``,
    which kills a running execution (and, said while the execution ends, leaves the
    server waiting for ever; see docs/PERFORMANCE.md)."""
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        process.stdin.write(payload)
        process.stdin.flush()
        chunks, answered, exited = ChunkReader(), False, False
        while not exited:
            data = os.read(process.stdout.fileno(), 65536)
            assert data, (
                f"the NPU ended before its execution did: {process.stderr.read() if process.stderr else ''!r}"
            )
            for tag, chunk in chunks.feed(data):
                answered = answered or (tag == "fibo" and b'"result"' in chunk)
                exited = exited or (tag == SERVER_TAG and b'"exited"' in chunk)
        assert answered, "the execution ended without a result"
        process.stdin.close()
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def bench_npu_options(purpose: str) -> dict[str, Any]:
    """An NPU's create options as the runner makes them (hardened, default limits),
    labelled with the benchmark's ``purpose``."""
    return npu_container_options(
        image=settings.FLOWKIT_NPU_IMAGE,
        limits=NodeLimits.defaults(),
        labels={"flowkit.bench": purpose},
        runtime=settings.FLOWKIT_NPU_RUNTIME,
        network_name=settings.FLOWKIT_NPU_NETWORK,
    )


def docker_churn_per_s(count: int, concurrency: int) -> float:
    """Containers per second the engine creates, starts, waits for and removes, with
    ``concurrency`` at a time (a worker's): the NPU image with FlowKit's hardened
    options, running a trivial command instead of the runtime."""
    client = docker.from_env()
    options = bench_npu_options("churn")
    options.update(entrypoint=["python3", "-c", "pass"], stdin_open=False, detach=True)

    def churn(_: int) -> None:
        container = client.containers.create(**options)
        try:
            container.start()
            assert container.wait(timeout=60)["StatusCode"] == 0
        finally:
            container.remove(force=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(churn, range(count)))
    return count / (time.perf_counter() - started)
