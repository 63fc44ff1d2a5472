"""Writes a run's trace: events numbered 1, 2, 3... per run, broadcast after commit.

Numbers are reserved by updating the run's RunTrace row, which stays locked until
the writing transaction ends. Two writers of the same run (the control unit and a
runner's log batch, or two runners) therefore commit in the order of their numbers,
and a watcher that sees number n+2 before n+1 knows that n+1 is committed and can
read it from the database (see consumers.RunConsumer).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.layers import get_channel_layer
from django.db import connection, transaction
from django.utils import timezone

from trace_monitor.models import ResourceSample, TraceEvent

log = logging.getLogger(__name__)

MONITOR_GROUP = "monitor"


@dataclass(frozen=True)
class EventDraft:
    kind: str
    node_id: str = ""
    attempt: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime | None = None


def run_group(run_id: Any) -> str:
    return f"run-{run_id}"


def record(run_id: Any, drafts: Sequence[EventDraft]) -> list[dict[str, Any]]:
    """Store ``drafts`` as the run's next events and broadcast them once the
    surrounding transaction (or this one) commits. Returns their frames."""
    if not drafts:
        return []
    now = timezone.now()
    # Part of the caller's transaction where there is one (an FCB step): no savepoint.
    with transaction.atomic(savepoint=False):
        last = _reserve(run_id, len(drafts))
        rows = [
            TraceEvent(
                run_id=run_id,
                seq=last - len(drafts) + 1 + index,
                node_id=draft.node_id,
                attempt=draft.attempt,
                kind=draft.kind,
                at=draft.at or now,
                data=draft.data,
            )
            for index, draft in enumerate(drafts)
        ]
        TraceEvent.objects.bulk_create(rows)
        frames = [event_frame(row) for row in rows]
        transaction.on_commit(lambda: send(run_group(run_id), {"type": "run.events", "events": frames}))
    return frames


def record_samples(run_id: Any, samples: Sequence[ResourceSample]) -> None:
    """Store resource samples and send them to the run's watchers and the resource
    monitor. Samples carry no sequence number: a missed one is only a point less
    on a chart, and the series can be read back whole from the API."""
    if not samples:
        return
    with transaction.atomic(savepoint=False):
        ResourceSample.objects.bulk_create(samples)
        frames = [sample_frame(sample) for sample in samples]
        transaction.on_commit(lambda: _send_samples(str(run_id), frames))


def event_frame(row: TraceEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "kind": row.kind,
        "node_id": row.node_id or None,
        "attempt": row.attempt,
        "at": row.at.isoformat(),
        "data": row.data,
    }


def sample_frame(sample: ResourceSample) -> dict[str, Any]:
    return {
        "run_id": str(sample.run_id),
        "node_id": sample.node_id,
        "attempt": sample.attempt,
        "at": sample.at.isoformat(),
        "cpu_percent": sample.cpu_percent,
        "memory_bytes": sample.memory_bytes,
        "memory_limit_bytes": sample.memory_limit_bytes,
        "net_rx_bytes": sample.net_rx_bytes,
        "net_tx_bytes": sample.net_tx_bytes,
        "pids": sample.pids,
    }


def _reserve(run_id: Any, count: int) -> int:
    """Take ``count`` sequence numbers of the run; returns the last one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO trace_monitor_runtrace (run_id, last_seq) VALUES (%s, %s) "
            "ON CONFLICT (run_id) DO UPDATE "
            "SET last_seq = trace_monitor_runtrace.last_seq + EXCLUDED.last_seq "
            "RETURNING last_seq",
            [run_id, count],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def _send_samples(run_id: str, frames: list[dict[str, Any]]) -> None:
    send(run_group(run_id), {"type": "run.samples", "samples": frames})
    send(MONITOR_GROUP, {"type": "monitor.samples", "samples": frames})


def send(group: str, message: dict[str, Any]) -> None:
    # Everything sent is also stored: a watcher that misses a message reads it back.
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        _sends.run(layer.group_send(group, message), SEND_TIMEOUT_S)
    except Exception:
        log.warning("could not send to %s", group, exc_info=True)


class SendLoop:
    """The one event loop of this process for channel-layer sends from sync code, on a
    thread of its own. async_to_sync would run each send in a new loop, for which the
    Redis layer opens a new connection: one per trace event. A process forked from one
    that had the loop (Celery's pool processes) starts its own: the thread running the
    parent's is not there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pid = 0
        os.register_at_fork(after_in_child=self._forked)

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-sends", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def _forked(self) -> None:
        # The lock may have been held by a thread that the child does not have.
        self._lock = threading.Lock()
        self._loop = None


# A send that takes longer (Redis away) is given up: the trace is stored anyway.
SEND_TIMEOUT_S = 5.0
_sends = SendLoop()
