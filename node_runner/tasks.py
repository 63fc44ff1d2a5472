"""Celery tasks: take ids, load rows, call one action, log."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from celery import shared_task
from django.conf import settings

from control_unit.actions import do_claim_node_test_run, do_finish_node_test_run
from control_unit.limits import LimitError, NodeLimits
from control_unit.models import NodeTestRun, NodeTestRunState, Run
from control_unit.run_actions import ClaimedNode, do_claim_node, do_record_node_outcome
from control_unit.run_states import run_states
from control_unit.transitions import InvalidTransition
from node_runner import heartbeat  # noqa: F401 - connects the worker's heartbeat to Celery's signals
from node_runner.attempt_stamps import AttemptClock, stamps
from node_runner.engine_outage import engine_outage
from node_runner.npu_execution import NpuOutcome, NpuSource, RunControl, execute_in_npu
from node_runner.ready_npu import NpuUnavailable
from node_runner.wire import NpuJob
from node_runner.worker_npus import current_npus
from secret_manager.actions import resolve_secrets
from secret_manager.errors import SecretError, UnknownSecret
from secret_manager.log_masking import masking_logs
from secret_manager.masking import Masker
from secret_manager.references import referenced_names
from trace_monitor.database_retry import (
    DATABASE_ATTEMPTS,
    DATABASE_UNAVAILABLE,
    forget_connection,
    with_database_retry,
)
from trace_monitor.node_trace import NodeTrace, end_execution_recorded_late

log = logging.getLogger(__name__)


def execute_node(
    *,
    node_id: str,
    label: str,
    code: str,
    inputs: dict[str, Any],
    attempt: int,
    limits: dict[str, Any],
    labels: dict[str, str],
    run_ref: str,
    control: RunControl | None = None,
    trace: NodeTrace | None = None,
    npus: NpuSource | None = None,
) -> dict[str, Any]:
    """Resolve the node's secrets, run it in a fresh process of its dedicated NPU (or a
    single-use container), and return its outcome with every secret value (and its
    common encodings) masked, ready to be stored. With a ``trace``, the execution is
    traced live (events, logs, resource samples)."""
    try:
        secrets = resolve_secrets(referenced_names(code), run_id=run_ref, node_id=node_id)
    except UnknownSecret as exc:
        # Before any container exists: the node cannot run without it.
        return {"error": {"error_type": "SecretNotDefined", "message": str(exc)}}
    except SecretError as exc:
        return {"error": {"error_type": type(exc).__name__, "message": str(exc)}}
    masker = Masker(secrets.values())
    if trace is not None:
        trace.begin(inputs)
    job = NpuJob(
        node_id=node_id,
        label=label,
        code=code,
        inputs=inputs,
        secrets=secrets,
        attempt=attempt,
        idempotency_key=f"{run_ref}/{node_id}",
    )
    # Whatever this process logs meanwhile is masked too (secret_manager.log_masking).
    with masking_logs(masker):
        try:
            outcome = execute_in_npu(
                job,
                NodeLimits.from_overrides(limits),
                labels,
                observer=trace,
                control=control,
                npus=npus,
                masker=masker,
            )
            result = outcome_record(outcome)
        except (NpuUnavailable, LimitError) as exc:
            result = {"error": {"error_type": type(exc).__name__, "message": str(exc)}}
        except Exception as exc:  # noqa: BLE001 - runner_failure logs it, without its text
            result = runner_failure(exc, "run the node", f"node {node_id} of {run_ref}")
    # Log lines were masked as they were read (node_runner.npu_frames); the rest is masked
    # here: the outputs, and errors that did not come through the frames.
    logs = result.pop("logs", None)
    masked: dict[str, Any] = masker.mask(result)
    if logs is not None:
        masked["logs"] = logs
    return masked


@shared_task(name="node_runner.run_node_test")
def run_node_test(test_run_id: str) -> None:
    if not do_claim_node_test_run(test_run_id, worker=socket.gethostname()):
        log.info("node test run %s is already taken or finished; skipping", test_run_id)
        return
    test_run = NodeTestRun.objects.get(id=test_run_id)
    try:
        result = execute_node(
            node_id=test_run.label or "node",
            label=test_run.label,
            code=test_run.code,
            inputs=test_run.inputs,
            attempt=1,
            limits=test_run.limits,
            labels={"flowkit.test_run": test_run_id},
            run_ref=f"test-{test_run_id}",
            control=node_test_control(test_run_id),
        )
    except Exception as exc:  # noqa: BLE001 - runner_failure logs it, without its text
        result = runner_failure(exc, "run the node test", f"node test run {test_run_id}")
    try:
        _finish_node_test(test_run_id, result)
    except InvalidTransition as exc:
        log.info("node test run %s ended after it was cancelled: %s", test_run_id, exc)
        return
    log.info("node test run %s finished: %s", test_run_id, "failed" if result.get("error") else "succeeded")


def _finish_node_test(test_run_id: str, result: dict[str, Any]) -> None:
    """Store the node test's outcome; one that cannot be stored ends the test failed,
    rather than leave it running. InvalidTransition: it was cancelled meanwhile."""
    where = f"node test run {test_run_id}"
    try:
        with_database_retry(lambda: do_finish_node_test_run(test_run_id, result=result), what=where)
    except InvalidTransition:
        raise
    except Exception as exc:  # noqa: BLE001 - runner_failure logs it, without its text
        failure = runner_failure(exc, "store the node test's outcome", where)
        with_database_retry(lambda: do_finish_node_test_run(test_run_id, result=failure), what=where)


def node_test_control(test_run_id: str) -> Callable[[], str]:
    """What a node test run wants of its execution: to stop once it was cancelled (read
    from the database at most every NODE_TEST_READ_S: a cancel is rare, a test short)."""
    read_at, wants = 0.0, "run"

    def wanted() -> str:
        nonlocal read_at, wants
        if time.monotonic() - read_at < NODE_TEST_READ_S:
            return wants
        try:
            state = NodeTestRun.objects.filter(id=test_run_id).values_list("state", flat=True).first()
        except DATABASE_UNAVAILABLE:
            forget_connection()
            return "unknown"
        read_at, wants = time.monotonic(), "run" if state == NodeTestRunState.RUNNING else "cancel"
        return wants

    return wanted


NODE_TEST_READ_S = 0.5


@contextlib.contextmanager
def run_control(run_id: str) -> Iterator[RunControl]:
    """What the run wants of its running nodes, from the run's state as it is published
    (control_unit.run_states), read from the database at first and every few seconds."""
    states = run_states()
    state = states.follow(run_id, lambda: _read_run_state(run_id))

    def wanted() -> str:
        current = state()
        if current == "unknown":
            return "unknown"
        if current == "paused":
            return "pause"
        if current in (None, "cancelled", "failed", "succeeded"):
            return "cancel"
        return "run"

    try:
        yield wanted
    finally:
        states.forget(run_id)


def _read_run_state(run_id: str) -> str | None:
    try:
        return Run.objects.filter(id=run_id).values_list("state", flat=True).first()
    except DATABASE_UNAVAILABLE:
        # Keep going as before; the next read, on a new connection, will know.
        forget_connection()
        return "unknown"


def npus_of(claimed: ClaimedNode) -> NpuSource | None:
    """Where the node's execution gets its NPU: its dedicated NPU, held by the worker's
    NPU host, unless the node or the installation asks for a single-use container per
    execution (from the host's warm pool)."""
    host = current_npus()
    if host is None:
        return None
    if claimed.isolation == "container" or settings.FLOWKIT_NPU_ISOLATION == "container":
        return host.single_use()
    return host.for_node(str(claimed.pipeline_id), claimed.node_id)


@shared_task(name="node_runner.run_node", bind=True)
def run_node(self: Any, run_id: str, node_id: str, attempt: int) -> None:
    """Execute one attempt of one node of a run. Idempotent: a redelivered or stale
    task finds the attempt already taken or finished and does nothing."""
    worker = self.request.hostname or socket.gethostname()
    claimed = do_claim_node(run_id, node_id, attempt, worker=worker)
    if claimed is None:
        log.info("run %s node %s attempt %s: nothing to do", run_id, node_id, attempt)
        return
    with stamps.holding(run_id, node_id, attempt) as clock:
        run_claimed(claimed, worker, clock)


def run_claimed(claimed: ClaimedNode, worker: str, clock: AttemptClock | None = None) -> None:
    """Run a claimed attempt and record its outcome. The attempt is this worker's now:
    whatever fails here ends it with an outcome, never leaves it running (and should
    this process die, or this task get stuck past ``clock``'s deadline, its stamps stop
    and the watchdog fails it)."""
    run_id, node_id, attempt = claimed.run_id, claimed.node_id, claimed.attempt
    where = f"run {run_id} node {node_id} attempt {attempt}"
    clock = clock or AttemptClock()
    began = time.time()
    try:
        timeout_s = NodeLimits.from_overrides(claimed.limits).timeout_s
    except LimitError:
        timeout_s = settings.FLOWKIT_NPU_TIMEOUT_S  # the execution refuses them with a clear error
    trace = NodeTrace(
        run_id=run_id,
        pipeline_id=claimed.pipeline_id,
        node_id=node_id,
        attempt=attempt,
        worker=worker,
        on_started=lambda: clock.due_in(timeout_s + settings.FLOWKIT_ATTEMPT_GRACE_S),
    )
    try:
        with run_control(run_id) as wanted:

            def control() -> str:
                state = wanted()
                clock.paused(state == "pause")
                return state

            result = execute_node(
                node_id=node_id,
                label=claimed.label,
                code=claimed.code,
                inputs=claimed.inputs,
                attempt=attempt,
                limits=claimed.limits,
                labels={
                    "flowkit.run": run_id,
                    "flowkit.node": node_id,
                    "flowkit.attempt": str(attempt),
                    "flowkit.worker": worker,
                },
                run_ref=run_id,
                control=control,
                trace=trace,
                # A run's nodes go through the worker's NPU host; a node test run (a one-off
                # from the editor or the CLI) starts its own container, labelled with the test
                # run so that it can be found.
                npus=npus_of(claimed),
            )
    except Exception as exc:  # noqa: BLE001 - runner_failure logs it, without its text
        result = runner_failure(exc, "run the node", where)
    # An attempt the Docker engine's absence ended is the engine's failure, not the
    # node's: reported once the engine is back, retried on its own budget.
    result = engine_outage(result, began)
    clock.paused(False)
    clock.due_in(settings.FLOWKIT_ATTEMPT_GRACE_S)  # to store the trace's end and the outcome
    database_away = False
    try:
        trace.finish(result)
    except DATABASE_UNAVAILABLE:
        # The trace has waited out the database's retries already: try the outcome
        # once, then hand it to the broker rather than wait as long again.
        database_away = True
        log.warning("run %s node %s attempt %s: could not finish its trace", run_id, node_id, attempt)
    except Exception:
        # The outcome matters more than its trace: record it whatever happened here.
        log.exception("run %s node %s attempt %s: could not finish its trace", run_id, node_id, attempt)
    # A database that is down for a moment must not strand the node in "running".
    try:
        applied = with_database_retry(
            lambda: do_record_node_outcome(run_id, node_id, attempt, result),
            what=f"result of {node_id}",
            attempts=1 if database_away else DATABASE_ATTEMPTS,
        )
    except DATABASE_UNAVAILABLE:
        # Down for longer: the outcome (masked already) waits in the broker rather than
        # in this process, and whichever worker takes it records it once the database
        # is back. The node stays "running" until then, and is never run again for it.
        record_node_outcome.apply_async(
            (run_id, node_id, attempt, result, worker),
            countdown=RECORD_FIRST_DELAY_S,
            queue=settings.FLOWKIT_CELERY_QUEUE,
        )
        log.warning(
            "run %s node %s attempt %s: the database stayed unreachable; its outcome waits in the "
            "broker and is recorded once the database is back",
            run_id, node_id, attempt,
        )  # fmt: skip
        return
    except Exception as exc:  # noqa: BLE001 - runner_failure logs it, without its text
        # The outcome itself cannot be stored (a value the database refuses, a bug): the
        # attempt still ends, failed, rather than stay running.
        result = runner_failure(exc, "store the node's outcome", where)
        applied = with_database_retry(
            lambda: do_record_node_outcome(run_id, node_id, attempt, result), what=f"failure of {node_id}"
        )
    _log_recorded(run_id, node_id, attempt, result, applied)


def runner_failure(exc: Exception, doing: str, where: str) -> dict[str, Any]:
    """The outcome of an attempt whose runner failed after its claim. Its message and
    the log name the exception's type and where it was raised, never its text, which
    may hold a value of the node's (a secret not yet masked)."""
    log.error(
        "%s: the runner could not %s (%s)\n%s",
        where, doing, type(exc).__name__, "".join(traceback.format_tb(exc.__traceback__)),
    )  # fmt: skip
    message = f"the node runner could not {doing}: {type(exc).__name__} (details in the worker's log)"
    return {"error": {"error_type": "RunnerError", "message": message}}


# An outcome waiting in the broker is tried again 1, 2, 4, then every 5 s: for about
# an hour and a half in all, then given up (logged; the watchdog then fails the node as
# lost). The delay stays far below FLOWKIT_ATTEMPT_SILENT_AFTER_S: once the database is
# back, the workers' watchdogs wait that long in steady beats before failing a silent
# attempt, and the outcome must be recorded first.
RECORD_FIRST_DELAY_S = 1
RECORD_MAX_DELAY_S = 5
RECORD_RETRIES = 3 + 90 * 60 // RECORD_MAX_DELAY_S


@shared_task(name="node_runner.record_node_outcome", bind=True, max_retries=RECORD_RETRIES)
def record_node_outcome(
    self: Any, run_id: str, node_id: str, attempt: int, result: dict[str, Any], worker: str
) -> None:
    """Record the outcome of an attempt whose runner found the database unreachable
    for longer than its own retries. Idempotent like any report: an attempt that has
    moved on meanwhile (cancelled, or failed as lost) ignores it."""
    try:
        # The timeline's row first: once the outcome is recorded, the run may be seen
        # finished, and its execution must be there then.
        pipeline_id = Run.objects.filter(id=run_id).values_list("pipeline_id", flat=True).first()
        end_execution_recorded_late(
            run_id, None if pipeline_id is None else str(pipeline_id), node_id, attempt, result, worker
        )
        applied = do_record_node_outcome(run_id, node_id, attempt, result)
    except DATABASE_UNAVAILABLE as exc:
        forget_connection()
        delay = min(RECORD_FIRST_DELAY_S * 2 ** (self.request.retries + 1), RECORD_MAX_DELAY_S)
        raise self.retry(exc=exc, countdown=delay) from None
    _log_recorded(run_id, node_id, attempt, result, applied)


def _log_recorded(run_id: str, node_id: str, attempt: int, result: dict[str, Any], applied: bool) -> None:
    verdict = "failed" if result.get("error") else "succeeded"
    log.info(
        "run %s node %s attempt %s: %s%s", run_id, node_id, attempt, verdict, "" if applied else " (ignored)"
    )


def outcome_record(outcome: NpuOutcome) -> dict[str, Any]:
    return {
        "next_nodes": outcome.next_nodes,
        "outputs": outcome.outputs,
        "status_message": outcome.status_message,
        "error": outcome.error.as_dict() if outcome.error else None,
        "logs": outcome.logs,
        "dropped_log_lines": outcome.dropped_log_lines,
        "container_id": outcome.container_id,
        "duration_s": round(outcome.duration_s, 6),
        "exit_code": outcome.exit_code,
    }
