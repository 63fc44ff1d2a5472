"""/api/workers/{name}/drain: an admin drains a worker (node_runner.drain)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Status

from node_runner.drain import DrainError, UnknownWorker, do_drain_worker
from web_ui.api.errors import ApiError
from web_ui.api.refusals import refusals_audited
from web_ui.api.schemas import error_responses
from web_ui.roles import ADMIN, require_role

router = Router(tags=["workers"])


@router.post("/{name}/drain", response={202: dict[str, Any], **error_responses(404, 409)})
def drain(request: HttpRequest, name: str) -> Status:
    """Stop the worker taking nodes; it finishes those it runs, then exits. Its state
    on /api/workers shows draining, then stopped."""
    with refusals_audited(request, "worker.drain", name):
        require_role(request.user, ADMIN)
        try:
            order = do_drain_worker(name, user=request.user, via="api")
        except DrainError as exc:
            status = 404 if isinstance(exc, UnknownWorker) else 409
            raise ApiError(status, "cannot_drain", str(exc)) from None
    return Status(202, {"worker": order.worker, "state": "draining", "queues": list(order.queues)})
