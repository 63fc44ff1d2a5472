"""A run's state reaches the processes running its nodes by Redis pub/sub
(control_unit.run_states), over the real Redis: a pause is published once committed,
a follower sees it without asking the database, reads the database only every few
seconds as a fallback, and never lets such a read overwrite a newer message."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import redis
from django.conf import settings

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_pause_run, do_start_run
from control_unit.run_states import FALLBACK_READ_S, RunStates, channel_of, publish
from tests.integration.conftest import node_code

pytestmark = pytest.mark.django_db(transaction=True)


def wait_until(condition: Any, what: str, wait_s: float = 10) -> None:
    deadline = time.monotonic() + wait_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.fixture
def states() -> RunStates:
    listener = RunStates(settings.REDIS_URL, settings.FLOWKIT_CHANNEL_PREFIX)
    return listener


def test_a_follower_sees_a_published_state_and_reads_the_database_only_as_a_fallback(states):
    run_id = str(uuid.uuid4())
    reads: list[float] = []

    def read() -> str:
        reads.append(time.monotonic())
        return "running"

    state = states.follow(run_id, read)
    assert state() == "running"
    assert states.listening.wait(10), "the listener never subscribed"
    publish(run_id, "paused")
    wait_until(lambda: state() == "paused", "the published pause never arrived")
    for _ in range(50):
        state()
    # The first call read the database; the next read is due FALLBACK_READ_S later.
    assert len(reads) == 1 or reads[1] - reads[0] >= FALLBACK_READ_S
    states.forget(run_id)


def test_a_database_read_older_than_a_message_does_not_overwrite_it(states):
    run_id = str(uuid.uuid4())
    first = states.follow(run_id, lambda: "running")
    assert first() == "running"
    assert states.listening.wait(10)
    arrived = threading.Event()

    def slow_read() -> str:
        # The pause is committed and published while this read is in flight.
        publish(run_id, "paused")
        wait_until(lambda: states._runs[run_id].state == "paused", "the pause never arrived")
        arrived.set()
        return "running"

    second = states.follow(run_id, slow_read)
    assert second() == "paused"
    assert arrived.is_set()


def test_pausing_a_run_publishes_its_state_once_committed(no_broker):
    code = node_code("value = 1")
    version = do_create_pipeline("published", {"schema_version": 1, "nodes": [{"id": "n", "code": code}]})
    run = do_start_run(version.latest_version())
    subscriber = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe(channel_of(run.id))
    try:
        do_pause_run(run.id)
        message = None
        deadline = time.monotonic() + 10
        while message is None and time.monotonic() < deadline:
            message = subscriber.get_message(timeout=1.0)
        assert message is not None, "no state was published"
        assert message["data"] == b"paused"
    finally:
        subscriber.close()
