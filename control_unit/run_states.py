"""A run's state, pushed to the processes running its nodes by Redis pub/sub.

Each change of a run's state is published on the run's channel once it is committed
(``published_after_commit``, called by fcb_store.save_step). Every worker pool process
that runs a node of a run follows it (``RunStates``, node_runner.tasks.run_control), so a
pause, resume or cancel reaches the running execution as soon as it is committed,
instead of each running node asking the database five times a second. A message is lost
while Redis restarts or a listener reconnects: a runner still reads the state from the
database every FALLBACK_READ_S, and a message older than such a read never overwrites
it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

# How often a runner reads its run's state from the database anyway.
FALLBACK_READ_S = 5.0
# After Redis went away, a listener tries again this often.
RECONNECT_S = 1.0


def channel_of(run_id: Any) -> str:
    return f"{settings.FLOWKIT_CHANNEL_PREFIX}:run-state:{run_id}"


def published_after_commit(run_id: Any, state: str) -> None:
    transaction.on_commit(lambda: publish(run_id, state))


def publish(run_id: Any, state: str) -> None:
    try:
        _publisher().publish(channel_of(run_id), state)
    except redis.RedisError as exc:
        # The runners' database reads bring the change a few seconds later.
        log.warning("could not publish run %s's state %s: %s", run_id, state, exc)


_client: redis.Redis | None = None


def _publisher() -> redis.Redis:
    global _client
    if _client is None:
        # redis-py's pool notices a fork and opens new connections in the child.
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2.0)
    return _client


@dataclass
class _Known:
    state: str | None = None
    # Messages seen for the run: a database read that started before one is older.
    messages: int = 0
    watchers: int = 0


class RunStates:
    """The states of the runs this process watches, kept current by a thread that
    listens to every run's channel."""

    def __init__(self, url: str, prefix: str) -> None:
        self._url = url
        self._pattern = f"{prefix}:run-state:*"
        self._lock = threading.Lock()
        self._runs: dict[str, _Known] = {}
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()

    def follow(self, run_id: str, read: Callable[[], str | None]) -> Callable[[], str | None]:
        """Watch ``run_id``; returns what tells its state now: the last one published,
        or ``read`` from the database at first and every FALLBACK_READ_S."""
        self._ensure_listening()
        with self._lock:
            self._runs.setdefault(run_id, _Known()).watchers += 1
        next_read = 0.0

        def state() -> str | None:
            nonlocal next_read
            if time.monotonic() >= next_read:
                with self._lock:
                    seen = self._runs[run_id].messages
                current = read()
                next_read = time.monotonic() + FALLBACK_READ_S
                with self._lock:
                    known = self._runs[run_id]
                    if known.messages == seen:  # no newer message came meanwhile
                        known.state = current
            with self._lock:
                return self._runs[run_id].state

        return state

    def forget(self, run_id: str) -> None:
        with self._lock:
            known = self._runs.get(run_id)
            if known is not None:
                known.watchers -= 1
                if known.watchers <= 0:
                    del self._runs[run_id]

    def _ensure_listening(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._listen_forever, name="run-states", daemon=True)
                self._thread.start()

    def _listen_forever(self) -> None:
        while True:
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                log.warning("run states: the Redis subscription failed (%s); again in %g s", exc, RECONNECT_S)
            self.listening.clear()
            time.sleep(RECONNECT_S)

    def _listen(self) -> None:
        client = redis.Redis.from_url(self._url, health_check_interval=30)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.psubscribe(self._pattern)
            self.listening.set()
            for message in pubsub.listen():
                if message.get("type") != "pmessage":
                    continue
                run_id = _text(message["channel"]).rsplit(":", 1)[-1]
                with self._lock:
                    known = self._runs.get(run_id)
                    if known is not None:
                        known.state = _text(message["data"])
                        known.messages += 1
        finally:
            pubsub.close()
            client.close()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_states: RunStates | None = None
_states_lock = threading.Lock()


def run_states() -> RunStates:
    """This process's listener (started in the process that uses it: a pool process)."""
    global _states
    with _states_lock:
        if _states is None:
            _states = RunStates(settings.REDIS_URL, settings.FLOWKIT_CHANNEL_PREFIX)
        return _states
