"""Signs of life of the attempts a pool process holds.

From its claim to its recorded outcome an attempt belongs to the process running its
task. A thread of that process stamps NodeRun.alive_at of each attempt it holds every
FLOWKIT_ATTEMPT_STAMP_S, whatever the task is doing meanwhile (waiting for its node's
NPU, running it, paused, recording). When the process dies or hangs, the stamps stop,
and the workers' watchdog (control_unit.run_actions.do_fail_silent_attempts, run by
each heartbeat) fails the attempt with RunnerLost once it has been silent
FLOWKIT_ATTEMPT_SILENT_AFTER_S: no attempt stays "running" behind a live worker.
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


class AttemptStamps:
    """The attempts this process holds, stamped by a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[Attempt] = set()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def holding(self, run_id: str, node_id: str, attempt: int) -> Iterator[None]:
        with self._lock:
            self._held.add((run_id, node_id, attempt))
            if self._thread is None or not self._thread.is_alive():
                # Started in the process that holds attempts (after Celery's fork).
                self._thread = threading.Thread(target=self._stamp_forever, name="stamps", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.discard((run_id, node_id, attempt))

    def stamp(self) -> int:
        """Stamp every attempt held now (one UPDATE); how many rows it stamped."""
        with self._lock:
            held = list(self._held)
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
