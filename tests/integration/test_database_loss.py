"""The worker's database connections are dropped in the middle of a node (as by a
PostgreSQL restart or a network cut): the node finishes, its result is recorded and
no log line of its trace is lost. A database that stays away for longer than the
runner's own retries: the outcome waits in the broker and is recorded once it is back."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from control_unit.models import NodeRun
from tests.integration.conftest import (
    database_url_for_processes,
    node_code,
    nodes_of,
    single_node_run,
    start_worker,
    stop_worker,
    wait_for_node,
    wait_for_run,
)
from tests.integration.hosts import TcpForwarders
from trace_monitor.models import NodeExecution, TraceEvent, WorkerStatus

# Longer than the runner's own retries (trace_monitor.database_retry: about 31.5 s, spent
# finishing the trace, which the node reaches a few seconds into the outage).
OUTAGE_S = 50

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def attempt_kept_alive(run: Any, node_id: str) -> Iterator[None]:
    """Stamp the node's attempt as alive every second, as its runner would if the
    watchdog could reach it (node_runner.attempt_stamps)."""
    done = threading.Event()

    def stamp() -> None:
        try:
            while not done.wait(1):
                NodeRun.objects.filter(run=run, node_id=node_id).update(alive_at=timezone.now())
        finally:
            connection.close()

    stamper = threading.Thread(target=stamp, daemon=True)
    stamper.start()
    try:
        yield
    finally:
        done.set()
        stamper.join(timeout=10)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cuttable_database() -> Iterator[tuple[TcpForwarders, str]]:
    """A forwarder to the test database that a test can cut, and the URL through it."""
    db = connection.settings_dict
    forwarders, port = TcpForwarders(), free_port()
    forwarders.add(("127.0.0.1", port), (db["HOST"], int(db["PORT"])))
    try:
        direct = f"@{db['HOST']}:{db['PORT']}/"
        yield forwarders, database_url_for_processes().replace(direct, f"@127.0.0.1:{port}/")
    finally:
        forwarders.close()


def test_an_outcome_the_runner_could_not_record_waits_in_the_broker_until_the_database_is_back(
    cuttable_database: tuple[TcpForwarders, str], worker_queue: str, tmp_path: Any
):
    forwarders, url = cuttable_database
    name = f"cut-off-{os.getpid()}@{socket.gethostname()}"
    env = {"DATABASE_URL": url, "FLOWKIT_CELERY_QUEUE": worker_queue}
    worker = start_worker(name, tmp_path / "worker.log", env)
    try:
        run = single_node_run(node_code("import time\ntime.sleep(3)\nvalue = 'kept'"), "outage", timeout_s=60)
        wait_for_node(run, "n", ("running",))
        forwarders.cut()
        # Only this worker's database is cut; in a whole outage no peer could see it
        # either. Out of the peers' sight (the test process's own worker would take it
        # for lost after its silence and fail the node), as in that case: its worker
        # status is gone, and its attempt's signs of life go on until the database is
        # back. From then on the outcome must be recorded before the peers' watchdog
        # finds the attempt silent for FLOWKIT_ATTEMPT_SILENT_AFTER_S.
        WorkerStatus.objects.filter(name=name).delete()
        with attempt_kept_alive(run, "n"):
            time.sleep(OUTAGE_S)
            state = nodes_of(run)["n"].state
            assert state == "running", "no outcome can be recorded while the database is away"
        forwarders.restore()

        run = wait_for_run(run, wait_s=90)
        assert run.state == "succeeded", nodes_of(run)["n"].error
        assert nodes_of(run)["n"].outputs == {"value": "kept"}
        assert NodeExecution.objects.get(run=run, node_id="n").outcome == "succeeded", "its timeline ends"
        log = worker.log()
        assert "the database stayed unreachable; its outcome waits in the broker" in log
        assert "node_runner.record_node_outcome" in log
    finally:
        forwarders.restore()
        stop_worker(worker)
