"""The dispatch watchdog (run_actions.do_redispatch_overdue) re-sends only dispatches
whose message the broker no longer holds, not every one that is merely old (issue 16,
Operations: under a backlog of 200 runs, 192 dispatches still queued were re-sent).

A real worker, slow (one pool process, nodes of a few seconds) and holding prefetched
dispatches it has not claimed, works through a backlog of 200 runs whose dispatches
are all overdue by the watchdog's measure (FLOWKIT_REDISPATCH_AFTER_S=1): none is
re-sent. Then the queue is purged: exactly the purged dispatches are re-sent, once."""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from typing import cast

import pytest
import redis
from django.conf import settings

from control_unit.models import NodeRun
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_redispatch_overdue, do_start_run
from tests.integration.conftest import fast, node_code, start_worker, stop_worker, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

RUNS = 200
OVERDUE_AFTER_S = 1.0
WATCH_S = 8.0


def queued_nodes() -> set[tuple[str, str, int]]:
    rows = NodeRun.objects.filter(state="queued", dispatched=True, run__state="running")
    return {
        (str(run), node, attempt) for run, node, attempt in rows.values_list("run_id", "node_id", "attempt")
    }


def held_by_workers(broker: redis.Redis, queue: str) -> int:
    """Messages of ``queue`` a worker took and has not acknowledged (kombu's unacked hash)."""
    values = cast(list[bytes], broker.hvals("unacked"))  # the sync client's reply
    return len([value for value in values if json.loads(value)[2] == queue])


def dispatch_keys(messages: list[bytes]) -> list[tuple[str, str, int]]:
    keys = []
    for message in messages:
        args, _kwargs, _embed = json.loads(base64.b64decode(json.loads(message)["body"]))
        keys.append((args[0], args[1], args[2]))
    return keys


def test_a_backlog_behind_a_slow_worker_is_not_re_sent_and_a_purged_queue_is(own_queue, tmp_path):
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    env = {
        **fast(own_queue),
        "FLOWKIT_REDISPATCH_AFTER_S": str(OVERDUE_AFTER_S),
        # One pool process that takes four dispatches at a time: three wait in the
        # worker, taken from the queue and not claimed, behind the one it runs.
        "FLOWKIT_CELERY_PREFETCH_MULTIPLIER": "4",
    }
    name = f"watchdog-{os.getpid()}@{socket.gethostname()}"
    worker = start_worker(name, tmp_path / "worker.log", env, autoscale=(1, 1))
    try:
        slow = {"id": "n", "code": node_code("import time\ntime.sleep(3)\nvalue = 1"), "outputs": ["value"]}
        version = do_create_pipeline("backlog", {"schema_version": 1, "nodes": [slow]}).latest_version()
        for _ in range(RUNS):
            do_start_run(version)

        # Every dispatch is overdue from here on, and some wait inside the worker.
        wait_until(
            "the worker holds dispatches it has not claimed",
            lambda: held_by_workers(broker, own_queue) > NodeRun.objects.filter(state="running").count() > 0,
            wait_s=60,
        )
        resent = []
        held_seen = 0
        deadline = time.monotonic() + WATCH_S
        while time.monotonic() < deadline:
            time.sleep(OVERDUE_AFTER_S + 0.2)
            held_seen = max(
                held_seen,
                held_by_workers(broker, own_queue) - NodeRun.objects.filter(state="running").count(),
            )
            resent += do_redispatch_overdue(OVERDUE_AFTER_S)
        waiting = broker.llen(own_queue)
        assert resent == [], f"{len(resent)} dispatches still in the broker were re-sent"
        assert "re-sending" not in worker.log(), "the worker's own watchdog re-sent queued dispatches"
        assert held_seen > 0, "no dispatch was ever held by the worker unclaimed: the test proved nothing"
        assert waiting > RUNS // 2, f"the backlog was worked off too soon to prove anything ({waiting} left)"
    finally:
        # A warm shutdown: the dispatches it held go back to the queue.
        stop_worker(worker)

    # No worker now. The queue is purged: every dispatch still queued is gone.
    time.sleep(OVERDUE_AFTER_S + 0.2)
    lost = queued_nodes()
    assert broker.llen(own_queue) == len(lost) > 0, "the stopped worker gave its held dispatches back"
    broker.delete(own_queue)
    resent = do_redispatch_overdue(OVERDUE_AFTER_S)
    assert sorted(resent) == sorted(lost), "exactly the purged dispatches are re-sent"
    assert sorted(dispatch_keys(broker.lrange(own_queue, 0, -1))) == sorted(lost), "each once"
    time.sleep(OVERDUE_AFTER_S + 0.2)
    assert do_redispatch_overdue(OVERDUE_AFTER_S) == [], "and not again while they wait in the queue"
