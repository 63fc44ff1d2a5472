"""Many workers finishing nodes of one run at the same moment: every result counts
exactly once, each attempt is dispatched at most once, and redelivered tasks are
harmless. Real PostgreSQL row locks, real threads with their own connections."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connection

from control_unit.models import RunTransition
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_claim_node, do_record_node_outcome, do_start_run
from tests.integration.conftest import node_inputs

WIDTH = 40


@pytest.fixture
def dispatched(no_broker):
    """(run, node, attempt) of every dispatch sent, in order."""
    return no_broker.nodes


def wide_version():
    nodes = [{"id": "source", "code": "", "outputs": ["n"]}]
    nodes += [{"id": f"w{i}", "code": "", "inputs": ["n"], "outputs": ["v"]} for i in range(WIDTH)]
    nodes += [{"id": "merge", "code": "", "inputs": [{"name": "values", "list": True}]}]
    edges = [
        {"source": "source", "source_port": "n", "target": f"w{i}", "target_port": "n"} for i in range(WIDTH)
    ]
    edges += [{"source": f"w{i}", "source_port": "v", "target": "merge", "target_port": "values"}
              for i in range(WIDTH)]  # fmt: skip
    return do_create_pipeline("wide", {"schema_version": 1, "nodes": nodes, "edges": edges}).latest_version()


def in_parallel(functions):
    """Run each function in its own thread, all released at once; return their results."""
    barrier = threading.Barrier(len(functions))
    results = [None] * len(functions)
    errors = []

    def worker(index, function):
        try:
            barrier.wait()
            results[index] = function()
        except Exception as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, f)) for i, f in enumerate(functions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return results


def succeed(run, node_id, value):
    return do_record_node_outcome(run.id, node_id, 1, {"outputs": {"v": value}, "next_nodes": []})


def test_parallel_results_of_one_run_are_each_applied_exactly_once(transactional_db, dispatched):
    run = do_start_run(wide_version(), {"n": 1})
    assert do_claim_node(run.id, "source", 1, "w") is not None
    assert do_record_node_outcome(run.id, "source", 1, {"outputs": {"n": 1}})
    claims = in_parallel([lambda i=i: do_claim_node(run.id, f"w{i}", 1, f"worker-{i}") for i in range(WIDTH)])
    assert all(claim is not None for claim in claims)

    applied = in_parallel([lambda i=i: succeed(run, f"w{i}", i) for i in range(WIDTH)])

    assert applied == [True] * WIDTH
    merge = run.node_runs.get(node_id="merge")
    assert merge.state == "queued"
    assert sorted(node_inputs(run, "merge")["values"]) == list(range(WIDTH))
    succeeded = Counter(
        RunTransition.objects.filter(run=run, target="succeeded").values_list("node_id", flat=True)
    )
    assert succeeded == Counter({"source": 1, **{f"w{i}": 1 for i in range(WIDTH)}})
    counts = Counter(dispatched)
    assert all(count == 1 for count in counts.values()), counts
    assert counts[(str(run.id), "merge", 1)] == 1


def test_two_workers_claiming_the_same_attempt_get_it_once(transactional_db, dispatched):
    run = do_start_run(wide_version(), {"n": 1})
    claims = in_parallel([lambda i=i: do_claim_node(run.id, "source", 1, f"worker-{i}") for i in range(8)])
    assert sum(claim is not None for claim in claims) == 1


def test_a_result_reported_twice_at_once_is_applied_once(transactional_db, dispatched):
    run = do_start_run(wide_version(), {"n": 1})
    do_claim_node(run.id, "source", 1, "w")
    applied = in_parallel([lambda: do_record_node_outcome(run.id, "source", 1, {"outputs": {"n": 7}})] * 6)
    assert applied.count(True) == 1
    assert run.node_runs.get(node_id="source").outputs == {"n": 7}
    assert RunTransition.objects.filter(run=run, node_id="source", target="succeeded").count() == 1


def test_a_redelivered_task_neither_reruns_a_finished_node_nor_loses_its_result(transactional_db, dispatched):
    from node_runner.tasks import run_node

    run = do_start_run(wide_version(), {"n": 1})
    do_claim_node(run.id, "source", 1, "w")
    do_record_node_outcome(run.id, "source", 1, {"outputs": {"n": 3}})

    # The same message again, as after a worker crash before its ack: executed in-process.
    run_node.apply(args=(str(run.id), "source", 1)).get()

    source = run.node_runs.get(node_id="source")
    assert source.state == "succeeded"
    assert source.outputs == {"n": 3}
    assert source.container_id == ""  # no NPU was started for the redelivered task
    assert RunTransition.objects.filter(run=run, node_id="source").count() == 3  # queued, running, succeeded


def test_claims_racing_a_pause_never_leave_a_node_running_in_a_paused_run(transactional_db, dispatched):
    from control_unit.run_actions import do_pause_run

    run = do_start_run(wide_version(), {"n": 1})
    do_claim_node(run.id, "source", 1, "w")
    do_record_node_outcome(run.id, "source", 1, {"outputs": {"n": 1}})
    claims = [lambda i=i: do_claim_node(run.id, f"w{i}", 1, f"worker-{i}") for i in range(WIDTH)]
    results = in_parallel([*claims[: WIDTH // 2], lambda: do_pause_run(run.id), *claims[WIDTH // 2 :]])

    run.refresh_from_db()
    assert run.state == "paused"
    states = Counter(run.node_runs.filter(node_id__startswith="w").values_list("state", flat=True))
    assert "running" not in states, states
    del results[WIDTH // 2]  # the pause's
    claimed = sum(1 for result in results if result is not None)
    assert states["paused"] == claimed, "each claim that won is paused with the run"
    held = run.node_runs.filter(node_id__startswith="w", state="queued")
    assert not held.filter(dispatched=True).exists(), "a claim that lost to the pause holds its attempt"
