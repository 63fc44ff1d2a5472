"""The kinds of trace events, and which kind a state change of the FCB is.

Transitions come from the control unit (``queued`` ... ``cancelled``, ``run``); the
others are what the node runner saw of one execution (``started`` ... ``finished``).
"""

from __future__ import annotations

# State changes of a node, named for what a person watching sees happen.
QUEUED, RUNNING, RETRY, PAUSED, RESUMED = "queued", "running", "retry", "paused", "resumed"
SUCCEEDED, FAILED, SKIPPED, CANCELLED = "succeeded", "failed", "skipped", "cancelled"
RUN = "run"  # a state change of the run itself
# What the runner saw of one execution.
STARTED, INPUTS, LOG, LOGS_DROPPED = "started", "inputs", "log", "logs_dropped"
OUTPUTS, ERROR, FINISHED = "outputs", "error", "finished"
# A queued node that no online worker can take yet (control_unit.worker_wait).
WAITING = "waiting"

TRANSITION_KINDS = frozenset(
    {QUEUED, RUNNING, RETRY, PAUSED, RESUMED, SUCCEEDED, FAILED, SKIPPED, CANCELLED, RUN}
)
EXECUTION_KINDS = frozenset({STARTED, INPUTS, LOG, LOGS_DROPPED, OUTPUTS, ERROR, FINISHED})
ALL_KINDS = TRANSITION_KINDS | EXECUTION_KINDS | {WAITING}


def transition_kind(node_id: str | None, source: str, target: str) -> str:
    """The event kind of one FCB transition (see control_unit.fcb.NODE_TRANSITIONS)."""
    if not node_id:
        return RUN
    if target == "queued":
        # pending -> queued is the first dispatch; running/paused -> queued is a retry.
        return QUEUED if source == "pending" else RETRY
    if target == "running":
        return RESUMED if source == "paused" else RUNNING
    return target
