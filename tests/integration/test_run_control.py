"""Pause, resume, cancel, restart and rerun-from, with a real worker and real NPUs."""

from __future__ import annotations

import contextlib
import time

import pytest

from control_unit import run_actions
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.conftest import (
    example_version,
    execution_processes,
    nodes_of,
    npu_containers,
    wait_for_node,
    wait_for_run,
)
from trace_monitor.models import NodeExecution

# Burns CPU until it has used `cpu_s` seconds of CPU time, then reports the wall time.
BURN = """
import time
from flowkit.node import Node
node = Node()
def main():
    cpu_s = node.get_inputs().get("cpu_s", 3)
    wall = time.time()
    while time.process_time() < cpu_s:
        pass
    return [], {"cpu_s": time.process_time(), "wall_s": time.time() - wall}, "burnt"
node.register_main(main)
node.run()
"""


def single_node_version(name, code, isolation="dedicated", **limits):
    node = {"id": "work", "code": code, "outputs": ["cpu_s", "wall_s"], "limits": limits}
    node["isolation"] = isolation
    return do_create_pipeline(name, {"schema_version": 1, "nodes": [node], "edges": []}).latest_version()


def npu_of(docker_engine, run, node_id="work"):
    containers = npu_containers(docker_engine, run, node_id)
    return containers[0] if containers else None


def cpu_ticks(pids) -> int:
    """User and system time of these host processes, in clock ticks."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - read at once
            total += sum(int(value) for value in stat[stat.rfind(")") + 2 :].split()[11:13])
    return total


def wait_for_execution(docker_engine, run, wait_s=30):
    """The run's NPU once its execution's processes run in it."""
    deadline = time.monotonic() + wait_s
    while (container := npu_of(docker_engine, run)) is None or not execution_processes(container):
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.05)
    return container


@pytest.mark.exclusive
@pytest.mark.parametrize("isolation", ["dedicated", "container"])
def test_pause_freezes_a_cpu_burning_node_and_resume_completes_the_run(
    celery_worker, transactional_db, docker_engine, isolation
):
    # 1 s of CPU under a 4 s timeout, with a 4 s pause: paused time must not count.
    # (The slack absorbs other tests burning CPU on the same two cores.)
    run = do_start_run(single_node_version("burn", BURN, isolation, timeout_s=4), {"cpu_s": 1})
    wait_for_node(run, "work", ("running",))
    container = wait_for_execution(docker_engine, run)
    time.sleep(0.5)

    run_actions.do_pause_run(run.id)
    deadline = time.monotonic() + 5
    while set((processes := execution_processes(container)).values()) != {"T"}:
        assert time.monotonic() < deadline, f"the execution was not stopped ({processes})"
        time.sleep(0.05)
    assert nodes_of(run)["work"].state == "paused"
    assert container.status == "running", "a pause stops the execution, not its NPU"
    frozen_at = cpu_ticks(processes)
    time.sleep(4)
    assert cpu_ticks(processes) == frozen_at, "CPU time advanced while the run was paused"

    run_actions.do_resume_run(run.id)
    run = wait_for_run(run)
    assert run.state == "succeeded", nodes_of(run)["work"].error
    outputs = nodes_of(run)["work"].outputs
    assert outputs["cpu_s"] >= 1
    assert outputs["wall_s"] >= outputs["cpu_s"] + 3.5  # the pause shows in its wall time
    states = list(run.transitions.filter(node_id="work").values_list("target", flat=True))
    assert states == ["queued", "running", "paused", "running", "succeeded"]


CANCEL_ME = {
    "schema_version": 1,
    "nodes": [
        {"id": "work", "code": BURN, "outputs": ["cpu_s", "wall_s"], "limits": {"timeout_s": 60}},
        {"id": "after", "code": "", "inputs": ["x"]},
    ],
    "edges": [{"source": "work", "source_port": "cpu_s", "target": "after", "target_port": "x"}],
}


def cancel_a_burning_run(docker_engine, document):
    run = do_start_run(do_create_pipeline("cancel me", document).latest_version(), {"cpu_s": 30})
    container = wait_for_execution(docker_engine, run)
    burning = set(execution_processes(container))
    run_actions.do_cancel_run(run.id)
    run.refresh_from_db()
    assert run.state == "cancelled"
    assert {node.node_id: node.state for node in run.node_runs.all()} == {
        "work": "cancelled",
        "after": "cancelled",
    }
    return run, container, burning


def test_cancel_kills_the_execution_in_the_dedicated_npu_which_serves_the_next_run(
    celery_worker, transactional_db, docker_engine
):
    run, container, burning = cancel_a_burning_run(docker_engine, CANCEL_ME)
    deadline = time.monotonic() + 10
    # (The process the server then forks ahead for the node's next execution is new.)
    while burning & set(execution_processes(container)):
        assert time.monotonic() < deadline, "a process of the cancelled execution is still there"
        time.sleep(0.1)
    container.reload()
    assert container.status == "running", "the dedicated NPU stays for the node's next execution"

    again = wait_for_run(do_start_run(run.version, {"cpu_s": 0.1}))
    assert nodes_of(again)["work"].state == "succeeded", nodes_of(again)["work"].error
    assert npu_of(docker_engine, again).id == container.id


def test_cancel_removes_a_single_use_npu_and_marks_every_unfinished_node(
    celery_worker, transactional_db, docker_engine
):
    work, after = CANCEL_ME["nodes"]
    document = {**CANCEL_ME, "nodes": [{**work, "isolation": "container"}, after]}
    run, _, _ = cancel_a_burning_run(docker_engine, document)
    deadline = time.monotonic() + 10
    while npu_containers(docker_engine, run):
        assert time.monotonic() < deadline, "an NPU of the cancelled run is still there"
        time.sleep(0.1)


def test_cancel_of_a_finished_run_is_refused(celery_worker, transactional_db):
    run = wait_for_run(do_start_run(example_version("linear_etl")))
    from control_unit.fcb import InvalidTransition

    with pytest.raises(InvalidTransition, match="run cannot go from succeeded to cancelled"):
        run_actions.do_cancel_run(run.id)


def test_restart_runs_the_same_version_with_the_same_input(celery_worker, transactional_db):
    first = wait_for_run(do_start_run(example_version("conditional"), {"amount": 150}))
    second = wait_for_run(run_actions.do_restart_run(first.id))
    assert second.id != first.id
    assert second.version_id == first.version_id
    assert second.input == {"amount": 150}
    assert second.source_run_id == first.id
    assert nodes_of(second)["notify"].outputs == nodes_of(first)["notify"].outputs


def test_rerun_from_a_middle_node_reuses_upstream_outputs_and_runs_only_it_and_downstream(
    celery_worker, transactional_db, docker_engine
):
    first = wait_for_run(do_start_run(example_version("linear_etl")))
    rerun = wait_for_run(run_actions.do_rerun_from(first.id, "transform"))
    assert rerun.state == "succeeded"
    nodes = nodes_of(rerun)
    assert nodes["extract"].reused is True
    assert nodes["extract"].state == "succeeded"
    assert nodes["extract"].outputs == nodes_of(first)["extract"].outputs
    assert nodes["transform"].reused is False
    assert nodes["load"].outputs == {"total": 3.0, "count": 2}
    executed = set(NodeExecution.objects.filter(run=rerun).values_list("node_id", flat=True))
    assert executed == {"transform", "load"}


def test_rerun_from_a_node_whose_upstream_failed_is_refused(celery_worker, transactional_db):
    from control_unit.fcb import CannotRerun

    document = {
        "schema_version": 1,
        "nodes": [{"id": "broken", "code": "raise ValueError('no')", "outputs": ["out"]},
                  {"id": "after", "code": "", "inputs": ["x"]}],
        "edges": [{"source": "broken", "source_port": "out", "target": "after", "target_port": "x"}],
    }  # fmt: skip
    run = wait_for_run(do_start_run(do_create_pipeline("broken upstream", document).latest_version()))
    with pytest.raises(CannotRerun, match="upstream node broken did not succeed"):
        run_actions.do_rerun_from(run.id, "after")
