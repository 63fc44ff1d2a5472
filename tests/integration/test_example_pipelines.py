"""Each example pipeline runs to the right answer through a real worker and real NPUs."""

from __future__ import annotations

import pytest

from control_unit.run_actions import do_start_run
from tests.integration.conftest import example_version, node_inputs, nodes_of, wait_for_run


@pytest.fixture
def start(celery_worker, transactional_db):
    def start_example(name, run_input=None):
        return wait_for_run(do_start_run(example_version(name), run_input))

    return start_example


def test_linear_etl_passes_rows_from_extract_through_transform_to_load(start):
    run = start("linear_etl")
    assert run.state == "succeeded", nodes_of(run)
    nodes = nodes_of(run)
    assert nodes["load"].outputs == {"total": 3.0, "count": 2}
    assert node_inputs(run, "transform") == {"rows": nodes["extract"].outputs["rows"]}
    assert nodes["extract"].logs[0]["message"] == "extracted 2 rows"


def test_source_nodes_receive_the_run_input(start):
    run = start("linear_etl", {"rows": [{"item": "fig", "qty": 4, "price": 1.25}]})
    assert nodes_of(run)["load"].outputs == {"total": 5.0, "count": 1}


def test_fan_out_runs_three_branches_and_fan_in_merges_them(start):
    run = start("fan_out")
    assert run.state == "succeeded"
    nodes = nodes_of(run)
    assert nodes["report"].outputs == {"report": {"sum": 55, "max": 10, "squares": 385}}
    assert len(node_inputs(run, "report")["parts"]) == 3


@pytest.mark.parametrize(
    ("amount", "taken", "skipped", "message"),
    [
        (150, "large_order", "small_order", "manual review of 150"),
        (5, "small_order", "large_order", "auto-approved 5"),
    ],
)
def test_conditional_routing_runs_only_the_chosen_branch(start, amount, taken, skipped, message):
    run = start("conditional", {"amount": amount})
    assert run.state == "succeeded"
    nodes = nodes_of(run)
    assert nodes[taken].state == "succeeded"
    assert nodes[skipped].state == "skipped"
    assert nodes[skipped].attempt == 0
    assert nodes["notify"].outputs == {"message": message}


def test_flaky_node_fails_its_first_attempt_and_succeeds_on_retry(start):
    run = start("flaky")
    assert run.state == "succeeded"
    nodes = nodes_of(run)
    assert nodes["flaky"].attempt == 2
    assert nodes["after"].outputs == {"done": True, "attempts": 2}
    retry = run.transitions.get(node_id="flaky", source="running", target="queued")
    assert retry.attempt == 2
    assert "attempt 1 failed; retry 2/3" in retry.reason


def test_a_node_failing_every_attempt_fails_the_run_and_cancels_its_downstream(start, transactional_db):
    from control_unit.pipeline_actions import do_create_pipeline

    document = {
        "schema_version": 1,
        "nodes": [
            {"id": "broken", "code": "raise RuntimeError('always broken')", "outputs": ["out"],
             "limits": {"retries": 1, "backoff_s": 0.05}},
            {"id": "after", "code": "", "inputs": ["x"]},
        ],
        "edges": [{"source": "broken", "source_port": "out", "target": "after", "target_port": "x"}],
    }  # fmt: skip
    run = wait_for_run(do_start_run(do_create_pipeline("always broken", document).latest_version()))
    assert run.state == "failed"
    assert run.reason == "node broken failed"
    nodes = nodes_of(run)
    assert nodes["broken"].state == "failed"
    assert nodes["broken"].attempt == 2
    assert nodes["broken"].error["message"] == "always broken"
    assert nodes["after"].state == "cancelled"
    assert nodes["after"].reason == "upstream node broken failed"
