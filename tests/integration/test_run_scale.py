"""Runs of thousands of nodes through the control unit and real PostgreSQL: a
1,000-node layered pipeline runs to the end, each node claimed and finished as a
worker would (no NPU: 1,000 distinct nodes would each need one, and this is about
the engine); finishing a node costs as many queries in a run of 1,000 nodes as in a
run of 10; cancelling a 5,000-node run writes its nodes in a few statements; and
inputs stored as references reach the API and the monitor as values."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from control_unit.models import NodeRun, RunTransition
from control_unit.run_actions import do_cancel_run, do_claim_node, do_start_run
from control_unit.run_stream import snapshot
from tests.integration.conftest import node_inputs
from tests.integration.layered import finish, layered
from trace_monitor.models import TraceEvent

pytestmark = pytest.mark.django_db(transaction=True)


def run_to_the_end(run, dispatched) -> int:
    """Play the worker: take each dispatch as it is sent and finish its node."""
    done = 0
    while done < len(dispatched.nodes):
        run_id, node_id, attempt = dispatched.nodes[done]
        assert (run_id, attempt) == (str(run.id), 1)
        assert finish(run_id, node_id, done)
        done += 1
    return done


def test_a_1000_node_layered_run_runs_to_the_end(transactional_db, no_broker):
    run = do_start_run(layered("thousand", layers=10, width=100))
    assert run_to_the_end(run, no_broker) == 1000

    run.refresh_from_db()
    assert run.state == "succeeded", run.reason
    assert (run.unfinished, run.failed_node) == (0, "")
    assert NodeRun.objects.filter(run=run, state="succeeded").count() == 1000
    last = NodeRun.objects.get(run=run, node_id="l9n99")
    assert len(node_inputs(run, "l9n99")["values"]) == 2, "a node gets the values of both its upstream nodes"
    assert last.inputs is None, "referenced, not copied"
    assert RunTransition.objects.filter(run=run, target="succeeded").count() == 1001  # the nodes, the run


def queries_to_finish(version, node_id: str, no_broker) -> int:
    """The queries one node's claim and outcome cost, midway through a run."""
    done = len(no_broker.nodes)
    run = do_start_run(version)
    while no_broker.nodes[done][1] != node_id:
        finish(str(run.id), no_broker.nodes[done][1], done)
        done += 1
    with CaptureQueriesContext(connection) as queries:
        finish(str(run.id), node_id, done)
    return len(queries)


def test_finishing_a_node_costs_as_many_queries_in_a_run_of_1000_nodes_as_in_one_of_10(
    transactional_db, no_broker
):
    small = queries_to_finish(layered("ten", layers=5, width=2), "l2n0", no_broker)
    large = queries_to_finish(layered("thousand", layers=10, width=100), "l2n0", no_broker)
    assert large == small, f"{large} queries in a run of 1,000 nodes, {small} in one of 10"


def test_cancelling_a_5000_node_run_writes_its_nodes_in_a_few_statements(transactional_db, no_broker):
    run = do_start_run(layered("five thousand", layers=50, width=100))
    for run_id, node_id, _ in list(no_broker.nodes[:10]):
        assert do_claim_node(run_id, node_id, 1, "scale-worker") is not None

    began = time.monotonic()
    with CaptureQueriesContext(connection) as queries:
        do_cancel_run(run.id)
    took = time.monotonic() - began

    run.refresh_from_db()
    assert run.state == "cancelled"
    assert NodeRun.objects.filter(run=run).exclude(state="cancelled").count() == 0
    assert RunTransition.objects.filter(run=run, target="cancelled").exclude(node_id="").count() == 5000
    assert TraceEvent.objects.filter(run=run, kind="cancelled").count() == 5000
    updates = 'UPDATE "control_unit_noderun"'
    node_updates = [q for q in queries.captured_queries if q["sql"].startswith(updates)]
    assert len(node_updates) <= 10, f"{len(node_updates)} UPDATEs of its nodes"
    assert took < 60, f"cancelling took {took:.1f} s (a freeze guard; make bench measures it)"


def test_referenced_inputs_reach_the_api_and_the_monitor_as_values(transactional_db, no_broker):
    run = do_start_run(layered("referenced", layers=2, width=3))
    for i in range(3):
        finish(str(run.id), f"l0n{i}", 10 + i)
    user = User.objects.create_user("scale-viewer", password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    client = Client()
    client.force_login(user)

    detail = client.get(f"/api/runs/{run.id}").json()
    inputs = {node["node_id"]: node["inputs"] for node in detail["nodes"]}
    assert inputs["l1n2"] == {"values": [10, 12]}, "l1n2 takes l0n0 and l0n2, in document order"
    assert inputs["l0n0"] == {}, "a source node gets the run's input"
    node = client.get(f"/api/runs/{run.id}/nodes/l1n1").json()["node"]
    assert node["inputs"] == {"values": [11, 12]}
    download = client.get(f"/api/runs/{run.id}/nodes/l1n0/inputs/values")
    assert download.status_code == 200
    assert download.json() == [10, 11]
    monitor = {row["node_id"]: row["inputs"] for row in snapshot(run.id)["nodes"]}
    assert monitor["l1n2"] == {"values": [10, 12]}
    assert "input_refs" not in node, "references stay internal"
