"""Persistence of the FCB: load it from a locked run, save what one step changed.

The pure core (``fcb``) returns copy-on-write records, so a record that is not the
same object as before is exactly one that changed; only those rows are written.
"""

from __future__ import annotations

import functools
import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from control_unit.dispatcher import current as current_dispatcher
from control_unit.fcb import TERMINAL_NODE_STATES, TERMINAL_RUN_STATES, Fcb, NodeRecord, Step, Transition
from control_unit.graph import Graph, parse_graph
from control_unit.models import NodeRun, PipelineVersion, Run, RunTransition
from control_unit.routing import queue_for
from control_unit.run_states import published_after_commit
from trace_monitor import recorder as trace_recorder
from trace_monitor.kinds import transition_kind
from trace_monitor.previews import cap_ports

log = logging.getLogger(__name__)

NODE_FIELDS = (
    "state", "attempt", "dispatched", "inputs", "outputs", "next_nodes",
    "status_message", "error", "reused", "reason",
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _graph_of_version(version_id: int) -> Graph:
    # Versions are immutable, so their parsed graph can be cached for the process.
    document = PipelineVersion.objects.values_list("document", flat=True).get(id=version_id)
    return parse_graph(document)


def graph_of_version(version_id: int) -> Graph:
    return _graph_of_version(version_id)


def graph_of(run: Run) -> Graph:
    return _graph_of_version(run.version_id)


def lock_run(run_id: Any) -> Run:
    """The run row, locked until the surrounding transaction ends.

    FOR NO KEY UPDATE, not FOR UPDATE: it serialises the run's events all the same,
    but leaves alone the KEY SHARE locks that inserting rows which reference the run
    take (trace events, samples). A runner writing its log batch holds the run's trace
    counter and then checks its foreign key; with FOR UPDATE here, an event holding
    the run and waiting for that counter would deadlock with it.
    """
    return Run.objects.select_for_update(no_key=True).get(id=run_id)


def load_fcb(run: Run) -> tuple[Fcb, dict[str, NodeRun]]:
    rows = {row.node_id: row for row in NodeRun.objects.filter(run=run)}
    nodes = {
        node_id: NodeRecord(
            state=row.state,
            attempt=row.attempt,
            dispatched=row.dispatched,
            inputs=row.inputs,
            outputs=row.outputs,
            next_nodes=tuple(row.next_nodes) if row.next_nodes is not None else None,
            status_message=row.status_message,
            error=row.error,
            reused=row.reused,
            reason=row.reason,
        )
        for node_id, row in rows.items()
    }
    forced = frozenset({run.rerun_from}) if run.rerun_from else frozenset()
    return Fcb(run_state=run.state, run_input=run.input, nodes=nodes, forced=forced, reason=run.reason), rows


def create_rows(run: Run, fcb: Fcb) -> None:
    NodeRun.objects.bulk_create(
        NodeRun(run=run, node_id=node_id, **_row_values(record)) for node_id, record in fcb.nodes.items()
    )


def save_step(run: Run, before: Fcb, step: Step, rows: dict[str, NodeRun]) -> None:
    """Write what ``step`` changed and queue its dispatches for after the commit."""
    now = timezone.now()
    after = step.fcb
    changed: list[NodeRun] = []
    due = {d.node_id: now + timedelta(seconds=d.delay_s) for d in step.dispatches}
    for node_id, record in after.nodes.items():
        if before.nodes.get(node_id) is record and node_id not in due:
            continue
        row = rows[node_id]
        previous = row.state
        for name, value in _row_values(record).items():
            setattr(row, name, value)
        if record.state == "running" and previous != "paused":
            row.started_at = now
        if record.state in TERMINAL_NODE_STATES and row.finished_at is None:
            row.finished_at = now
        if node_id in due:
            row.due_at = due[node_id]
        changed.append(row)
    if changed:
        NodeRun.objects.bulk_update(changed, [*NODE_FIELDS, "started_at", "finished_at", "due_at"])
    if after.run_state != run.state:
        # The processes running its nodes learn it at once (pause, resume, cancel, end).
        published_after_commit(run.id, after.run_state)
    if after.run_state != run.state or after.reason != run.reason:
        run.state, run.reason = after.run_state, after.reason
        if run.state == "running" and run.started_at is None:
            run.started_at = now
        if run.state in TERMINAL_RUN_STATES:
            run.finished_at = now
        run.save(update_fields=["state", "reason", "started_at", "finished_at"])
    created = RunTransition.objects.bulk_create(
        RunTransition(
            run=run,
            node_id=t.node_id or "",
            source=t.source,
            target=t.target,
            attempt=t.attempt,
            reason=t.reason,
        )
        for t in step.transitions
    )
    if created:
        trace_recorder.record(run.id, [_transition_draft(t, after, now) for t in step.transitions])
    graph = graph_of(run)
    dispatches = [(d.node_id, d.attempt, d.delay_s, graph.nodes[d.node_id].requires) for d in step.dispatches]
    if dispatches:
        run_id = str(run.id)
        transaction.on_commit(lambda: _send(run_id, dispatches))


def _transition_draft(transition: Transition, fcb: Fcb, at: datetime) -> trace_recorder.EventDraft:
    """The trace event of one transition; a node's final state carries what it
    produced (capped: the whole values stay on the node's row)."""
    data: dict[str, Any] = {"source": transition.source, "target": transition.target}
    if transition.reason:
        data["reason"] = transition.reason
    record = fcb.nodes.get(transition.node_id) if transition.node_id else None
    if record is not None and transition.target == "succeeded":
        outputs, truncated = cap_ports(record.outputs, settings.FLOWKIT_TRACE_PREVIEW_BYTES)
        data.update(outputs=outputs, next_nodes=list(record.next_nodes or ()), reused=record.reused)
        data["status_message"] = record.status_message
        if truncated:
            data["truncated"] = {"outputs": truncated}
    elif record is not None and transition.target == "failed":
        data["error"] = record.error
    return trace_recorder.EventDraft(
        kind=transition_kind(transition.node_id, transition.source, transition.target),
        node_id=transition.node_id or "",
        attempt=transition.attempt,
        data=data,
        at=at,
    )


def _send(run_id: str, dispatches: list[tuple[str, int, float, tuple[str, ...]]]) -> None:
    from control_unit.worker_wait import note_waiting_nodes

    base = settings.FLOWKIT_CELERY_QUEUE
    dispatcher = current_dispatcher()
    for node_id, attempt, delay_s, requires in dispatches:
        try:
            # The queue carries the node's capability wishes: only workers that offer
            # all of them consume it (control_unit.routing).
            dispatcher.send_node(run_id, node_id, attempt, delay_s=delay_s, queue=queue_for(base, requires))
        except Exception:
            # The broker is unreachable (restarting, say). The node stays queued and
            # the dispatch watchdog re-sends it once it is overdue; the run's state
            # change is already committed and must not be undone by this.
            log.warning(
                "could not send node %s of run %s; it will be re-sent", node_id, run_id, exc_info=True
            )
    waiting = [
        (run_id, node_id, attempt, requires) for node_id, attempt, _, requires in dispatches if requires
    ]
    if waiting:
        try:
            note_waiting_nodes(waiting)
        except Exception:
            # Only the explanation is missing; the heartbeat's next check adds it.
            log.warning("could not check the workers for run %s", run_id, exc_info=True)


def send_dispatches(dispatches: list[tuple[str, str, int]]) -> None:
    """Send (run, node, attempt) dispatches now, grouped by run."""
    by_run: dict[str, list[tuple[str, int]]] = {}
    for run_id, node_id, attempt in dispatches:
        by_run.setdefault(run_id, []).append((node_id, attempt))
    versions = {
        str(run_id): version_id
        for run_id, version_id in Run.objects.filter(id__in=list(by_run)).values_list("id", "version_id")
    }
    for run_id, items in by_run.items():
        version_id = versions.get(run_id)
        if version_id is None:
            continue
        graph = _graph_of_version(version_id)
        _send(run_id, [(node_id, attempt, 0.0, graph.nodes[node_id].requires) for node_id, attempt in items])


def _row_values(record: NodeRecord) -> dict[str, Any]:
    return {
        "state": record.state,
        "attempt": record.attempt,
        "dispatched": record.dispatched,
        "inputs": dict(record.inputs) if record.inputs is not None else None,
        "outputs": dict(record.outputs) if record.outputs is not None else None,
        "next_nodes": list(record.next_nodes) if record.next_nodes is not None else None,
        "status_message": record.status_message,
        "error": dict(record.error) if record.error is not None else None,
        "reused": record.reused,
        "reason": record.reason,
    }
