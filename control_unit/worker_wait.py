"""Nodes waiting for a worker that can take them.

A node that requires capabilities goes to its capability queue (control_unit.routing),
where Celery keeps it until a worker offering them consumes that queue: the node
starts as soon as such a worker comes up, with nothing to re-send. While no online
worker offers them, the node says so, on its row (``reason``, shown by the API and
the monitor) and in its trace (a ``waiting`` event), instead of sitting silently in
"queued". This is checked when the node is sent and again on every worker heartbeat,
so a worker that is drained or lost later is noticed too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from control_unit.fcb_store import graph_of_version, lock_run
from control_unit.models import NodeRun
from control_unit.routing import missing_capability_reason
from trace_monitor import recorder
from trace_monitor.kinds import WAITING
from trace_monitor.models import WorkerStatus

log = logging.getLogger(__name__)

# The periodic check looks at this many queued nodes at most per heartbeat.
CHECKED_PER_BEAT = 500

WaitingNode = tuple[str, str, int, tuple[str, ...]]  # run, node, attempt, requires


def online_capabilities() -> list[tuple[str, ...]]:
    """The capability sets of the workers that take new work now: online (not draining,
    stopped or lost) and heard from recently."""
    fresh = timezone.now() - timedelta(seconds=settings.FLOWKIT_WORKER_LOST_AFTER_S)
    rows = WorkerStatus.objects.filter(state="online", last_seen__gte=fresh)
    return [tuple(capabilities or ()) for capabilities in rows.values_list("capabilities", flat=True)]


def note_waiting_nodes(nodes: Iterable[WaitingNode]) -> int:
    """Give each still-queued node that no online worker can take its reason, once
    (a trace event only when the reason changes). Returns how many were noted."""
    online = online_capabilities()
    noted = 0
    for run_id, node_id, attempt, requires in nodes:
        reason = missing_capability_reason(requires, online)
        if reason is None:
            continue
        with transaction.atomic():
            # The run's lock orders this after any claim of the node in progress.
            lock_run(run_id)
            changed = (
                NodeRun.objects.filter(run_id=run_id, node_id=node_id, attempt=attempt, state="queued")
                .exclude(reason=reason)
                .update(reason=reason)
            )
            if changed:
                data: dict[str, Any] = {"reason": reason, "requires": list(requires)}
                recorder.record(
                    run_id, [recorder.EventDraft(kind=WAITING, node_id=node_id, attempt=attempt, data=data)]
                )
                noted += 1
    if noted:
        log.info("%d node(s) wait for a worker with the capabilities they require", noted)
    return noted


def do_note_waiting_nodes() -> int:
    """The periodic check: every queued, sent node of a running run that requires
    capabilities no online worker offers."""
    queued = NodeRun.objects.filter(state="queued", dispatched=True, run__state="running").values_list(
        "run_id", "node_id", "attempt", "run__version_id"
    )
    waiting: list[WaitingNode] = []
    for run_id, node_id, attempt, version_id in queued.order_by("id")[:CHECKED_PER_BEAT]:
        requires = graph_of_version(version_id).nodes[node_id].requires
        if requires:
            waiting.append((str(run_id), node_id, attempt, requires))
    return note_waiting_nodes(waiting) if waiting else 0
