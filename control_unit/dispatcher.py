"""How the control unit hands work to the node runner: Celery tasks sent by name, so
control_unit never imports node_runner (the layer above it). Callers send after their
transaction commits.

``current()`` is the dispatcher in use; tests that must not reach a worker install
their own with ``dispatching_to`` instead of patching the senders.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Protocol, TypeVar

RUN_NODE_TASK = "node_runner.run_node"
RUN_NODE_TEST_TASK = "node_runner.run_node_test"
# The namespace of dispatch task ids (uuid5): any fixed UUID, never to change while
# messages sent under it may wait in a broker.
_DISPATCH_IDS = uuid.UUID("5c1f9a7e-2b8d-4e63-9f0a-16d4c3b2a871")


def dispatch_task_id(run_id: str, node_id: str, attempt: int) -> str:
    """The task id of every message that dispatches (run, node, attempt): the same for
    a re-sent copy, so that the dispatch watchdog can tell whether the broker still
    holds one (control_unit.broker_messages)."""
    return str(uuid.uuid5(_DISPATCH_IDS, f"{run_id}/{node_id}/{attempt}"))


class Dispatcher(Protocol):
    def send_node(self, run_id: str, node_id: str, attempt: int, *, delay_s: float, queue: str) -> None:
        """Have a worker consuming ``queue`` run the attempt in ``delay_s`` seconds."""

    def send_node_test(self, test_run_id: str) -> None:
        """Have a worker run the node test."""


class CeleryDispatcher:
    """Sends through the Celery app the installation loads with Django (node_runner's)."""

    def send_node(self, run_id: str, node_id: str, attempt: int, *, delay_s: float, queue: str) -> None:
        from celery import current_app

        arguments = (run_id, node_id, attempt)
        current_app.send_task(
            RUN_NODE_TASK,
            arguments,
            countdown=delay_s or None,
            queue=queue,
            task_id=dispatch_task_id(run_id, node_id, attempt),
        )

    def send_node_test(self, test_run_id: str) -> None:
        from celery import current_app

        current_app.send_task(RUN_NODE_TEST_TASK, (test_run_id,))


_current: Dispatcher = CeleryDispatcher()
D = TypeVar("D", bound=Dispatcher)


def current() -> Dispatcher:
    return _current


@contextlib.contextmanager
def dispatching_to(dispatcher: D) -> Iterator[D]:
    """Send through ``dispatcher`` until the block ends."""
    global _current
    previous, _current = _current, dispatcher
    try:
        yield dispatcher
    finally:
        _current = previous
