"""Actions that change control-unit data. Each owns its transaction.

State changes are conditional updates: the row moves only from a state that the
transition table allows, so a redelivered task and a live one cannot both win.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from control_unit import audit, dispatcher
from control_unit.limits import NodeLimits
from control_unit.models import NodeTestRun
from control_unit.models import NodeTestRunState as S
from control_unit.transitions import InvalidTransition, sources_of


@transaction.atomic
def do_start_node_test_run(
    *,
    code: str,
    inputs: dict[str, Any],
    limits: dict[str, Any] | None = None,
    label: str = "",
    user: Any = None,
) -> NodeTestRun:
    NodeLimits.from_overrides(limits)  # refuse bad limits before anything is stored
    test_run = NodeTestRun.objects.create(
        code=code, inputs=inputs, limits=limits or {}, label=label, created_by=user
    )
    # A node test executes arbitrary code, as a run does: it is audited like one.
    audit.record("node_test.start", user, test_run.id, label=label)
    transaction.on_commit(lambda: dispatcher.current().send_node_test(str(test_run.id)))
    return test_run


def do_claim_node_test_run(test_run_id: str, worker: str) -> bool:
    """Move a queued test run to running; False if someone else already has it."""
    claimed = NodeTestRun.objects.filter(id=test_run_id, state__in=sources_of(S.RUNNING)).update(
        state=S.RUNNING, worker=worker, started_at=timezone.now()
    )
    return claimed == 1


RESULT_FIELDS = (
    "next_nodes", "outputs", "status_message", "error", "logs", "dropped_log_lines", "container_id",
)  # fmt: skip


def do_cancel_node_test_run(test_run_id: Any, user: Any = None) -> NodeTestRun:
    """Cancel a queued or running test run; its runner stops the execution at its next
    look at the state (within a fraction of a second) and its outcome is discarded."""
    with transaction.atomic():
        cancelled = NodeTestRun.objects.filter(id=test_run_id, state__in=sources_of(S.CANCELLED)).update(
            state=S.CANCELLED,
            finished_at=timezone.now(),
            error={"error_type": "NodeCancelled", "message": "the node test was cancelled"},
        )
        test_run = NodeTestRun.objects.get(id=test_run_id)
        if not cancelled:
            raise InvalidTransition(f"node test run {test_run_id}", test_run.state, S.CANCELLED)
        audit.record("node_test.cancel", user, test_run.id, label=test_run.label)
    return test_run


def do_finish_node_test_run(test_run_id: str, *, result: dict[str, Any]) -> None:
    target = S.FAILED if result.get("error") else S.SUCCEEDED
    stored = {name: result[name] for name in RESULT_FIELDS if name in result}
    updated = NodeTestRun.objects.filter(id=test_run_id, state__in=sources_of(target)).update(
        state=target, finished_at=timezone.now(), **stored
    )
    if updated != 1:
        current = NodeTestRun.objects.filter(id=test_run_id).values_list("state", flat=True).first()
        raise InvalidTransition(f"node test run {test_run_id}", str(current), target)


def do_fail_overdue_node_tests(grace_s: float) -> list[str]:
    """Fail the node test runs still running ``grace_s`` past their node's timeout:
    their runner is gone (its worker was lost), and nothing else would end them."""
    now = timezone.now()
    failed = []
    for test_run_id, started_at, limits in NodeTestRun.objects.filter(state=S.RUNNING).values_list(
        "id", "started_at", "limits"
    )[:500]:
        try:
            timeout_s = NodeLimits.from_overrides(limits).timeout_s
        except ValueError:
            timeout_s = NodeLimits.defaults().timeout_s
        if started_at is not None and now - started_at < timedelta(seconds=timeout_s + grace_s):
            continue
        error = {
            "error_type": "RunnerLost",
            "message": f"the node test's runner stopped (still running {grace_s:g} s past its timeout)",
        }
        updated = NodeTestRun.objects.filter(id=test_run_id, state=S.RUNNING).update(
            state=S.FAILED, finished_at=now, error=error
        )
        if updated:
            failed.append(str(test_run_id))
    return failed
