"""What a run looks like to a watcher: a snapshot, then its events in sequence order.

The snapshot and its sequence number are read in one REPEATABLE READ transaction, so
the snapshot holds exactly the effects of events 1..seq; a client that asks for the
events after seq gets the rest with no gap and no duplicate. Everything here was
masked by the runner before it was stored, so no secret value can reach a frame.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction

from control_unit.fcb_store import graph_of
from control_unit.models import NodeRun, Run
from control_unit.node_inputs import node_rows
from trace_monitor.models import RunTrace, TraceEvent
from trace_monitor.previews import capped_node
from trace_monitor.recorder import event_frame

# A snapshot shows each node's state and results; its log lines are events.
SNAPSHOT_NODE_FIELDS = tuple(name for name in NodeRun.VISIBLE_FIELDS if name != "logs")
MAX_EVENTS_PER_READ = 1000


def snapshot(run_id: UUID | str) -> dict[str, Any]:
    with transaction.atomic():
        if not connection.savepoint_ids:
            # The outermost block: nothing ran in this transaction yet. (Inside a
            # caller's transaction its level applies and its snapshot is its own.)
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        run = Run.objects.select_related("pipeline", "version").get(id=run_id)
        seq = last_seq(run_id)
        nodes = node_rows(run, graph_of(run), (*SNAPSHOT_NODE_FIELDS, "worker"))
        limit = settings.FLOWKIT_TRACE_PREVIEW_BYTES
        return {
            "type": "snapshot",
            "seq": seq,
            "run": {
                "id": str(run.id),
                "pipeline_id": str(run.pipeline_id),
                "pipeline": run.pipeline.name,
                "version": run.version.number,
                "state": run.state,
                "reason": run.reason,
                "rerun_from": run.rerun_from or None,
                "created_at": run.created_at.isoformat(),
                "started_at": _iso(run.started_at),
                "finished_at": _iso(run.finished_at),
            },
            "nodes": [capped_node(_jsonable(node), limit) for node in nodes],
        }


def last_seq(run_id: UUID | str) -> int:
    return RunTrace.objects.filter(run_id=run_id).values_list("last_seq", flat=True).first() or 0


def events_after(
    run_id: UUID | str,
    seq: int,
    limit: int = MAX_EVENTS_PER_READ,
    *,
    kinds: list[str] | None = None,
    node_id: str | None = None,
) -> list[dict[str, Any]]:
    events = TraceEvent.objects.filter(run_id=run_id, seq__gt=seq)
    if kinds:
        events = events.filter(kind__in=kinds)
    if node_id:
        events = events.filter(node_id=node_id)
    return [event_frame(row) for row in events.order_by("seq")[: max(1, limit)]]


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}
