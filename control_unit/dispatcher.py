"""How the control unit hands work to the node runner: Celery tasks sent by name, so
control_unit never imports node_runner (the layer above it). Callers send after their
transaction commits.

``current()`` is the dispatcher in use; tests that must not reach a worker install
their own with ``dispatching_to`` instead of patching the senders.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol, TypeVar

RUN_NODE_TASK = "node_runner.run_node"
RUN_NODE_TEST_TASK = "node_runner.run_node_test"


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
        current_app.send_task(RUN_NODE_TASK, arguments, countdown=delay_s or None, queue=queue)

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
