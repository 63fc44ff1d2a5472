"""Celery tasks: take ids, load rows, call one action, log."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from celery import shared_task

from control_unit.actions import do_claim_node_test_run, do_finish_node_test_run
from control_unit.models import NodeTestRun, Run
from control_unit.run_actions import do_claim_node, do_record_node_outcome
from node_runner.limits import LimitError, NodeLimits
from node_runner.npu_execution import NpuOutcome, NpuUnavailable, execute_in_npu
from node_runner.wire import NpuJob

log = logging.getLogger(__name__)


@shared_task(name="node_runner.run_node_test")
def run_node_test(test_run_id: str) -> None:
    if not do_claim_node_test_run(test_run_id, worker=socket.gethostname()):
        log.info("node test run %s is already taken or finished; skipping", test_run_id)
        return
    test_run = NodeTestRun.objects.get(id=test_run_id)
    job = NpuJob(
        node_id=test_run.label or "node",
        label=test_run.label,
        code=test_run.code,
        inputs=test_run.inputs,
        secrets={},
    )
    labels = {"flowkit.test_run": test_run_id}
    try:
        outcome = execute_in_npu(job, NodeLimits.from_overrides(test_run.limits), labels)
    except NpuUnavailable as exc:
        do_finish_node_test_run(
            test_run_id, result={"error": {"error_type": "NpuUnavailable", "message": str(exc)}}
        )
        return
    except Exception as exc:
        # Never leave the test run in "running": record why, then let Celery log it.
        do_finish_node_test_run(
            test_run_id,
            result={"error": {"error_type": "RunnerError", "message": f"the node runner failed: {exc!r}"}},
        )
        raise
    do_finish_node_test_run(test_run_id, result=outcome_record(outcome))
    log.info("node test run %s finished: %s", test_run_id, "failed" if outcome.error else "succeeded")


def run_control(run_id: str) -> Callable[[], str]:
    """What the run wants of its running nodes, read from the run's state."""

    def wanted() -> str:
        state = Run.objects.filter(id=run_id).values_list("state", flat=True).first()
        if state == "paused":
            return "pause"
        if state in (None, "cancelled", "failed", "succeeded"):
            return "cancel"
        return "run"

    return wanted


@shared_task(name="node_runner.run_node")
def run_node(run_id: str, node_id: str, attempt: int) -> None:
    """Execute one attempt of one node of a run. Idempotent: a redelivered or stale
    task finds the attempt already taken or finished and does nothing."""
    claimed = do_claim_node(run_id, node_id, attempt, worker=socket.gethostname())
    if claimed is None:
        log.info("run %s node %s attempt %s: nothing to do", run_id, node_id, attempt)
        return
    job = NpuJob(
        node_id=node_id,
        label=claimed.label,
        code=claimed.code,
        inputs=claimed.inputs,
        secrets={},
        attempt=attempt,
    )
    labels = {"flowkit.run": run_id, "flowkit.node": node_id, "flowkit.attempt": str(attempt)}
    try:
        limits = NodeLimits.from_overrides(claimed.limits)
        outcome = execute_in_npu(job, limits, labels, control=run_control(run_id))
        result = outcome_record(outcome)
    except (NpuUnavailable, LimitError) as exc:
        result = {"error": {"error_type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        do_record_node_outcome(
            run_id, node_id, attempt,
            {"error": {"error_type": "RunnerError", "message": f"the node runner failed: {exc!r}"}},
        )  # fmt: skip
        raise
    applied = do_record_node_outcome(run_id, node_id, attempt, result)
    verdict = "failed" if result.get("error") else "succeeded"
    log.info(
        "run %s node %s attempt %s: %s%s", run_id, node_id, attempt, verdict, "" if applied else " (ignored)"
    )


def outcome_record(outcome: NpuOutcome) -> dict[str, Any]:
    return {
        "next_nodes": outcome.next_nodes,
        "outputs": outcome.outputs,
        "status_message": outcome.status_message,
        "error": outcome.error.as_dict() if outcome.error else None,
        "logs": outcome.logs,
        "dropped_log_lines": outcome.dropped_log_lines,
        "container_id": outcome.container_id,
    }
