"""Persistence of the FCB: read what an event of a locked run asks for, write what
it changed.

The run's row holds the FCB's counters; its nodes are read as the pure core
(``fcb``) asks for them (StoredNodes), without their inputs and outputs, and an
event's step lists the records it changed: only those rows, and of them only the
columns that changed, are written.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Collection, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from control_unit.dispatcher import current as current_dispatcher
from control_unit.fcb import (
    PAUSED,
    RUNNING,
    TERMINAL_NODE_STATES,
    TERMINAL_RUN_STATES,
    Fcb,
    NodeRecord,
    Nodes,
    Step,
    Transition,
)
from control_unit.graph import Graph, parse_graph
from control_unit.models import NodeRun, PipelineVersion, Run, RunTransition
from control_unit.node_inputs import refs_from_row, refs_to_row
from control_unit.routing import queue_for
from control_unit.run_states import published_after_commit
from trace_monitor import recorder as trace_recorder
from trace_monitor.kinds import transition_kind
from trace_monitor.previews import cap_ports

log = logging.getLogger(__name__)

NODE_FIELDS = (
    "state", "attempt", "dispatched", "inputs", "input_refs", "outputs", "next_nodes",
    "status_message", "error", "reused", "reason", "waiting", "infra_retries",
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


# What the core reads of a node. Its inputs, outputs and logs (up to megabytes) stay in
# the database: the core only refers to them (fcb.InputRef).
RECORD_COLUMNS = (
    "node_id", "state", "attempt", "dispatched", "next_nodes",
    "status_message", "error", "reused", "reason", "waiting", "infra_retries",
)  # fmt: skip


class StoredNodes(Nodes):
    """A run's node records, read from the database as an event asks for them (under
    the run's lock, so none of them changes meanwhile). Its inputs and outputs read as
    None unless the event sets them."""

    def __init__(self, run: Run, graph: Graph, records: Mapping[str, NodeRecord] | None = None) -> None:
        super().__init__(records or {})
        self._run = run
        self._graph = graph

    def __getitem__(self, node_id: str) -> NodeRecord:
        if node_id not in self._records:
            self.fetch([node_id])
        return self._records[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._graph.nodes)

    def __len__(self) -> int:
        return len(self._graph.nodes)

    def fetch(self, node_ids: Collection[str]) -> None:
        missing = [node_id for node_id in node_ids if node_id not in self._records]
        if missing:
            self._read(NodeRun.objects.filter(run=self._run, node_id__in=missing))

    def in_states(self, states: Collection[str]) -> list[str]:
        return self._read(NodeRun.objects.filter(run=self._run, state__in=list(states)))

    def changed(self, changes: Mapping[str, NodeRecord]) -> Nodes:
        return StoredNodes(self._run, self._graph, {**self._records, **changes})

    def read(self, node_id: str) -> NodeRecord:
        """The record as it was read, before the event changed it."""
        return self._records[node_id]

    def _read(self, rows: QuerySet[NodeRun]) -> list[str]:
        found = []
        for values in rows.values_list(*RECORD_COLUMNS):
            fields = dict(zip(RECORD_COLUMNS, values, strict=True))
            node_id = fields.pop("node_id")
            next_nodes = fields.pop("next_nodes")
            found.append(node_id)
            if node_id not in self._records:
                self._records[node_id] = NodeRecord(
                    next_nodes=tuple(next_nodes) if next_nodes is not None else None, **fields
                )
        return found


def load_fcb(run: Run) -> tuple[Fcb, StoredNodes]:
    """The FCB of a locked run, reading its nodes only as an event asks for them."""
    nodes = StoredNodes(run, graph_of(run))
    return _fcb(run, nodes), nodes


def load_whole_fcb(run: Run) -> Fcb:
    """The FCB with every node's record, inputs and outputs included (to rerun from)."""
    records = {}
    for row in NodeRun.objects.filter(run=run):
        values = {name: getattr(row, name) for name in NODE_FIELDS}
        next_nodes = values.pop("next_nodes")
        values["input_refs"] = refs_from_row(values["input_refs"])
        records[row.node_id] = NodeRecord(
            next_nodes=tuple(next_nodes) if next_nodes is not None else None, **values
        )
    return _fcb(run, Nodes(records))


def _fcb(run: Run, nodes: Nodes) -> Fcb:
    forced = frozenset({run.rerun_from}) if run.rerun_from else frozenset()
    return Fcb(
        run_state=run.state,
        run_input=run.input,
        nodes=nodes,
        forced=forced,
        reason=run.reason,
        unfinished=run.unfinished,
        failed=run.failed_node,
    )


def create_rows(run: Run, fcb: Fcb) -> StoredNodes:
    """Store a new run's FCB; its nodes as the next event reads them."""
    NodeRun.objects.bulk_create(
        NodeRun(run=run, node_id=node_id, **_row_values(record)) for node_id, record in fcb.nodes.items()
    )
    run.unfinished, run.failed_node = fcb.unfinished, fcb.failed
    run.save(update_fields=["unfinished", "failed_node"])
    return StoredNodes(run, graph_of(run), fcb.nodes)


# Columns whose values are each node's own: a node changing one is written alone.
OWN_VALUES = ("inputs", "input_refs", "outputs", "error", "next_nodes")


def save_step(
    run: Run, step: Step, nodes: StoredNodes, columns: Mapping[str, Mapping[str, Any]] | None = None
) -> None:
    """Write what ``step`` changed and queue its dispatches for after the commit.

    Only the columns that changed are written, with ``columns`` of a changed node
    (what the event adds outside the FCB: the worker of a claim, the logs of an
    outcome). Nodes that changed alike (a cancel, a pause) are written by one UPDATE;
    a node with a value of its own (inputs, outputs) by one of its own."""
    columns = columns or {}
    now = timezone.now()
    after = step.fcb
    due = {d.node_id: now + timedelta(seconds=d.delay_s) for d in step.dispatches}
    alike: dict[tuple[tuple[str, Any], ...], list[str]] = {}
    for node_id, record in step.changed.items():
        before = nodes.read(node_id)
        old = _row_values(before)
        values = {name: value for name, value in _row_values(record).items() if value != old[name]}
        if record.state != before.state:
            if record.state == RUNNING and before.state != PAUSED:
                values["started_at"] = now
            if record.state in TERMINAL_NODE_STATES:
                values["finished_at"] = now
        if node_id in due:
            values["due_at"] = due[node_id]
        values.update(columns.get(node_id, {}))
        if not values:
            continue
        if node_id in columns or any(name in values for name in OWN_VALUES):
            NodeRun.objects.filter(run=run, node_id=node_id).update(**values)
        else:
            alike.setdefault(tuple(sorted(values.items())), []).append(node_id)
    for shared, node_ids in alike.items():
        NodeRun.objects.filter(run=run, node_id__in=node_ids).update(**dict(shared))
    _save_run(run, after, now)
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
        trace_recorder.record(run.id, [transition_draft(t, after, now) for t in step.transitions])
    graph = graph_of(run)
    dispatches = [(d.node_id, d.attempt, d.delay_s, graph.nodes[d.node_id].requires) for d in step.dispatches]
    if dispatches:
        run_id = str(run.id)
        transaction.on_commit(lambda: _send(run_id, dispatches))


def _save_run(run: Run, after: Fcb, now: datetime) -> None:
    changed = []
    if after.run_state != run.state:
        # The processes running its nodes learn it at once (pause, resume, cancel, end).
        published_after_commit(run.id, after.run_state)
        run.state = after.run_state
        changed.append("state")
        if run.state == RUNNING and run.started_at is None:
            run.started_at = now
            changed.append("started_at")
        if run.state in TERMINAL_RUN_STATES:
            run.finished_at = now
            changed.append("finished_at")
    counted = (("reason", after.reason), ("unfinished", after.unfinished), ("failed_node", after.failed))
    for field, value in counted:
        if getattr(run, field) != value:
            setattr(run, field, value)
            changed.append(field)
    if changed:
        run.save(update_fields=changed)


def transition_draft(transition: Transition, fcb: Fcb | None, at: datetime) -> trace_recorder.EventDraft:
    """The trace event of one transition; a node's final state carries what it
    produced (capped: the whole values stay on the node's row), read from ``fcb``."""
    data: dict[str, Any] = {"source": transition.source, "target": transition.target}
    if transition.reason:
        data["reason"] = transition.reason
    record = fcb.nodes.get(transition.node_id) if fcb is not None and transition.node_id else None
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
    for run_id, items in _dispatches_by_run(dispatches):
        _send(run_id, items)


def dispatch_queues(dispatches: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], str]:
    """The queue each (run, node, attempt) dispatch is sent to."""
    base = settings.FLOWKIT_CELERY_QUEUE
    return {
        (run_id, node_id, attempt): queue_for(base, requires)
        for run_id, items in _dispatches_by_run(dispatches)
        for node_id, attempt, _, requires in items
    }


def _dispatches_by_run(
    dispatches: list[tuple[str, str, int]],
) -> Iterator[tuple[str, list[tuple[str, int, float, tuple[str, ...]]]]]:
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
        yield run_id, [(node_id, attempt, 0.0, graph.nodes[node_id].requires) for node_id, attempt in items]


def _row_values(record: NodeRecord) -> dict[str, Any]:
    return {
        "state": record.state,
        "attempt": record.attempt,
        "dispatched": record.dispatched,
        "inputs": dict(record.inputs) if record.inputs is not None else None,
        "input_refs": refs_to_row(record.input_refs),
        "outputs": dict(record.outputs) if record.outputs is not None else None,
        "next_nodes": list(record.next_nodes) if record.next_nodes is not None else None,
        "status_message": record.status_message,
        "error": dict(record.error) if record.error is not None else None,
        "reused": record.reused,
        "reason": record.reason,
        "waiting": record.waiting,
        "infra_retries": record.infra_retries,
    }
