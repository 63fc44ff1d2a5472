"""A worker's claim of (run, node, attempt): one conditional UPDATE.

The SQL form of ``fcb.claim``: the node moves queued -> running only if it is still
queued for that attempt and the run is running; in a paused run the attempt is held
(resume sends it again); otherwise the task has nothing to do. The run row is read
FOR SHARE: claims of one run's nodes do not wait for one another, while an event that
changes the run (an outcome, a pause, a cancel: FOR NO KEY UPDATE, fcb_store.lock_run)
waits for them and they for it, so no claim slips past a pause or a cancel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from control_unit.fcb import PAUSED, QUEUED, RUNNING, Transition
from control_unit.fcb_store import transition_draft
from control_unit.models import NodeRun, RunTransition
from trace_monitor import recorder as trace_recorder

_RUN = "SELECT state, pipeline_id, version_id FROM control_unit_run WHERE id = %s FOR SHARE"
_CLAIM = (
    "UPDATE control_unit_noderun SET state = %s, reason = '', started_at = %s, worker = %s, alive_at = %s "
    "WHERE run_id = %s AND node_id = %s AND attempt = %s AND state = %s RETURNING inputs, input_refs"
)


@dataclass(frozen=True)
class Claim:
    pipeline_id: Any
    version_id: int
    inputs: Any  # as stored: a source node's inputs
    input_refs: Any  # as stored: any other node's (control_unit.node_inputs)


def claim(run_id: Any, node_id: str, attempt: int, worker: str) -> Claim | None:
    """Take the attempt for ``worker``; None when the task has nothing to do."""
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        cursor.execute(_RUN, [run_id])
        found = cursor.fetchone()
        if found is None:
            return None
        run_state, pipeline_id, version_id = found
        if run_state != RUNNING:
            if run_state == PAUSED:
                NodeRun.objects.filter(run_id=run_id, node_id=node_id, attempt=attempt, state=QUEUED).update(
                    dispatched=False
                )
            return None
        now = timezone.now()
        cursor.execute(_CLAIM, [RUNNING, now, worker, now, run_id, node_id, attempt, QUEUED])
        claimed = cursor.fetchone()
        if claimed is None:
            return None
        transition = Transition(node_id, QUEUED, RUNNING, attempt)
        RunTransition.objects.create(
            run_id=run_id, node_id=node_id, source=QUEUED, target=RUNNING, attempt=attempt
        )
        trace_recorder.record(run_id, [transition_draft(transition, None, now)])
    inputs, input_refs = claimed
    return Claim(pipeline_id, version_id, _json(inputs), _json(input_refs))


def _json(value: Any) -> Any:
    # The driver may hand jsonb over parsed or as text, depending on its loaders.
    return json.loads(value) if isinstance(value, str | bytes) else value
