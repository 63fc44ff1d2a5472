"""The host's log lines, while an execution runs, are masked with its secrets."""

from __future__ import annotations

import io
import logging
import threading

import pytest

from secret_manager.log_masking import install, masking_logs
from secret_manager.masking import MASK, Masker

SECRET = "hunter2-'quoted'"


@pytest.fixture
def logged():
    stream = io.StringIO()
    logger = logging.getLogger("tests.log_masking")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    install(logger)
    yield logger, stream
    logger.removeHandler(handler)


def test_a_line_logged_from_any_thread_during_an_execution_is_masked(logged):
    logger, stream = logged
    with masking_logs(Masker([SECRET])):
        logger.warning("value %r in %s", SECRET, "a message")
        thread = threading.Thread(target=lambda: logger.error("from a thread: %s", SECRET))
        thread.start()
        thread.join()
        try:
            raise KeyError(SECRET)
        except KeyError:
            logger.exception("failed")
    text = stream.getvalue()
    assert SECRET not in text
    assert f'value "{MASK}" in a message' in text
    assert f"from a thread: {MASK}" in text
    assert f'KeyError: "{MASK}"' in text


def test_lines_logged_outside_an_execution_are_left_alone(logged):
    logger, stream = logged
    with masking_logs(Masker([SECRET])):
        pass
    logger.warning("no execution: %s", SECRET)
    assert SECRET in stream.getvalue()


def test_installing_twice_filters_once(logged):
    logger, _ = logged
    install(logger)
    assert len(logger.handlers[0].filters) == 1
