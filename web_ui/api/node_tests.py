"""/api/node-tests: run one node's code with given inputs in a fresh NPU, outside
any pipeline, read back its outcome, or cancel it. The editor's "Test node" button
uses it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Status

from control_unit.actions import do_cancel_node_test_run, do_start_node_test_run
from control_unit.models import NodeTestRun
from web_ui.api.refusals import refusals_audited
from web_ui.api.schemas import NodeTestIn, NodeTestOut, NodeTestStartedOut, error_responses
from web_ui.rate_limits import check_run_start_rate
from web_ui.roles import EDITOR, VIEWER, require_role

router = Router(tags=["node tests"])
ERRORS = error_responses(404, 409, 422, 429)


@router.post("", response={201: NodeTestStartedOut, **ERRORS})
def start_node_test(request: HttpRequest, payload: NodeTestIn) -> Status[Any]:
    # Editor, not viewer: a test run executes arbitrary code and may resolve secrets.
    require_role(request.user, EDITOR)
    check_run_start_rate(request)  # a node test is a run of one node: the same budget
    test_run = do_start_node_test_run(
        code=payload.code,
        inputs=payload.inputs,
        limits=payload.limits,
        label=payload.label,
        user=request.user,
    )
    return Status(201, {"id": test_run.id, "state": test_run.state})


@router.get("/{test_run_id}", response={200: NodeTestOut, **ERRORS})
def get_node_test(request: HttpRequest, test_run_id: UUID) -> NodeTestRun:
    require_role(request.user, VIEWER)
    return get_object_or_404(NodeTestRun, id=test_run_id)


@router.post("/{test_run_id}/cancel", response={200: NodeTestOut, **ERRORS})
def cancel_node_test(request: HttpRequest, test_run_id: UUID) -> NodeTestRun:
    """Stop a queued or running test run (409 once it has finished)."""
    with refusals_audited(request, "node_test.cancel", test_run_id):
        require_role(request.user, EDITOR)
        test_run = get_object_or_404(NodeTestRun, id=test_run_id)
        return do_cancel_node_test_run(test_run.id, user=request.user)
