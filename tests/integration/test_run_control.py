"""Pause, resume, cancel, restart and rerun-from, with a real worker and real NPUs."""

from __future__ import annotations

import time

import pytest

from control_unit import run_actions
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.conftest import example_version, nodes_of, npu_containers, wait_for_node, wait_for_run
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


def single_node_version(name, code, **limits):
    document = {"schema_version": 1, "nodes": [{"id": "work", "code": code, "outputs": ["cpu_s", "wall_s"],
                                                "limits": limits}], "edges": []}  # fmt: skip
    return do_create_pipeline(name, document).latest_version()


def npu_of(docker_engine, run, node_id="work"):
    containers = npu_containers(docker_engine, run, node_id)
    return containers[0] if containers else None


def cpu_usage_ns(container) -> int:
    return int(container.stats(stream=False)["cpu_stats"]["cpu_usage"]["total_usage"])


def wait_for_container(docker_engine, run, wait_s=30):
    deadline = time.monotonic() + wait_s
    while (container := npu_of(docker_engine, run)) is None or container.status != "running":
        assert time.monotonic() < deadline, "the NPU never started"
        time.sleep(0.05)
    return container


@pytest.mark.exclusive
def test_pause_freezes_a_cpu_burning_node_and_resume_completes_the_run(
    celery_worker, transactional_db, docker_engine
):
    # 1 s of CPU under a 4 s timeout, with a 4 s pause: paused time must not count.
    # (The slack absorbs other tests burning CPU on the same two cores.)
    run = do_start_run(single_node_version("burn", BURN, timeout_s=4), {"cpu_s": 1})
    wait_for_node(run, "work", ("running",))
    container = wait_for_container(docker_engine, run)
    time.sleep(0.5)

    run_actions.do_pause_run(run.id)
    deadline = time.monotonic() + 5
    while (container := npu_of(docker_engine, run)).status != "paused":
        assert time.monotonic() < deadline, f"the NPU was not frozen ({container.status})"
        time.sleep(0.05)
    assert nodes_of(run)["work"].state == "paused"
    frozen_at = cpu_usage_ns(container)
    time.sleep(4)
    assert cpu_usage_ns(container) == frozen_at, "CPU time advanced while the run was paused"

    run_actions.do_resume_run(run.id)
    run = wait_for_run(run)
    assert run.state == "succeeded", nodes_of(run)["work"].error
    outputs = nodes_of(run)["work"].outputs
    assert outputs["cpu_s"] >= 1
    assert outputs["wall_s"] >= outputs["cpu_s"] + 3.5  # the pause shows in its wall time
    states = list(run.transitions.filter(node_id="work").values_list("target", flat=True))
    assert states == ["queued", "running", "paused", "running", "succeeded"]


def test_cancel_kills_running_npus_and_marks_every_unfinished_node(
    celery_worker, transactional_db, docker_engine
):
    document = {
        "schema_version": 1,
        "nodes": [
            {"id": "work", "code": BURN, "outputs": ["cpu_s", "wall_s"], "limits": {"timeout_s": 60}},
            {"id": "after", "code": "", "inputs": ["x"]},
        ],
        "edges": [{"source": "work", "source_port": "cpu_s", "target": "after", "target_port": "x"}],
    }
    run = do_start_run(do_create_pipeline("cancel me", document).latest_version(), {"cpu_s": 30})
    wait_for_container(docker_engine, run)

    run_actions.do_cancel_run(run.id)
    run.refresh_from_db()
    assert run.state == "cancelled"
    assert {node.node_id: node.state for node in run.node_runs.all()} == {
        "work": "cancelled",
        "after": "cancelled",
    }
    deadline = time.monotonic() + 10
    while npu_of(docker_engine, run) is not None:
        assert time.monotonic() < deadline, "the cancelled node's NPU is still there"
        time.sleep(0.1)
    assert npu_containers(docker_engine, run) == []


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
