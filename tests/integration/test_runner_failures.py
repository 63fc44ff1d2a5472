"""No attempt left running: a runner that fails after claiming an attempt ends it failed
with RunnerError, at once (the runner's own task, node_runner.tasks.run_node, executed
here with the real database and Docker engine, one of its steps made to fail; the
outcome names the exception's type, never its text, which may hold a value of the
node's); and an attempt whose runner stopped stamping it (its process died, or its
task is stuck past the node's timeout plus a grace) is failed by the watchdog."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import DataError, OperationalError, connection
from django.utils import timezone

from control_unit import run_actions
from control_unit.actions import do_claim_node_test_run, do_fail_overdue_node_tests, do_start_node_test_run
from control_unit.models import NodeRun, NodeTestRun
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import (
    do_cancel_run,
    do_claim_node,
    do_end_orphaned_executions,
    do_fail_silent_attempts,
    do_start_run,
)
from node_runner import tasks
from node_runner.attempt_stamps import AttemptClock, stamps
from tests.integration.conftest import node_code, nodes_of
from trace_monitor.models import NodeExecution
from trace_monitor.node_trace import NodeTrace

pytestmark = pytest.mark.django_db(transaction=True)

LEAK = "a value that must not leave the runner"


def started_run(no_broker):
    node = {"id": "n", "code": node_code("value = 41 + 1"), "outputs": ["value"]}
    document = {"schema_version": 1, "nodes": [node]}
    run = do_start_run(do_create_pipeline("runner failure", document).latest_version())
    assert no_broker.nodes[-1] == (str(run.id), "n", 1)
    return run


def test_an_exception_after_the_claim_fails_the_node_with_runner_error(no_broker, docker_engine, monkeypatch):
    run = started_run(no_broker)

    def broken_mask(self, value):
        raise RuntimeError(LEAK)

    monkeypatch.setattr("secret_manager.masking.Masker.mask", broken_mask)
    tasks.run_node.run(str(run.id), "n", 1)

    run.refresh_from_db()
    assert run.state == "failed"
    error = nodes_of(run)["n"].error
    assert error["error_type"] == "RunnerError"
    assert error["message"] == (
        "the node runner could not run the node: RuntimeError (details in the worker's log)"
    )
    execution = NodeExecution.objects.get(run=run, node_id="n", attempt=1)
    assert (execution.outcome, execution.error_type) == ("failed", "RunnerError")


def test_an_outcome_the_database_refuses_fails_the_node_with_runner_error(
    no_broker, docker_engine, monkeypatch
):
    run = started_run(no_broker)
    record = tasks.do_record_node_outcome
    refused = []

    def refusing(run_id, node_id, attempt, outcome):
        if not outcome.get("error"):
            refused.append(outcome["outputs"])
            raise DataError(LEAK)
        return record(run_id, node_id, attempt, outcome)

    monkeypatch.setattr(tasks, "do_record_node_outcome", refusing)
    tasks.run_node.run(str(run.id), "n", 1)

    assert refused == [{"value": 42}], "the node did not run, or its outcome was tried more than once"
    run.refresh_from_db()
    assert run.state == "failed"
    error = nodes_of(run)["n"].error
    assert error["error_type"] == "RunnerError"
    assert "DataError" in error["message"]
    assert LEAK not in str(error)


def test_the_watchdog_fails_an_attempt_whose_runner_went_silent_and_spares_a_live_one(no_broker):
    silent, live = started_run(no_broker), started_run(no_broker)
    for run in (silent, live):
        assert do_claim_node(run.id, "n", 1, worker="w@host") is not None
    # The silent one's runner stamped it last two minutes ago; the live one's just now.
    NodeRun.objects.filter(run=silent).update(alive_at=timezone.now() - timedelta(seconds=120))
    trace = NodeTrace(
        run_id=str(silent.id), pipeline_id=silent.pipeline_id, node_id="n", attempt=1, worker="w@host"
    )
    trace.started("c0ffee", "flowkit/npu", "runc")  # its execution shows running

    assert do_fail_silent_attempts(60) == [(str(silent.id), "n", 1)]

    silent.refresh_from_db()
    assert silent.state == "failed"
    assert nodes_of(silent)["n"].error == {
        "error_type": "RunnerLost",
        "message": "the runner of this attempt on worker w@host stopped (no sign of it for 60 s)",
    }
    execution = NodeExecution.objects.get(run=silent, node_id="n", attempt=1)
    assert (execution.outcome, execution.error_type) == ("failed", "RunnerLost")
    assert nodes_of(live)["n"].state == "running"
    assert do_fail_silent_attempts(60) == []


def test_a_runner_stuck_past_its_deadline_stops_stamping_and_the_watchdog_fails_its_attempt(
    no_broker, docker_engine, monkeypatch, settings
):
    run = started_run(no_broker)
    settings.FLOWKIT_ATTEMPT_GRACE_S = 0.5  # after the node ran, half a second to store its outcome
    stuck, release = threading.Event(), threading.Event()
    record = tasks.do_record_node_outcome

    def stuck_recording(*arguments):
        stuck.set()
        release.wait(60)
        return record(*arguments)

    monkeypatch.setattr(tasks, "do_record_node_outcome", stuck_recording)

    def run_the_node() -> None:
        try:
            tasks.run_node.run(str(run.id), "n", 1)
        finally:
            connection.close()

    runner = threading.Thread(target=run_the_node)
    runner.start()
    try:
        assert stuck.wait(60), "the node never got to its outcome"
        assert stamps.stamp() == 1, "within its grace the attempt is stamped"
        time.sleep(1)
        assert stamps.stamp() == 0, "past it, no longer"
        NodeRun.objects.filter(run=run).update(alive_at=timezone.now() - timedelta(seconds=120))
        assert do_fail_silent_attempts(60) == [(str(run.id), "n", 1)]
    finally:
        release.set()
        runner.join(60)
    run.refresh_from_db()
    assert run.state == "failed"
    assert nodes_of(run)["n"].error["error_type"] == "RunnerLost", "the late outcome is ignored"


def test_an_attempts_clock_does_not_count_paused_time(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("node_runner.attempt_stamps.time.monotonic", lambda: now[0])
    clock = AttemptClock()
    assert not clock.overdue(), "no deadline before the execution starts"
    clock.due_in(10)
    now[0] += 5
    clock.paused(True)
    now[0] += 100
    assert not clock.overdue(), "a paused attempt is never overdue"
    clock.paused(False)
    now[0] += 4
    assert not clock.overdue(), "9 s of its 10 s counted"
    now[0] += 2
    assert clock.overdue()


def test_a_database_lost_while_a_claim_reads_its_node_leaves_the_attempt_unclaimed(no_broker, monkeypatch):
    # Everything the runner needs is read in the claim's transaction: a claim that fails
    # half-way leaves the attempt queued (and re-sent later), never claimed by a task
    # that cannot run it.
    run = started_run(no_broker)

    def gone(*arguments):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(run_actions, "inputs_of", gone)
    with pytest.raises(OperationalError):
        do_claim_node(run.id, "n", 1, worker="w@host")
    node = nodes_of(run)["n"]
    assert (node.state, node.worker) == ("queued", "")
    monkeypatch.undo()
    assert do_claim_node(run.id, "n", 1, worker="w@host") is not None


def test_an_execution_left_running_by_a_gone_runner_of_a_cancelled_run_is_closed(no_broker):
    cancelled, live = started_run(no_broker), started_run(no_broker)
    for run in (cancelled, live):
        assert do_claim_node(run.id, "n", 1, worker="w@host") is not None
        NodeTrace(
            run_id=str(run.id), pipeline_id=run.pipeline_id, node_id="n", attempt=1, worker="w@host"
        ).started("c0ffee", "flowkit/npu", "runc")
    do_cancel_run(cancelled.id)
    # Both started two minutes ago; no runner is left to close the cancelled one's.
    NodeExecution.objects.update(started_at=timezone.now() - timedelta(seconds=120))

    assert do_end_orphaned_executions(60) == 1

    closed = NodeExecution.objects.get(run=cancelled)
    assert (closed.outcome, closed.error_type) == ("cancelled", "NodeCancelled")
    assert closed.finished_at is not None
    assert NodeExecution.objects.get(run=live).outcome == "running"
    assert do_end_orphaned_executions(60) == 0


def test_a_node_test_whose_runner_is_gone_fails_past_its_timeout_and_grace(no_broker):
    limits = {"timeout_s": 10}
    stranded = do_start_node_test_run(code=node_code("value = 1"), inputs={}, limits=limits)
    running = do_start_node_test_run(code=node_code("value = 1"), inputs={}, limits=limits)
    for test_run, started in ((stranded, 10 + 30 + 1), (running, 10 + 30 - 5)):
        assert do_claim_node_test_run(str(test_run.id), worker="w@host")
        NodeTestRun.objects.filter(id=test_run.id).update(
            started_at=timezone.now() - timedelta(seconds=started)
        )

    assert do_fail_overdue_node_tests(30) == [str(stranded.id)]

    stranded.refresh_from_db()
    assert stranded.state == "failed"
    assert stranded.error["error_type"] == "RunnerLost"
    assert NodeTestRun.objects.get(id=running.id).state == "running"
