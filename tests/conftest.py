"""Settings and fixtures shared by every test directory."""

import os
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
from django.conf import settings as django_settings
from django.core.management.base import CommandError
from django.db import OperationalError
from django.test import TransactionTestCase
from hypothesis import settings

# CI runs every property-based suite (Hypothesis, Schemathesis) with its fixed budget
# of examples and a fixed seed, so a run is reproducible; elsewhere each run explores
# new examples.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


FLUSH_ATTEMPTS = 5
FLUSH_BACKOFF_S = 0.5


def _flush_retrying_deadlocks(self: TransactionTestCase) -> None:
    """Django's flush after a transactional test, tried again when PostgreSQL chose it
    as a deadlock's victim. The live worker (and web process) of the integration and
    browser tests keep writing while a test ends (a node finishing, a heartbeat), and
    TRUNCATE of every table can deadlock with such a write; PostgreSQL's advice for a
    deadlock is to retry the transaction, and the retry finds the writer done."""
    for attempt in range(1, FLUSH_ATTEMPTS + 1):
        try:
            _django_fixture_teardown(self)
            return
        except CommandError as exc:
            if attempt == FLUSH_ATTEMPTS or not isinstance(exc.__cause__, OperationalError):
                raise
            # Back off: a worker still busy after a large run (the 200-node fan-out
            # benchmark) deadlocked five immediate retries in a row.
            time.sleep(FLUSH_BACKOFF_S * attempt)


# A private method of Django's (django-stubs does not declare it), hence getattr/setattr.
_django_fixture_teardown = getattr(TransactionTestCase, "_fixture_teardown")  # noqa: B009
setattr(TransactionTestCase, "_fixture_teardown", _flush_retrying_deadlocks)  # noqa: B010


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The real Celery worker of this pytest process, on its own queue and test database.
    Defined here, once, so that every test directory shares the one worker: two
    workers of one name would take each other for restarts."""
    from tests.integration.conftest import start_worker, stop_worker

    name = f"{django_settings.FLOWKIT_CELERY_QUEUE}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    worker = start_worker(name, tmp_path_factory.mktemp("worker") / "worker.log")
    yield worker
    stop_worker(worker)
