"""Celery tasks: take ids, load rows, call one action, log."""

from __future__ import annotations

import logging
import socket

from celery import shared_task

from control_unit.actions import do_claim_node_test_run, do_finish_node_test_run
from control_unit.models import NodeTestRun
from node_runner.limits import NodeLimits
from node_runner.npu_execution import NpuUnavailable, execute_in_npu
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
    do_finish_node_test_run(
        test_run_id,
        result={
            "next_nodes": outcome.next_nodes,
            "outputs": outcome.outputs,
            "status_message": outcome.status_message,
            "error": outcome.error.as_dict() if outcome.error else None,
            "logs": outcome.logs,
            "dropped_log_lines": outcome.dropped_log_lines,
            "container_id": outcome.container_id,
        },
    )
    log.info("node test run %s finished: %s", test_run_id, "failed" if outcome.error else "succeeded")
