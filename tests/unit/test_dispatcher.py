"""The control unit sends work to the runner by task name: the names must be the
runner's, and a dispatcher installed for a test must not outlive it."""

from __future__ import annotations

import pytest

from control_unit import dispatcher
from node_runner.tasks import run_node, run_node_test


def test_the_task_names_sent_are_the_runner_s_registered_tasks():
    assert run_node.name == dispatcher.RUN_NODE_TASK
    assert run_node_test.name == dispatcher.RUN_NODE_TEST_TASK
    assert isinstance(dispatcher.current(), dispatcher.CeleryDispatcher)


class Refusing:
    def send_node(self, run_id: str, node_id: str, attempt: int, *, delay_s: float, queue: str) -> None:
        raise AssertionError("not expected")

    def send_node_test(self, test_run_id: str) -> None:
        raise AssertionError("not expected")


def test_an_installed_dispatcher_is_current_only_inside_its_block_even_when_it_raises():
    before = dispatcher.current()
    seen = []

    def fail_inside() -> None:
        with dispatcher.dispatching_to(Refusing()) as installed:
            seen.append(dispatcher.current() is installed)
            raise RuntimeError("the test failed")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert seen == [True]
    assert dispatcher.current() is before
