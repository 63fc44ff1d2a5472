"""Signs of life of the attempts a pool process holds.

From its claim to its recorded outcome an attempt belongs to the process running its
task. A thread of that process stamps NodeRun.alive_at of each attempt it holds every
FLOWKIT_ATTEMPT_STAMP_S, whatever the task is doing meanwhile (waiting for its node's
NPU, running it, paused, recording). When the process dies or hangs, the stamps stop,
and the workers' watchdog (control_unit.run_actions.do_fail_silent_attempts, run by
each heartbeat) fails the attempt with RunnerLost once it has been silent
FLOWKIT_ATTEMPT_SILENT_AFTER_S: no attempt stays "running" behind a live worker.

A live process whose task is stuck is caught too: each held attempt has a deadline
(an ``AttemptClock``). Once its execution starts the runner has its timeout plus
FLOWKIT_ATTEMPT_GRACE_S, paused time not counted, and after it the grace to record
the outcome; an attempt past its deadline is no longer stamped, so the watchdog fails
it like a dead one. Before its execution starts (its secrets, the wait for its NPU,
which other executions' deadlines bound) it has none.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Q
from django.utils import timezone

from control_unit.models import NodeRun

log = logging.getLogger(__name__)

Attempt = tuple[str, str, int]


class AttemptClock:
    """The deadline by which the runner of one attempt must have moved on: none, or
    ``due_in`` seconds from a given moment, pushed back by the time spent paused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deadline: float | None = None
        self._paused_since: float | None = None

    def due_in(self, seconds: float) -> None:
        with self._lock:
            self._deadline = time.monotonic() + seconds

    def paused(self, paused: bool) -> None:
        """The run is paused (or not) now; paused time does not count."""
        with self._lock:
            now = time.monotonic()
            if paused and self._paused_since is None:
                self._paused_since = now
            elif not paused and self._paused_since is not None:
                if self._deadline is not None:
                    self._deadline += now - self._paused_since
                self._paused_since = None

    def overdue(self) -> bool:
        with self._lock:
            return (
                self._deadline is not None
                and self._paused_since is None
                and time.monotonic() > self._deadline
            )


class AttemptStamps:
    """The attempts this process holds, stamped by a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[Attempt, AttemptClock] = {}
        self._overdue: set[Attempt] = set()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, run_id: str, node_id: str, attempt: int) -> Iterator[AttemptClock]:
        key, clock = (run_id, node_id, attempt), AttemptClock()
        with self._lock:
            self._held[key] = clock
            if self._thread is None or not self._thread.is_alive():
                # Started in the process that holds attempts (after Celery's fork).
                self._thread = threading.Thread(target=self._stamp_forever, name="stamps", daemon=True)
                self._thread.start()
        try:
            yield clock
        finally:
            with self._lock:
                self._held.pop(key, None)
                self._overdue.discard(key)

    def stamp(self) -> int:
        """Stamp every attempt held now and not overdue (one UPDATE); how many rows it
        stamped."""
        with self._lock:
            held = [key for key, clock in self._held.items() if not clock.overdue()]
            overdue = [key for key in self._held if key not in held and key not in self._overdue]
            self._overdue.update(overdue)
        for run_id, node_id, attempt in overdue:
            log.error(
                "run %s node %s attempt %s: its runner is past its deadline (timeout + grace) and "
                "still holds it; no longer stamped, so the watchdog fails it", run_id, node_id, attempt,
            )  # fmt: skip
        if not held:
            return 0
        which = Q()
        for run_id, node_id, attempt in held:
            which |= Q(run_id=run_id, node_id=node_id, attempt=attempt)
        rows = NodeRun.objects.filter(which, state__in=("running", "paused"))
        return rows.update(alive_at=timezone.now())

    def _stamp_forever(self) -> None:
        while True:
            time.sleep(settings.FLOWKIT_ATTEMPT_STAMP_S)
            try:
                self.stamp()
            except DatabaseError:
                log.warning("could not stamp the attempts this process runs", exc_info=True)
            finally:
                # Not one more connection per pool process held open between stamps.
                connection.close()


stamps = AttemptStamps()
