"""The trace of one node execution, written by the runner while the node runs.

Log lines and resource samples are buffered and written in batches, at most every
FLOWKIT_TRACE_FLUSH_S, each batch in one transaction and one stream message: a
chatty node costs the database and the browser a few writes a second, not one per
line. The runtime already bounds what a node may log (FLOWKIT_NPU_MAX_LOG_*); what
it dropped arrives as one ``logs_dropped`` event, the marker where lines are missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError, transaction
from django.utils import timezone

from trace_monitor import kinds
from trace_monitor.database_retry import DATABASE_UNAVAILABLE, forget_connection, with_database_retry
from trace_monitor.models import NodeExecution, ResourceSample
from trace_monitor.previews import cap_ports, cap_text
from trace_monitor.recorder import EventDraft, record, record_samples
from trace_monitor.samples import NpuSample

log = logging.getLogger(__name__)
MAX_TRACEBACK_BYTES = 64 * 1024
RETRY_FLUSH_S = 1.0


class NodeTrace:
    """Implements the runner's NpuObserver for one attempt of one node of a run."""

    def __init__(
        self,
        *,
        run_id: str,
        pipeline_id: Any,
        node_id: str,
        attempt: int,
        worker: str,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        self.run_id = run_id
        self._on_started = on_started  # told when the execution starts
        self.pipeline_id = pipeline_id
        self.node_id = node_id
        self.attempt = attempt
        self.worker = worker
        self._events: list[EventDraft] = []
        self._samples: list[ResourceSample] = []
        self._lock = threading.Lock()  # samples arrive on the sampler's thread
        self._next_flush = 0.0
        self._started_at = timezone.now()
        self._container_id = ""
        self._peaks: dict[str, int | float | None] = {}
        self._closed = False

    def begin(self, inputs: dict[str, Any]) -> None:
        """The node is about to run with ``inputs`` (which hold no secret: values are
        resolved inside the NPU)."""
        values, truncated = cap_ports(inputs, settings.FLOWKIT_TRACE_PREVIEW_BYTES)
        self._add(kinds.INPUTS, {"inputs": values, **({"truncated": truncated} if truncated else {})})

    # -- NpuObserver ------------------------------------------------------------------

    def started(self, container_id: str, image: str, runtime: str) -> None:
        if self._on_started is not None:
            self._on_started()
        self._started_at = timezone.now()
        self._container_id = container_id
        self._add(
            kinds.STARTED,
            {"worker": self.worker, "container_id": container_id, "image": image, "runtime": runtime},
        )
        # The timeline shows the attempt while it runs, written with its first events;
        # finish() completes the row (and writes it, should the database be away now).
        self.flush(with_events=lambda: self._save_execution("running", None, None))

    def event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "log":
            # Checked and masked already, by the runner (node_runner.npu_frames).
            self._add(kinds.LOG, {key: value for key, value in event.items() if key != "type"})
        elif kind == "log_dropped":
            self._add(
                kinds.LOGS_DROPPED,
                {
                    "lines": int(event.get("lines", 0)),
                    "bytes": int(event.get("bytes", 0)),
                    "max_lines": settings.FLOWKIT_NPU_MAX_LOG_LINES,
                    "max_bytes": settings.FLOWKIT_NPU_MAX_LOG_BYTES,
                },
            )
        # The result and the error are written by finish(), from the masked outcome.

    def sample(self, sample: NpuSample) -> None:
        with self._lock:
            if self._closed:
                return
            where = {"run_id": self.run_id, "node_id": self.node_id, "attempt": self.attempt}
            self._samples.append(ResourceSample(**where, **asdict(sample)))
            self._peak("cpu_percent_max", sample.cpu_percent)
            self._peak("memory_bytes_max", sample.memory_bytes)
            # Network counters only grow: the last reading is the total.
            self._peaks["net_rx_bytes"] = sample.net_rx_bytes
            self._peaks["net_tx_bytes"] = sample.net_tx_bytes

    def tick(self) -> None:
        if time.monotonic() >= self._next_flush:
            self.flush()

    def ended(self, cpu_s: float, peak_memory_bytes: int) -> None:
        # Measured by the NPU's fork server over the whole execution: the peak between
        # two samples, and a figure for an execution too short to be sampled at all.
        with self._lock:
            self._peak("memory_bytes_max", peak_memory_bytes or None)
            seconds = (timezone.now() - self._started_at).total_seconds()
            if self._peaks.get("cpu_percent_max") is None and seconds > 0:
                self._peak("cpu_percent_max", round(cpu_s / seconds * 100.0, 2))

    # ------------------------------------------------------------------------------

    def finish(self, result: dict[str, Any]) -> None:
        """The execution is over; ``result`` is the runner's masked outcome."""
        error = result.get("error")
        if error:
            error = dict(error)
            if "traceback" in error:
                error["traceback"] = cap_text(str(error["traceback"]), MAX_TRACEBACK_BYTES)
            self._add(kinds.ERROR, error)
        else:
            outputs, truncated = cap_ports(result.get("outputs"), settings.FLOWKIT_TRACE_PREVIEW_BYTES)
            data: dict[str, Any] = {
                "outputs": outputs,
                "next_nodes": result.get("next_nodes") or [],
                "status_message": result.get("status_message", ""),
            }
            if truncated:
                data["truncated"] = truncated
            self._add(kinds.OUTPUTS, data)
        outcome = outcome_of(error)
        duration_s = result.get("duration_s")
        self._add(
            kinds.FINISHED,
            {"outcome": outcome, "duration_s": duration_s, "exit_code": result.get("exit_code")},
        )
        with self._lock:
            self._closed = True
        # The last events and the execution's row in one transaction.
        with_database_retry(
            lambda: self._flush_or_fail(lambda: self._save_execution(outcome, error, duration_s)),
            what=f"trace of {self.run_id}/{self.node_id}",
        )

    def _flush_or_fail(self, with_events: Callable[[], None]) -> None:
        if not self.flush(with_events):
            raise OperationalError("the trace's last events could not be stored")

    def flush(self, with_events: Callable[[], None] | None = None) -> bool:
        """Write the buffered events and samples in one transaction, with what
        ``with_events`` writes; False (the events kept for later) when the database
        is unreachable."""
        with self._lock:
            events, self._events = self._events, []
            samples, self._samples = self._samples, []
        try:
            # Events and samples are sent in separate messages; each kept in order.
            with transaction.atomic():
                if with_events is not None:
                    with_events()
                record(self.run_id, events)
                record_samples(self.run_id, samples)
        except DATABASE_UNAVAILABLE as exc:
            # The node goes on; its events wait for the database (they are bounded by
            # the log budget). Samples of that moment are given up: points on a chart.
            log.warning("trace of %s/%s: the database is unreachable (%s)", self.run_id, self.node_id, exc)
            forget_connection()
            with self._lock:
                self._events[:0] = events
            self._next_flush = time.monotonic() + RETRY_FLUSH_S
            return False
        self._next_flush = time.monotonic() + settings.FLOWKIT_TRACE_FLUSH_S
        return True

    def _add(self, kind: str, data: dict[str, Any]) -> None:
        draft = EventDraft(
            kind=kind, node_id=self.node_id, attempt=self.attempt, data=data, at=timezone.now()
        )
        with self._lock:
            self._events.append(draft)

    def _peak(self, name: str, value: float | None) -> None:
        if value is not None:
            current = self._peaks.get(name)
            self._peaks[name] = value if current is None else max(current, value)

    def _save_execution(self, outcome: str, error: dict[str, Any] | None, duration_s: float | None) -> None:
        # A row per attempt whatever happened on the way: written when the NPU starts and
        # again when it ends, each time by one INSERT ... ON CONFLICT DO UPDATE.
        values = {
            "pipeline_id": self.pipeline_id,
            "worker": self.worker,
            "container_id": self._container_id,
            "started_at": self._started_at,
            "finished_at": None if outcome == "running" else timezone.now(),
            "duration_s": None if outcome == "running" else (duration_s or 0.0),
            "outcome": outcome,
            "error_type": str((error or {}).get("error_type", ""))[:80],
            **self._peaks,
        }
        NodeExecution.objects.bulk_create(
            [NodeExecution(run_id=self.run_id, node_id=self.node_id, attempt=self.attempt, **values)],
            update_conflicts=True,
            unique_fields=["run", "node_id", "attempt"],
            update_fields=list(values),
        )


def outcome_of(error: dict[str, Any] | None) -> str:
    """An execution's outcome from its runner's error, if any."""
    if not error:
        return "succeeded"
    return "cancelled" if error.get("error_type") == "NodeCancelled" else "failed"


def end_execution_recorded_late(
    run_id: str, pipeline_id: str | None, node_id: str, attempt: int, result: dict[str, Any], worker: str
) -> None:
    """End the execution of an attempt whose outcome waited in the broker
    (node_runner.tasks.record_node_outcome): its runner could not write it while the
    database was away, and the timeline would show it running for ever, or not at all.
    What its outcome carries is kept; its last events (outputs, finished) are not in the
    trace, and the node's outputs are in its run. ``pipeline_id`` is None when the run
    is gone (deleted with its pipeline): there is no timeline to end."""
    now = timezone.now()
    duration_s = float(result.get("duration_s") or 0.0)
    ending = {
        "outcome": outcome_of(result.get("error")),
        "error_type": str((result.get("error") or {}).get("error_type", ""))[:80],
        "finished_at": now,
        "duration_s": duration_s,
    }
    attempt_rows = NodeExecution.objects.filter(run_id=run_id, node_id=node_id, attempt=attempt)
    if attempt_rows.filter(outcome="running").update(**ending) or attempt_rows.exists():
        return  # ended now, or earlier by its runner or as lost
    if pipeline_id is not None:
        NodeExecution.objects.get_or_create(
            run_id=run_id,
            node_id=node_id,
            attempt=attempt,
            defaults={
                "pipeline_id": pipeline_id,
                "worker": worker,
                "container_id": str(result.get("container_id") or "")[:80],
                # The NPU's own time: the best start the outcome can tell.
                "started_at": now - timedelta(seconds=duration_s),
                **ending,
            },
        )


def end_lost_executions(attempts: Iterable[tuple[str, str, int]], error_type: str = "WorkerLost") -> int:
    """Close the executions of attempts that failed because their worker was lost or
    restarted, or their runner went silent (control_unit.run_actions): the runner that
    would write their end is gone, and the timeline would show them running for ever.
    One the runner had closed already keeps what its NPU did. Returns how many closed."""
    now = timezone.now()
    closed = 0
    for run_id, node_id, attempt in attempts:
        lost = NodeExecution.objects.filter(run_id=run_id, node_id=node_id, attempt=attempt)
        for execution in lost.filter(outcome="running"):
            duration_s = max(0.0, (now - execution.started_at).total_seconds())
            # Conditional: a runner that was only slow may close it at the same moment.
            closed += NodeExecution.objects.filter(id=execution.id, outcome="running").update(
                outcome="failed", error_type=error_type, finished_at=now, duration_s=duration_s
            )
    return closed
