"""Which dispatches the broker still holds: the check that lets the dispatch watchdog
(run_actions.do_redispatch_overdue) re-send only messages that are really gone.

A dispatch's message carries a task id derived from (run, node, attempt)
(dispatcher.dispatch_task_id), so it can be recognised without decoding its body.
On the Redis transport (kombu) a message is, until acknowledged, in one of two places:

- its queue's list (one per priority step), waiting for a consumer;
- the ``unacked`` hash, once a worker took it: prefetched behind busy pool processes,
  held until a retry's countdown is due, or running (tasks are acknowledged when they
  end, ``task_acks_late``).

A message in neither was lost (Redis restarted without it, the queue was purged) or
never sent, or it is between the two for an instant (popped, not yet recorded as
unacknowledged) or was acknowledged by a task that has not claimed its attempt yet
(with ``FLOWKIT_CELERY_ACKS_LATE=false``); the watchdog looks a second time before it
re-sends, and those have been claimed by then.

A message in ``unacked`` is trusted to the worker that took it while that worker
lives: Redis gives it back to the queue only after the visibility timeout (hours),
but when its worker is lost, or starts again under the same name, the heartbeat asks
with ``delivered=False`` and it is re-sent at once (a copy is claimed once).

Other brokers (AMQP) cannot be looked into: there a queue that holds any message
counts as holding every dispatch sent to it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# A queue longer than this is not read through: the dispatches sent to it are waiting
# their turn behind a backlog, not lost (a node's message is found once the queue is
# shorter, or its worker takes it).
SCAN_AT_MOST = 20_000


def held_dispatches(queues: Mapping[str, str], *, delivered: bool = True) -> set[str]:
    """Of ``queues`` (task id -> the queue its message was sent to), the task ids whose
    message the broker still holds: in its queue, or, with ``delivered``, taken by a
    worker and not yet acknowledged."""
    from celery import current_app

    if not queues:
        return set()
    with current_app.connection_for_read() as connection:
        channel = connection.default_channel
        if not hasattr(channel, "unacked_key") or not hasattr(channel, "_q_for_pri"):
            return _held_by_depth(channel, queues)
        held: set[str] = set()
        with channel.conn_or_acquire() as client:
            for queue in set(queues.values()):
                for key in {channel._q_for_pri(queue, pri) for pri in channel.priority_steps}:
                    length = int(client.llen(key))
                    if length > SCAN_AT_MOST:
                        held |= {task_id for task_id, to in queues.items() if to == queue}
                        continue
                    held |= _ids_in(client.lrange(key, 0, -1), queues, unacked=False)
            if delivered:
                held |= _ids_in(client.hvals(channel.unacked_key), queues, unacked=True)
        return held


def _ids_in(raw_messages: Iterable[bytes | str], wanted: Mapping[str, str], *, unacked: bool) -> set[str]:
    found = set()
    for raw in raw_messages:
        task_id = _task_id(raw, unacked=unacked)
        if task_id is not None and task_id in wanted:
            found.add(task_id)
    return found


def _task_id(raw: bytes | str, *, unacked: bool) -> str | None:
    # A queued message is kombu's envelope; an unacknowledged one is stored as
    # [envelope, exchange, routing key]. Celery's message protocol 2 names the task id
    # in the headers.
    try:
        value: Any = json.loads(raw)
        envelope = value[0] if unacked else value
        return str(envelope["headers"]["id"])
    except (ValueError, TypeError, KeyError, IndexError):
        return None


def _held_by_depth(channel: Any, queues: Mapping[str, str]) -> set[str]:
    held: set[str] = set()
    for queue in set(queues.values()):
        depth = 0
        with contextlib.suppress(Exception):
            depth = int(channel.queue_declare(queue=queue, passive=True).message_count)
        if depth:
            held |= {task_id for task_id, to in queues.items() if to == queue}
    return held
