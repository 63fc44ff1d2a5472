"""Draining a worker: it takes no new nodes, finishes the ones it runs, then exits.

All through Celery's remote control, nothing home-made: ``cancel_consumer`` for each
queue the worker consumes (it stops fetching at once, and its reply proves it got the
order), then ``shutdown``, which is Celery's warm shutdown: the nodes it runs finish,
and the messages it had fetched but not started go back to their queue (they are
acknowledged late, so the broker still holds them; Redis restores a closing
connection's unacknowledged messages). The worker's status shows ``draining`` from
the order until its last heartbeat, which says ``stopped``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from control_unit import audit
from node_runner.celery import app
from trace_monitor.models import WorkerStatus
from trace_monitor.recorder import MONITOR_GROUP, send
from trace_monitor.resource_monitor import worker_frame

log = logging.getLogger(__name__)

REPLY_TIMEOUT_S = 5.0


class DrainError(Exception):
    """The worker cannot be drained; the message says why."""


class UnknownWorker(DrainError):
    pass


@dataclass(frozen=True)
class DrainOrder:
    worker: str
    queues: tuple[str, ...]


def do_drain_worker(
    name: str, *, user: Any = None, via: str = "", reply_timeout_s: float = REPLY_TIMEOUT_S
) -> DrainOrder:
    status = WorkerStatus.objects.filter(name=name).first()
    if status is None:
        known = ", ".join(WorkerStatus.objects.values_list("name", flat=True)[:20]) or "none"
        raise UnknownWorker(f"there is no worker named {name!r} (known workers: {known})")
    if status.state not in ("online", "draining"):
        raise DrainError(f"worker {name} is {status.state}, so there is nothing to drain")
    queues = tuple(status.queues)
    if not queues:
        # A worker of a version before capability routing did not report its queues.
        queues = tuple(queue["name"] for queue in _active_queues(name, reply_timeout_s))
    for queue in queues:
        replies = app.control.cancel_consumer(queue, destination=[name], reply=True, timeout=reply_timeout_s)
        if not replies:
            raise DrainError(
                f"worker {name} did not answer within {reply_timeout_s:g} s; "
                "it may be gone (it is marked lost once its heartbeats stop)"
            )
    with transaction.atomic():
        WorkerStatus.objects.filter(name=name, state="online").update(state="draining")
        audit.record("worker.drain", user, name, via=via, queues=list(queues))
        frame = worker_frame(WorkerStatus.objects.get(name=name))
        transaction.on_commit(lambda: send(MONITOR_GROUP, {"type": "monitor.worker", "worker": frame}))
    # No reply: the worker raises WorkerShutdown in its control handler and answers no more.
    app.control.shutdown(destination=[name])
    log.warning(
        "worker %s is draining: no longer consuming %s, warm shutdown ordered", name, ", ".join(queues)
    )
    return DrainOrder(worker=name, queues=queues)


def _active_queues(name: str, timeout_s: float) -> list[dict[str, str]]:
    replies = app.control.inspect(destination=[name], timeout=timeout_s).active_queues() or {}
    return list(replies.get(name) or [])
