"""Each worker's heartbeat: its host's CPU and memory and the NPUs it drives, sent
to the resource monitor every FLOWKIT_WORKER_HEARTBEAT_S; and the recovery of work
that a lost worker stranded.

It runs as a thread of the worker's main process, started when Celery reports the
worker ready and stopped (with a last "stopped" beat) when it shuts down. On every
beat each worker also looks for peers silent longer than FLOWKIT_WORKER_LOST_AFTER_S:
their running attempts fail with WorkerLost (and are retried where the node has
retries left) and their NPUs on this engine are removed. A worker that starts under
the name of one that died does the same for its previous life at once. A run whose
worker is lost therefore moves on within about LOST_AFTER_S + HEARTBEAT_S, or twice
LOST_AFTER_S when the only workers left have just started or just got their database
back: a worker judges its peers only once its own beats have gone through for
LOST_AFTER_S (LossJudgement). Likewise, after FLOWKIT_ATTEMPT_SILENT_AFTER_S of steady
beats, it fails the attempts of live workers whose runner stopped stamping them
(node_runner.attempt_stamps) with RunnerLost.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from celery.signals import celeryd_after_setup, worker_ready, worker_shutdown, worker_shutting_down
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone
from kombu.exceptions import ChannelError

from control_unit.actions import do_fail_overdue_node_tests
from control_unit.run_actions import (
    do_end_orphaned_executions,
    do_fail_silent_attempts,
    do_fail_stranded_attempts,
    do_redispatch_overdue,
)
from control_unit.trace_retention import prune_traces, take_prune_turn
from control_unit.worker_wait import do_note_waiting_nodes
from node_runner.npu_inventory import running_npus
from node_runner.reaper import reap_created, reap_exited, reap_worker_containers
from trace_monitor.models import WorkerStatus
from trace_monitor.resource_monitor import HostLoad, WorkerPool, mark_lost_workers, record_heartbeat

log = logging.getLogger(__name__)


@dataclass
class LossJudgement:
    """When this worker may declare silent peers lost: only after its own heartbeats
    have gone through for a whole FLOWKIT_WORKER_LOST_AFTER_S. Just after a database
    outage every worker's last beat is old; the first one back must not take the others,
    which have not beaten again yet, for lost (failing their running nodes and removing
    their NPUs). It gives them the same time to come back that a silent worker gets."""

    _steady_since: float | None = None

    def beat_succeeded(self, now: float, lost_after_s: float) -> bool:
        if self._steady_since is None:
            self._steady_since = now
        return now - self._steady_since >= lost_after_s

    def beat_failed(self) -> None:
        self._steady_since = None


VIRTUAL_NICS = Path("/sys/devices/virtual/net")


def host_interfaces(names: Iterable[str], virtual: Iterable[str]) -> set[str]:
    """The interfaces whose traffic is the host's: its physical ones. Bridges, veths and
    loopback would count an NPU's download two or three times over, and the worker's own
    loopback talk to PostgreSQL and Redis is no load. Inside a container every interface
    is virtual: then all but loopback."""
    names, virtual = set(names), set(virtual)
    return (names - virtual) or (names - {"lo"})


@dataclass
class NetworkRate:
    """Bytes per second in and out of the host's interfaces between two readings."""

    _last: tuple[float, int, int] | None = None

    def read(self, now: float, counters: Mapping[str, Any], virtual: Iterable[str]) -> tuple[float, float]:
        nics = host_interfaces(counters, virtual)
        received = sum(counters[nic].bytes_recv for nic in nics)
        sent = sum(counters[nic].bytes_sent for nic in nics)
        last, self._last = self._last, (now, received, sent)
        if last is None or now <= last[0]:
            return 0.0, 0.0  # the first beat after start, as for the CPU
        elapsed = now - last[0]
        # An interface that went away takes its counters with it: never a negative rate.
        return max(0, received - last[1]) / elapsed, max(0, sent - last[2]) / elapsed


def host_load(network: NetworkRate) -> HostLoad:
    memory = psutil.virtual_memory()
    virtual = [nic.name for nic in VIRTUAL_NICS.iterdir()] if VIRTUAL_NICS.is_dir() else ["lo"]
    received, sent = network.read(time.monotonic(), psutil.net_io_counters(pernic=True), virtual)
    return HostLoad(
        # Since the previous call: the first beat after start reads 0.
        cpu_percent=psutil.cpu_percent(interval=None),
        cpu_count=psutil.cpu_count() or 1,
        memory_used_bytes=int(memory.total - memory.available),
        memory_total_bytes=int(memory.total),
        net_rx_bytes_per_s=received,
        net_tx_bytes_per_s=sent,
    )


def recover_lost_workers() -> None:
    lost = mark_lost_workers(settings.FLOWKIT_WORKER_LOST_AFTER_S)
    if lost:
        # A lost worker may have taken dispatches off the queue that it never claimed
        # (prefetched, or a retry whose countdown it was waiting out). Unacknowledged,
        # Redis hands them out again only after the visibility timeout (hours), and the
        # overdue watchdog trusts a taken message to its worker: send again now every
        # due dispatch that is not waiting in its queue. A copy of one a live worker
        # holds is claimed once, the other does nothing.
        do_redispatch_overdue(0, trust_delivered=False)
    for name in lost:
        failed = do_fail_stranded_attempts(
            name,
            f"worker {name} was lost (no heartbeat for {settings.FLOWKIT_WORKER_LOST_AFTER_S:g} s) "
            "while running this node",
        )
        removed = reap_worker_containers(name)
        log.warning("worker %s lost: failed %d attempts, removed %d NPUs", name, len(failed), len(removed))


def another_life_is_running(name: str) -> str | None:
    """Why a worker of this name other than this process may still be alive (two
    workers given the same name), or None when its previous life is surely over."""
    previous = WorkerStatus.objects.filter(name=name).values("host", "pid", "state", "last_seen").first()
    if previous is None or previous["state"] not in ("online", "draining") or previous["pid"] == os.getpid():
        return None
    if previous["host"] == socket.gethostname():
        if psutil.pid_exists(previous["pid"]):
            return f"process {previous['pid']} on this host is running as {name}"
        return None
    silent_s = (timezone.now() - previous["last_seen"]).total_seconds()
    if silent_s < settings.FLOWKIT_WORKER_LOST_AFTER_S:
        # Another host: it cannot be asked. If it is gone, the lost-worker path
        # (recover_lost_workers) recovers its work shortly.
        return f"a worker on {previous['host']} sent a heartbeat as {name} {silent_s:.0f} s ago"
    return None


def recover_previous_life(name: str, started: float) -> None:
    """What a worker of the same name left behind before this process started, unless
    that worker is still running (two workers were given one name)."""
    duplicate = another_life_is_running(name)
    if duplicate is not None:
        log.error("worker name %s is not unique (%s): not recovering its work; give each worker its own name",
                  name, duplicate)  # fmt: skip
        return
    failed = do_fail_stranded_attempts(
        name,
        f"worker {name} restarted while running this node",
        claimed_before=datetime.fromtimestamp(started, UTC),
    )
    removed = reap_worker_containers(name, created_before=started)
    # And the dispatches it had taken but not claimed, as for a lost worker.
    do_redispatch_overdue(0, trust_delivered=False)
    if failed or removed:
        log.warning(
            "%s: failed %d attempts and removed %d NPUs of its previous life", name, len(failed), len(removed)
        )


@dataclass
class PoolWatch:
    """The worker's pool as the heartbeat sees it: its size now, its bounds, and the
    recent changes of its size (Celery's autoscaler makes them; this only records
    each with the queue depth seen at the time, for the resource monitor)."""

    concurrency: int
    concurrency_min: int = 0
    size: int = 0
    history: deque[dict[str, Any]] = field(default_factory=deque)

    def observe(self, size: int, queue_depth: int, keep: int) -> None:
        if self.size and size != self.size:
            self.history.append(
                {"at": timezone.now().isoformat(), "from": self.size, "to": size, "queue_depth": queue_depth}
            )
            while len(self.history) > keep:
                self.history.popleft()
        self.size = size


class Heartbeat:
    def __init__(
        self,
        name: str,
        concurrency: int,
        *,
        worker: Any = None,
        queues: list[str] | None = None,
        concurrency_min: int = 0,
    ) -> None:
        self.name = name
        self.worker = worker  # Celery's WorkController: its pool and broker connection
        self.queues = list(queues or [])
        self.pool = PoolWatch(concurrency, concurrency_min)
        self.network = NetworkRate()
        self.judgement = LossJudgement()
        # When this life began: everything it does (its pool's NPUs too, started
        # before Celery reports the worker ready) comes after it.
        self.started = _life_began if _life_began is not None else time.time()
        # Set when a warm shutdown begins (SIGTERM): the worker finishes its nodes.
        self.draining = False
        self._stopped = threading.Event()
        self._pruner: threading.Thread | None = None
        self._thread = threading.Thread(target=self._beat_until_stopped, name="heartbeat", daemon=True)

    @property
    def concurrency(self) -> int:
        return self.pool.concurrency

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self.beat(state="stopped", npus=[])

    def beat(self, *, state: str = "online", npus: list[dict[str, Any]] | None = None) -> None:
        depth = self.queue_depth()
        self.pool.observe(self.pool_size(), depth, settings.FLOWKIT_WORKER_SCALING_HISTORY)
        record_heartbeat(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.concurrency,
            load=host_load(self.network),
            npus=running_npus(self.name) if npus is None else npus,
            state="draining" if state == "online" and self.draining else state,
            pool=WorkerPool(
                concurrency_min=self.pool.concurrency_min,
                size=self.pool.size,
                queue_depth=depth,
                scaling=list(self.pool.history),
                capabilities=list(settings.FLOWKIT_WORKER_CAPABILITIES),
                queues=self.queues,
            ),
        )

    def pool_size(self) -> int:
        pool = getattr(self.worker, "pool", None)
        try:
            return int(pool.num_processes) if pool is not None else self.concurrency
        except AttributeError:
            # The pool is starting or stopping; the last size still holds.
            return self.pool.size or self.concurrency

    def queue_depth(self) -> int:
        """Messages waiting in the queues this worker consumes (not those it holds)."""
        if self.worker is None or not self.queues:
            return 0
        depth = 0
        with self.worker.app.connection_for_read() as connection:
            channel = connection.default_channel
            for queue in self.queues:
                # Redis has no list for an empty queue, and a passive declare of a
                # missing queue is an error: nothing waits there.
                with contextlib.suppress(ChannelError):
                    depth += channel.queue_declare(queue=queue, passive=True).message_count
        return depth

    def prune_when_its_turn(self) -> threading.Thread | None:
        """Delete old runs' trace detail when this worker's turn comes (one worker of
        the fleet per FLOWKIT_TRACE_PRUNE_INTERVAL_S), in a thread of its own: a first
        prune of a long backlog must not hold up the heartbeats, or the other workers
        would take this one for lost."""
        if self._pruner is not None and self._pruner.is_alive():
            return None
        if not take_prune_turn():
            return None
        self._pruner = threading.Thread(target=_prune_old_traces, name="trace-prune", daemon=True)
        self._pruner.start()
        return self._pruner

    def _beat_until_stopped(self) -> None:
        recovered = False
        while not self._stopped.is_set():
            try:
                close_old_connections()
                if not recovered:
                    # Before this process's first beat overwrites what the last life left.
                    recover_previous_life(self.name, self.started)
                    recovered = True
                try:
                    self.beat()
                except Exception:
                    self.judgement.beat_failed()
                    raise
                now = time.monotonic()
                if self.judgement.beat_succeeded(now, settings.FLOWKIT_WORKER_LOST_AFTER_S):
                    recover_lost_workers()
                # Runners stamp their attempts through the same database: once this
                # worker's beats have gone through for as long as an attempt may be
                # silent, every live runner has had its turn to stamp.
                if self.judgement.beat_succeeded(now, settings.FLOWKIT_ATTEMPT_SILENT_AFTER_S):
                    do_fail_silent_attempts(settings.FLOWKIT_ATTEMPT_SILENT_AFTER_S)
                    do_end_orphaned_executions(settings.FLOWKIT_ATTEMPT_SILENT_AFTER_S)
                    do_fail_overdue_node_tests(settings.FLOWKIT_ATTEMPT_GRACE_S)
                reap_exited(self.name)
                reap_created(self.name)
                do_redispatch_overdue(settings.FLOWKIT_REDISPATCH_AFTER_S)
                do_note_waiting_nodes()
                self.prune_when_its_turn()
            except Exception:
                # The monitor shows the worker as silent; the worker keeps running nodes.
                log.warning("heartbeat of %s failed", self.name, exc_info=True)
            self._stopped.wait(settings.FLOWKIT_WORKER_HEARTBEAT_S)


def _prune_old_traces() -> None:
    days = settings.FLOWKIT_TRACE_RETENTION_DAYS
    try:
        report = prune_traces(days)
        if report.runs:
            log.info(
                "pruned %d events and %d resource samples of %d runs finished over %d days ago",
                report.events, report.samples, report.runs, days,
            )  # fmt: skip
    except Exception:
        log.warning("pruning the traces of old runs failed; the next turn tries again", exc_info=True)
    finally:
        connection.close()  # this thread's own


_heartbeat: Heartbeat | None = None


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **kwargs: Any) -> None:
    global _heartbeat
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    controller = getattr(sender, "controller", None)
    concurrency = getattr(controller, "concurrency", 0) or 0
    autoscaler = getattr(controller, "autoscaler", None)
    app = getattr(sender, "app", None)
    queues = sorted(app.amqp.queues.consume_from) if app is not None else []
    _heartbeat = Heartbeat(
        name,
        int(getattr(autoscaler, "max_concurrency", 0) or concurrency),
        worker=controller,
        queues=queues,
        concurrency_min=int(getattr(autoscaler, "min_concurrency", 0) or 0),
    )
    _heartbeat.start()


@worker_shutting_down.connect
def _draining(**kwargs: Any) -> None:
    # A warm shutdown (SIGTERM, a rolling restart) finishes the running nodes first.
    if _heartbeat is not None:
        _heartbeat.draining = True


@worker_shutdown.connect
def _stop_heartbeat(**kwargs: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()


# Read by the main process before it forks its pool and consumes anything. Not the
# process's creation time from psutil: Linux derives it from the boot time in whole
# seconds (and a clock adjusted since boot moves it), so it could fall after a claim
# of the previous life, whose attempt would then not be recovered.
_life_began: float | None = None


@celeryd_after_setup.connect
def _note_life_began(**kwargs: Any) -> None:
    global _life_began
    _life_began = time.time()
