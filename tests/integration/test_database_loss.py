"""The worker's database connections are dropped in the middle of a node (as by a
PostgreSQL restart or a network cut): the node finishes, its result is recorded and
no log line of its trace is lost."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from tests.integration.conftest import node_code, nodes_of, single_node_run, wait_for_node, wait_for_run
from trace_monitor.models import NodeExecution, TraceEvent

pytestmark = pytest.mark.django_db(transaction=True)


def drop_every_other_connection() -> int:
    """Terminate every session on the test database but this test's own."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        (dropped,) = cursor.fetchone()
    return int(dropped)


def test_dropping_the_workers_database_connections_mid_node_loses_nothing(celery_worker):
    ticking = node_code(
        "import time\nfor i in range(20):\n    print(f'tick {i}')\n    time.sleep(0.2)\nvalue = 20"
    )
    run = single_node_run(ticking, "database loss", timeout_s=60)
    wait_for_node(run, "n", ("running",))
    deadline = time.monotonic() + 30
    while TraceEvent.objects.filter(run=run, kind="log").count() < 3:
        assert time.monotonic() < deadline, "the node never logged"
        time.sleep(0.05)

    assert drop_every_other_connection() >= 1, "the worker had no connection to drop"

    run = wait_for_run(run, wait_s=60)
    assert run.state == "succeeded", nodes_of(run)["n"].error
    assert nodes_of(run)["n"].outputs == {"value": 20}
    logged = (
        TraceEvent.objects.filter(run=run, kind="log").order_by("seq").values_list("data__message", flat=True)
    )
    assert list(logged) == [f"tick {i}" for i in range(20)]
    seqs = list(TraceEvent.objects.filter(run=run).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1)), "no gap in the trace"
    assert NodeExecution.objects.get(run=run, node_id="n").outcome == "succeeded"
