"""What a run looks like to a watcher: a snapshot, then its transitions in order.

Every transition row has an increasing id, which is the event's sequence number; a
client that reconnects with the last one it saw gets exactly what it missed. Node
payloads come from the stored rows, which the runner masked before storing, so no
secret value can reach a frame.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from control_unit.models import NodeRun, Run, RunTransition

NODE_FIELDS = NodeRun.VISIBLE_FIELDS


def group_name(run_id: UUID | str) -> str:
    return f"run-{run_id}"


def snapshot(run_id: UUID | str) -> dict[str, Any]:
    run = Run.objects.select_related("pipeline", "version").get(id=run_id)
    seq = RunTransition.objects.filter(run=run).order_by("-id").values_list("id", flat=True).first() or 0
    return {
        "type": "snapshot",
        "seq": seq,
        "run": {
            "id": str(run.id),
            "pipeline": run.pipeline.name,
            "version": run.version.number,
            "state": run.state,
            "reason": run.reason,
        },
        "nodes": [
            _jsonable(node) for node in NodeRun.objects.filter(run=run).order_by("id").values(*NODE_FIELDS)
        ],
    }


def events_after(run_id: UUID | str, seq: int, limit: int = 10_000) -> list[dict[str, Any]]:
    transitions = RunTransition.objects.filter(run_id=run_id, id__gt=seq).order_by("id")[:limit]
    return [transition_event(transition) for transition in transitions]


def transition_event(transition: RunTransition) -> dict[str, Any]:
    event = {
        "type": "transition",
        "seq": transition.id,
        "node_id": transition.node_id or None,
        "source": transition.source,
        "target": transition.target,
        "attempt": transition.attempt,
        "reason": transition.reason,
        "at": transition.at.isoformat(),
    }
    if transition.node_id and transition.target in ("succeeded", "failed"):
        node = (
            NodeRun.objects.filter(run_id=transition.run_id, node_id=transition.node_id)
            .values(*NODE_FIELDS)
            .first()
        )
        event["node"] = _jsonable(node) if node else None
    return event


def broadcast_transitions(run_id: str, transition_ids: list[int]) -> None:
    """Called after the transaction that stored the transitions commits."""
    layer = get_channel_layer()
    if layer is None or not transition_ids:
        return
    transitions = RunTransition.objects.filter(id__in=transition_ids).order_by("id")
    events = [transition_event(transition) for transition in transitions]
    async_to_sync(layer.group_send)(group_name(run_id), {"type": "run.events", "events": events})


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value.isoformat() if hasattr(value, "isoformat") else value for key, value in row.items()}
