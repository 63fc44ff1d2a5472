"""Dedicated NPUs with a real worker and the real Docker engine: a node keeps its NPU
from one execution to the next (adopted from the warm pool on first use), across new
versions of its pipeline while its profile is the same; the NPU is replaced after its
maximum of executions, let go when idle, when its pipeline is deleted, or when the
process holds too many; whatever an execution does to its NPU, the node's next
execution succeeds; pausing one run's execution leaves another run's going."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from control_unit.pipeline_actions import do_create_pipeline, do_delete_pipeline, do_save_version
from control_unit.run_actions import do_pause_run, do_resume_run, do_start_run
from node_runner.container_spec import POOL_LABEL, ROLE_LABEL, ROLE_NPU
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

pytestmark = pytest.mark.django_db(transaction=True)

# Idle long enough that a loaded machine checks a node's NPU before it is let go.
MAX_EXECUTIONS, IDLE_S, MAX_NPUS = 4, 15, 2


@pytest.fixture
def own_queue(settings) -> str:
    settings.FLOWKIT_CELERY_QUEUE = f"dedicated-{os.getpid()}-{time.monotonic_ns()}"
    return str(settings.FLOWKIT_CELERY_QUEUE)


@pytest.fixture
def one_process_worker(transactional_db, own_queue, tmp_path) -> Iterator[WorkerProcess]:
    """A worker of one process (so a node always meets the same registry), with small
    bounds: 4 executions per NPU, 15 s idle, 2 NPUs."""
    name = f"dedicated-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    env = {
        "FLOWKIT_CELERY_QUEUE": own_queue,
        "FLOWKIT_NPU_POOL_MIN": "1",
        "FLOWKIT_NPU_POOL_MAX": "1",
        "FLOWKIT_NPU_DEDICATED_MAX_EXECUTIONS": str(MAX_EXECUTIONS),
        "FLOWKIT_NPU_DEDICATED_IDLE_S": str(IDLE_S),
        "FLOWKIT_NPU_DEDICATED_MAX": str(MAX_NPUS),
    }
    worker = start_worker(name, tmp_path / "worker.log", env, autoscale=(1, 1))
    yield worker
    stop_worker(worker)


def one_node(code: str, **node: Any) -> dict[str, Any]:
    return {
        "schema_version": 1,
        "nodes": [{"id": "n", "code": code, "outputs": ["value"], **node}],
        "edges": [],
    }


def containers_of(run: Any, node_id: str = "n") -> list[str]:
    executions = NodeExecution.objects.filter(run=run, node_id=node_id).order_by("attempt")
    return [execution.container_id for execution in executions]


def run_once(version: Any, run_input: Any = None) -> Any:
    run = wait_for_run(do_start_run(version, run_input), wait_s=90)
    assert run.state == "succeeded", {node.node_id: node.error for node in run.node_runs.all()}
    return run


def wait_until(condition: Any, what: str, wait_s: float = 30) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def exists(engine: Any, container_id: str) -> bool:
    return bool(engine.containers.list(all=True, sparse=True, filters={"id": container_id}))


ADD_ONE = node_code("value = (node.get_inputs().get('x') or 0) + 1")


def test_a_node_keeps_its_npu_adopted_from_the_pool_for_its_next_executions(
    one_process_worker, docker_engine
):
    labels = [f"{ROLE_LABEL}={ROLE_NPU}", f"flowkit.worker={one_process_worker.name}", POOL_LABEL]
    wait_until(lambda: docker_engine.containers.list(filters={"label": labels}), "the pool never filled")
    waiting = {container.id for container in docker_engine.containers.list(filters={"label": labels})}
    version = do_create_pipeline("kept", one_node(ADD_ONE)).latest_version()

    first, second = run_once(version), run_once(version)

    [npu] = containers_of(first)
    assert containers_of(second) == [npu]
    assert npu in waiting, "the first execution did not adopt a waiting NPU"
    row = DedicatedNpu.objects.get(container_id=npu)
    assert (str(row.pipeline_id), row.node_id, row.adopted) == (str(version.pipeline_id), "n", True)
    wait_until(lambda: DedicatedNpu.objects.get(container_id=npu).executions == 2, "executions not recorded")


def test_a_new_version_keeps_the_npu_while_the_profile_is_the_same(one_process_worker):
    version = do_create_pipeline("versions", one_node(ADD_ONE)).latest_version()
    [npu] = containers_of(run_once(version))
    doubled = do_save_version(version.pipeline, one_node(node_code("value = 2 * 21")))
    again = run_once(doubled)
    assert nodes_of(again)["n"].outputs == {"value": 42}
    assert containers_of(again) == [npu]

    bigger = do_save_version(version.pipeline, one_node(ADD_ONE, limits={"memory_mb": 128}))
    assert containers_of(run_once(bigger)) != [npu], "another profile must get another NPU"


def test_the_npu_is_replaced_after_its_maximum_of_executions(one_process_worker, docker_engine):
    version = do_create_pipeline("worn", one_node(ADD_ONE)).latest_version()
    used = [containers_of(run_once(version))[0] for _ in range(MAX_EXECUTIONS + 1)]

    assert len(set(used[:MAX_EXECUTIONS])) == 1
    assert used[MAX_EXECUTIONS] != used[0]
    wait_until(lambda: not exists(docker_engine, used[0]), "the worn NPU was not removed")


def test_an_idle_npu_and_the_npu_of_a_deleted_pipeline_are_let_go(one_process_worker, docker_engine):
    idle = do_create_pipeline("idle", one_node(ADD_ONE)).latest_version()
    deleted = do_create_pipeline("deleted", one_node(ADD_ONE)).latest_version()
    [idle_npu] = containers_of(run_once(idle))
    [deleted_npu] = containers_of(run_once(deleted))

    do_delete_pipeline(deleted.pipeline)
    wait_until(
        lambda: not exists(docker_engine, deleted_npu), "the deleted pipeline's NPU is still there", 20
    )
    wait_until(lambda: not exists(docker_engine, idle_npu), "the idle NPU is still there", IDLE_S + 20)
    assert not DedicatedNpu.objects.filter(container_id__in=[idle_npu, deleted_npu]).exists()


def test_beyond_its_maximum_a_process_lets_the_least_recently_used_npu_go(one_process_worker, docker_engine):
    nodes = [{"id": name, "code": ADD_ONE, "inputs": ["x"], "outputs": ["value"]} for name in "abc"]
    edges = [{"source": s, "source_port": "value", "target": t, "target_port": "x"} for s, t in ("ab", "bc")]
    run = run_once(
        do_create_pipeline("many", {"schema_version": 1, "nodes": nodes, "edges": edges}).latest_version()
    )

    assert nodes_of(run)["c"].outputs == {"value": 3}
    [first] = containers_of(run, "a")
    wait_until(lambda: not exists(docker_engine, first), "the least recently used NPU was kept")
    assert all(exists(docker_engine, containers_of(run, name)[0]) for name in "bc")


# What a node may do to its NPU, and what it gets for it. After each, the node's next
# execution must succeed (in the same NPU, or a replacement).
MISDEEDS = {
    "forks a daemon": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n"
        "    if os.fork() == 0:\n        time.sleep(600)\n    os._exit(0)\nvalue = 'left a daemon'",
        None,
    ),
    "fills /tmp": (
        "import errno\ntry:\n    with open('/tmp/fill', 'wb') as f:\n        while True:\n"
        "            f.write(b'x' * 1048576)\nexcept OSError as exc:\n    value = exc.errno",
        None,
    ),
    "fills /dev/shm": (
        "try:\n    with open('/dev/shm/fill', 'wb') as f:\n        while True:\n"
        "            f.write(b'x' * 1048576)\nexcept OSError as exc:\n    value = exc.errno",
        None,
    ),
    "exhausts pids": (
        "import os, time\nvalue = 0\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n"
        "        break\n    if pid == 0:\n        time.sleep(600)\n        os._exit(0)\n    value += 1",
        None,
    ),
    "exhausts memory": ("hoard = []\nwhile True:\n    hoard.append(bytearray(16 * 1048576))", "OutOfMemory"),
    "closes its output": ("import os\nos.closerange(0, 1024)\nvalue = 1", "NpuCrashed"),
    "calls os._exit": ("import os\nos._exit(7)", "NpuCrashed"),
    "hangs": ("import time\ntime.sleep(600)", "NodeTimeout"),
}

# The next execution looks for anything the previous one left.
INSPECT = """
import os
if node.get_inputs().get('x') == 'misdeed':
    {misdeed}
else:
    value = {{
        'processes': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
        'me': os.getpid(),
        'tmp': os.listdir('/tmp'),
        'shm': os.listdir('/dev/shm'),
    }}
"""


@pytest.mark.parametrize("misdeed", list(MISDEEDS))
def test_whatever_an_execution_does_the_next_execution_of_the_node_succeeds_in_a_clean_npu(
    one_process_worker, misdeed
):
    body, error_type = MISDEEDS[misdeed]
    code = node_code(INSPECT.format(misdeed=body.replace("\n", "\n    ")))
    limits = {"timeout_s": 3, "memory_mb": 160, "pids": 32}
    version = do_create_pipeline(
        f"misdeed {misdeed}", one_node(code, inputs=["x"], limits=limits)
    ).latest_version()

    bad = wait_for_run(do_start_run(version, {"x": "misdeed"}), wait_s=90)
    node = nodes_of(bad)["n"]
    if misdeed == "exhausts pids" and settings.FLOWKIT_NPU_RUNTIME == "runsc" and node.error:
        # gVisor counts each forked child's memory in full: 32 of them meet the memory
        # limit before the pids limit.
        error_type = "OutOfMemory"
    if error_type is None:
        assert bad.state == "succeeded", node.error
    else:
        assert bad.state == "failed"
        assert node.error["error_type"] == error_type, node.error
    good = run_once(version, {"x": "inspect"})

    seen = nodes_of(good)["n"].outputs["value"]
    assert len(seen["tmp"]) == 1, seen["tmp"]  # its own working directory, nothing else
    assert seen["tmp"][0].startswith("exec-")
    assert seen["shm"] == []
    # Only the fork server (1), this execution and the processes it started itself.
    assert [pid for pid in seen["processes"] if pid not in (1, seen["me"])] == [], seen["processes"]


def test_pausing_one_run_stops_only_its_execution_and_another_run_of_the_node_finishes(
    celery_worker, transactional_db, docker_engine
):
    # 4 s of sleeping in small steps; its wall time shows a pause.
    slow = node_code(
        "import time\nstart = time.time()\nfor _ in range(40):\n    time.sleep(0.1)\n"
        "value = time.time() - start"
    )
    version = do_create_pipeline("two runs", one_node(slow, limits={"concurrency": 2})).latest_version()
    paused, other = do_start_run(version), do_start_run(version)
    for run in (paused, other):
        wait_for_node(run, "n", ("running",))
    wait_until(lambda: all(containers_of(run) for run in (paused, other)), "the executions never started")
    # Two pool processes of the worker run them, in the node's one NPU (its NPU host
    # holds it for every process), two at once as the node's concurrency allows.
    assert containers_of(paused) == containers_of(other)

    do_pause_run(paused.id)
    paused_at = time.monotonic()
    container = docker_engine.containers.get(containers_of(paused)[0])
    # Under runc the host sees the execution's processes stop (gVisor keeps them inside
    # its sandbox: there the paused run's wall time below shows it).
    runc = settings.FLOWKIT_NPU_RUNTIME == "runc"
    if runc:
        stopped = lambda: "T" in execution_processes(container).values()  # noqa: E731
        wait_until(stopped, "the paused execution was not stopped")
    other = wait_for_run(other, wait_s=60)
    assert other.state == "succeeded", nodes_of(other)["n"].error
    assert nodes_of(paused)["n"].state == "paused"
    if runc:
        assert stopped(), "the paused execution did not stay stopped"
    time.sleep(max(0.0, 3 - (time.monotonic() - paused_at)))

    do_resume_run(paused.id)
    paused = wait_for_run(paused, wait_s=60)
    assert paused.state == "succeeded", nodes_of(paused)["n"].error
    assert nodes_of(paused)["n"].outputs["value"] >= 4 + 2.5, "the paused execution went on while paused"


def test_two_processes_of_a_worker_share_a_node_s_npu_one_execution_at_a_time(
    celery_worker, transactional_db
):
    """Concurrency 1 (the default): two runs of the node, taken by the worker's two
    pool processes at once, go through the node's one NPU one after the other."""
    # Its own start and end, by the host's clock (an NPU shares it).
    slow = node_code("import time\nstart = time.time()\ntime.sleep(1.5)\nvalue = [start, time.time()]")
    version = do_create_pipeline("one at a time", one_node(slow)).latest_version()
    first, second = do_start_run(version), do_start_run(version)
    spans = []
    for run in (first, second):
        run = wait_for_run(run, wait_s=90)
        assert run.state == "succeeded", nodes_of(run)["n"].error
        spans.append(nodes_of(run)["n"].outputs["value"])

    executions = sorted(
        NodeExecution.objects.filter(run__in=(first, second), node_id="n"), key=lambda row: row.started_at
    )
    assert len(executions) == 2
    assert executions[0].container_id == executions[1].container_id, "the node got two NPUs"
    earlier, later = sorted(spans)
    assert later[0] >= earlier[1], f"the node ran twice at once: {spans}"
