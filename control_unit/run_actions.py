"""Actions on runs: start, claim and finish nodes, pause, resume, cancel, restart,
rerun from a node. Each event runs in one transaction under a row lock on the run,
so a finishing worker and a user's cancel can never both win."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from control_unit import audit, claims, fcb_store
from control_unit import fcb as core
from control_unit.broker_messages import held_dispatches
from control_unit.dispatcher import dispatch_task_id
from control_unit.fcb_store import (
    create_rows,
    graph_of,
    graph_of_version,
    load_fcb,
    load_whole_fcb,
    lock_run,
    save_step,
)
from control_unit.graph import Graph
from control_unit.models import NodeRun, PipelineVersion, Run
from control_unit.node_inputs import inputs_of
from trace_monitor.models import NodeExecution
from trace_monitor.node_trace import end_lost_executions

log = logging.getLogger(__name__)

# Errors that would fail again the same way: retrying them only wastes time.
NOT_RETRYABLE = frozenset({"SyntaxError", "RoutingError", "NodeCancelled", "SecretNotDefined"})

Event = Callable[[Graph, core.Fcb], core.Step]


@dataclass(frozen=True)
class ClaimedNode:
    """What a worker needs to execute one attempt of one node."""

    run_id: str
    pipeline_id: Any
    node_id: str
    attempt: int
    label: str
    code: str
    inputs: dict[str, Any]
    limits: dict[str, Any]
    isolation: str = "dedicated"


def _apply(
    run_id: Any, event: Event, columns: dict[str, dict[str, Any]] | None = None
) -> tuple[Run, core.Step]:
    # No savepoint when called inside an action's transaction: one step, one transaction.
    with transaction.atomic(savepoint=False):
        run = lock_run(run_id)
        fcb, nodes = load_fcb(run)
        step = event(graph_of(run), fcb)
        save_step(run, step, nodes, columns)
    return run, step


@transaction.atomic
def do_start_run(
    version: PipelineVersion,
    run_input: Any = None,
    user: Any = None,
    *,
    source_run: Run | None = None,
    initial: core.Fcb | None = None,
    rerun_from: str = "",
) -> Run:
    run_input = {} if run_input is None else run_input
    run = Run.objects.create(
        pipeline_id=version.pipeline_id,
        version=version,
        input=run_input,
        created_by=user,
        source_run=source_run,
        rerun_from=rerun_from,
    )
    graph = graph_of(run)
    action = "run.rerun" if rerun_from else "run.restart" if source_run else "run.start"
    audit.record(action, user, run.id, pipeline=str(version.pipeline_id), version=version.number,
                 **({"source_run": str(source_run.id)} if source_run else {}),
                 **({"node": rerun_from} if rerun_from else {}))  # fmt: skip
    fcb = initial or core.Fcb.new(graph, run_input)
    nodes = create_rows(run, fcb)
    save_step(run, core.start(graph, replace(fcb, nodes=nodes)), nodes)
    return run


def do_claim_node(run_id: Any, node_id: str, attempt: int, worker: str) -> ClaimedNode | None:
    """Let a worker take (node, attempt); None when the task has nothing to do
    (already taken, finished, cancelled, or held while the run is paused)."""
    # What the worker needs is read in the claim's transaction: once it commits the
    # attempt is the worker's, and a database gone between the two would leave it
    # claimed by a task that cannot run it.
    with transaction.atomic():
        claimed = claims.claim(run_id, node_id, attempt, worker)
        if claimed is None:
            return None
        graph = graph_of_version(claimed.version_id)
        inputs = inputs_of(run_id, graph, node_id, claimed.inputs, claimed.input_refs)
    spec = graph.nodes[node_id]
    return ClaimedNode(
        run_id=str(run_id),
        pipeline_id=claimed.pipeline_id,
        node_id=node_id,
        attempt=attempt,
        label=spec.label,
        code=spec.code,
        inputs=inputs,
        limits=dict(spec.limits),
        isolation=spec.isolation,
    )


def do_record_node_outcome(run_id: Any, node_id: str, attempt: int, outcome: dict[str, Any]) -> bool:
    """Apply a finished attempt to the FCB; False if the FCB had already moved on
    (the run was cancelled meanwhile, or this is a redelivered report)."""
    error = outcome.get("error")

    def event(graph: Graph, fcb: core.Fcb) -> core.Step:
        if error:
            return core.node_failed(
                graph,
                fcb,
                node_id,
                attempt,
                error=error,
                retryable=error.get("error_type") not in NOT_RETRYABLE,
            )
        return core.node_succeeded(
            graph,
            fcb,
            node_id,
            attempt,
            next_nodes=outcome.get("next_nodes") or [],
            outputs=outcome.get("outputs") or {},
            status_message=outcome.get("status_message", ""),
        )

    columns = {
        "logs": outcome.get("logs", []),
        "dropped_log_lines": outcome.get("dropped_log_lines", 0),
        "container_id": outcome.get("container_id", ""),
    }
    try:
        _apply(run_id, event, {node_id: columns})
    except core.InvalidTransition as exc:
        log.info("result of %s attempt %s in run %s not applied: %s", node_id, attempt, run_id, exc)
        return False
    return True


def do_fail_stranded_attempts(
    worker: str, reason: str, claimed_before: Any = None
) -> list[tuple[str, str, int]]:
    """Fail the attempts ``worker`` claimed and can no longer finish (it was lost, or
    it restarted): each fails with WorkerLost and is retried where its node has retries
    left, and its execution (the timeline's row) closes with it. Returns the (run,
    node, attempt) failed. A report of the same attempt that arrives later (a worker
    that was only slow) is then ignored by the FCB."""
    stranded = NodeRun.objects.filter(worker=worker, state__in=("running", "paused"))
    if claimed_before is not None:
        stranded = stranded.filter(started_at__lt=claimed_before)
    attempts = stranded.values_list("run_id", "node_id", "attempt")
    return _fail_attempts(attempts, {"error_type": "WorkerLost", "message": reason})


def do_fail_silent_attempts(silent_after_s: float) -> list[tuple[str, str, int]]:
    """Fail the claimed attempts whose runner gave no sign of life for ``silent_after_s``
    (node_runner.attempt_stamps): its process was killed or hangs while its worker
    lives on. Each fails with RunnerLost, retried where its node has retries left."""
    cutoff = timezone.now() - timedelta(seconds=silent_after_s)
    silent = NodeRun.objects.filter(state__in=("running", "paused"), alive_at__lt=cutoff).values_list(
        "run_id", "node_id", "attempt", "worker"
    )
    failed = []
    for run_id, node_id, attempt, worker in silent[:500]:
        error = {
            "error_type": "RunnerLost",
            "message": f"the runner of this attempt on worker {worker} stopped "
            f"(no sign of it for {silent_after_s:g} s)",
        }
        failed += _fail_attempts([(run_id, node_id, attempt)], error)
    if failed:
        log.warning("failed %d attempts whose runner went silent: %s", len(failed), failed[:10])
    return failed


def do_end_orphaned_executions(older_than_s: float) -> int:
    """Close the executions the timeline still shows running whose attempt ended
    without them more than ``older_than_s`` ago: cancelled with its run (or failed)
    while its runner was gone, so nothing was left to close them. A runner at work
    closes its execution itself within seconds of a cancel; should it write its end
    after this, its end wins. Returns how many closed."""
    now = timezone.now()
    still_running = NodeRun.objects.filter(
        run_id=OuterRef("run_id"),
        node_id=OuterRef("node_id"),
        attempt=OuterRef("attempt"),
        state__in=("running", "paused"),
    )
    orphans = NodeExecution.objects.filter(
        outcome="running", started_at__lt=now - timedelta(seconds=older_than_s)
    ).exclude(Exists(still_running))
    closed = 0
    for execution in orphans[:500]:
        state = (
            NodeRun.objects.filter(run_id=execution.run_id, node_id=execution.node_id)
            .values_list("state", flat=True)
            .first()
        )
        cancelled = state == "cancelled"
        closed += NodeExecution.objects.filter(id=execution.id, outcome="running").update(
            outcome="cancelled" if cancelled else "failed",
            error_type="NodeCancelled" if cancelled else "RunnerLost",
            finished_at=now,
            duration_s=max(0.0, (now - execution.started_at).total_seconds()),
        )
    if closed:
        log.warning("closed %d executions whose runner was gone when their attempt ended", closed)
    return closed


def _fail_attempts(
    attempts: Iterable[tuple[Any, str, int]], error: dict[str, str]
) -> list[tuple[str, str, int]]:
    failed = []
    for run_id, node_id, attempt in attempts:
        # The attempt's execution closes in the same transaction as its outcome: the
        # runner that would have closed it is gone, and no reader may see the run
        # finished while its timeline still shows the attempt running.
        with transaction.atomic():
            if do_record_node_outcome(run_id, node_id, attempt, {"error": dict(error)}):
                end_lost_executions([(str(run_id), node_id, attempt)], error["error_type"])
                failed.append((str(run_id), node_id, attempt))
    return failed


# An overdue dispatch the broker does not hold is looked for again this much later
# before it is re-sent: long enough for one a worker was taking at the first look
# (popped from its queue, or acknowledged before its claim) to be claimed meanwhile.
CONFIRM_LOST_AFTER_S = 1.0


def do_redispatch_overdue(
    overdue_after_s: float, *, trust_delivered: bool = True
) -> list[tuple[str, str, int]]:
    """Send again the dispatches of queued nodes that no worker has claimed for
    ``overdue_after_s`` past when they were due, and whose message the broker no longer
    holds (control_unit.broker_messages): lost with a broker restart, purged, or never
    sent. Being old is not enough: behind a backlog, or held by a busy worker, a message
    waits its turn, and a copy would only add to the backlog. With ``trust_delivered``
    False (the worker that took them is lost, or restarted), messages taken by a worker
    and not acknowledged count as gone too. A duplicate is harmless anyway, since an
    attempt is claimed once. Every worker calls this on every heartbeat; the
    conditional update lets exactly one of them re-send each dispatch, and a dispatch
    found in the broker is looked for again, by any worker, only ``overdue_after_s``
    later (noted in the shared cache: its ``due_at`` stays as it was, the dispatch
    latency's start)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=overdue_after_s)
    overdue = (
        NodeRun.objects.filter(state="queued", dispatched=True, due_at__lt=cutoff, run__state="running")
        .order_by("due_at")
        .values_list("id", "run_id", "node_id", "attempt")
    )
    rows = {(str(run_id), node_id, attempt): row_id for row_id, run_id, node_id, attempt in overdue[:5000]}
    if trust_delivered:
        looked = _looked_at_lately(rows)
        rows = {key: row_id for key, row_id in rows.items() if key not in looked}
    rows = dict(list(rows.items())[:500])
    missing = _not_in_broker(list(rows), trust_delivered=trust_delivered)
    if missing:
        time.sleep(CONFIRM_LOST_AFTER_S)
        still = {
            (str(run_id), node_id, attempt)
            for run_id, node_id, attempt in NodeRun.objects.filter(
                id__in=[rows[key] for key in missing], state="queued", dispatched=True, due_at__lt=cutoff
            ).values_list("run_id", "node_id", "attempt")
        }
        missing = _not_in_broker([key for key in missing if key in still], trust_delivered=trust_delivered)
    # The broker holds the others: look again once they are overdue again.
    _note_looked_at([key for key in rows if key not in missing], overdue_after_s)
    resent = []
    for key in missing:
        if NodeRun.objects.filter(id=rows[key], state="queued", attempt=key[2], due_at__lt=cutoff).update(
            due_at=now
        ):
            resent.append(key)
    if resent:
        log.warning("re-sending %d overdue dispatches the broker lost: %s", len(resent), resent[:10])
        fcb_store.send_dispatches(resent)
    return resent


def _looked_at_key(dispatch: tuple[str, str, int]) -> str:
    return f"dispatch-in-broker:{dispatch_task_id(*dispatch)}"


def _looked_at_lately(dispatches: Iterable[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
    keys = {_looked_at_key(dispatch): dispatch for dispatch in dispatches}
    try:
        return {keys[key] for key in cache.get_many(list(keys))}
    except Exception:  # without the cache, every dispatch is looked at
        log.warning("could not read which dispatches were found in the broker lately", exc_info=True)
        return set()


def _note_looked_at(dispatches: list[tuple[str, str, int]], for_s: float) -> None:
    if not dispatches or for_s <= 0:
        return
    try:
        cache.set_many({_looked_at_key(dispatch): 1 for dispatch in dispatches}, timeout=max(1, round(for_s)))
    except Exception:  # they are looked at again on the next heartbeat
        log.warning("could not note the dispatches found in the broker", exc_info=True)


def _not_in_broker(
    dispatches: list[tuple[str, str, int]], *, trust_delivered: bool
) -> list[tuple[str, str, int]]:
    if not dispatches:
        return []
    queues = fcb_store.dispatch_queues(dispatches)
    ids = {dispatch_task_id(*key): key for key in dispatches}
    held = held_dispatches({task_id: queues.get(key, "") for task_id, key in ids.items()},
                           delivered=trust_delivered)  # fmt: skip
    return [key for task_id, key in ids.items() if task_id not in held]


def do_pause_run(run_id: Any, user: Any = None) -> Run:
    with transaction.atomic():
        audit.record("run.pause", user, run_id)
        return _apply(run_id, core.pause)[0]


def do_resume_run(run_id: Any, user: Any = None) -> Run:
    with transaction.atomic():
        audit.record("run.resume", user, run_id)
        return _apply(run_id, core.resume)[0]


def do_cancel_run(run_id: Any, reason: str = "cancelled by user", user: Any = None) -> Run:
    with transaction.atomic():
        audit.record("run.cancel", user, run_id, reason=reason)
        return _apply(run_id, lambda graph, fcb: core.cancel(graph, fcb, reason))[0]


def do_restart_run(run_id: Any, user: Any = None) -> Run:
    original = Run.objects.select_related("version").get(id=run_id)
    return do_start_run(original.version, original.input, user, source_run=original)


def do_rerun_from(run_id: Any, node_id: str, user: Any = None) -> Run:
    """A new run that reuses the outputs recorded upstream of ``node_id`` and runs
    ``node_id`` and everything downstream of it."""
    original = Run.objects.select_related("version").get(id=run_id)
    initial = core.rerun_from(graph_of(original), load_whole_fcb(original), node_id)
    return do_start_run(
        original.version, original.input, user, source_run=original, initial=initial, rerun_from=node_id
    )
