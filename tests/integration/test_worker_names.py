"""A worker recovers its previous life's work only when that life is over: a second
worker started under a name that is in use must not fail the first one's nodes."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import timedelta

import pytest
from django.utils import timezone

from node_runner.heartbeat import another_life_is_running
from trace_monitor.models import WorkerStatus

pytestmark = pytest.mark.django_db


def status(pid: int, host: str | None = None, seconds_ago: float = 1.0, state: str = "online") -> None:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    WorkerStatus.objects.create(
        name="w@h", host=host or socket.gethostname(), pid=pid, state=state, started_at=at, last_seen=at
    )


def test_a_live_process_of_the_same_name_on_this_host_is_another_life():
    status(os.getppid())
    assert another_life_is_running("w@h") == f"process {os.getppid()} on this host is running as w@h"


def test_a_dead_process_of_the_same_name_is_a_previous_life():
    finished = subprocess.Popen(["true"])
    finished.wait()
    status(finished.pid)
    assert another_life_is_running("w@h") is None


def test_a_recent_heartbeat_from_another_host_is_another_life_and_a_stale_one_is_not(settings):
    settings.FLOWKIT_WORKER_LOST_AFTER_S = 15
    status(12345, host="elsewhere", seconds_ago=3)
    assert another_life_is_running("w@h") == "a worker on elsewhere sent a heartbeat as w@h 3 s ago"
    WorkerStatus.objects.filter(name="w@h").update(last_seen=timezone.now() - timedelta(seconds=60))
    assert another_life_is_running("w@h") is None


@pytest.mark.parametrize("state", ["stopped", "lost"])
def test_a_worker_that_stopped_or_was_lost_is_a_previous_life(state):
    status(os.getppid(), state=state)
    assert another_life_is_running("w@h") is None


def test_no_record_and_this_very_process_are_no_other_life():
    assert another_life_is_running("w@h") is None
    status(os.getpid())
    assert another_life_is_running("w@h") is None
