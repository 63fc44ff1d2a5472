"""An install upgraded with runs in flight: migration 0007 gives their FCBs the
counters the incremental events rely on, and such a run then runs to its end."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

from control_unit.models import NodeRun, Run
from control_unit.run_actions import do_claim_node, do_record_node_outcome, do_start_run
from tests.integration.layered import finish, layered

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE, AFTER = ("control_unit", "0006_node_test_cancel"), ("control_unit", "0007_fcb_counters")
(LATEST,) = MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes("control_unit")


def migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def test_runs_in_flight_get_their_counters_and_finish(no_broker):
    run = do_start_run(layered("in flight", layers=3, width=2))
    finish(str(run.id), "l0n0", 1)
    assert do_claim_node(run.id, "l0n1", 1, "w") is not None
    expected = {row.node_id: row.waiting for row in NodeRun.objects.filter(run=run)}
    assert expected == {"l0n0": 0, "l0n1": 0, "l1n0": 1, "l1n1": 1, "l2n0": 2, "l2n1": 2}
    assert Run.objects.values_list("unfinished", "failed_node").get(id=run.id) == (5, "")

    migrate(BEFORE)
    migrate(AFTER)
    migrate(LATEST)  # the schema every other test expects

    assert {row.node_id: row.waiting for row in NodeRun.objects.filter(run=run)} == expected
    assert Run.objects.values_list("unfinished", "failed_node").get(id=run.id) == (5, "")
    assert do_record_node_outcome(run.id, "l0n1", 1, {"outputs": {"v": 2}})
    done = 2  # l0n0 and l0n1
    while done < len(no_broker.nodes):
        finish(str(run.id), no_broker.nodes[done][1], done)
        done += 1
    run.refresh_from_db()
    assert run.state == "succeeded", run.reason
    assert len(no_broker.nodes) == 6
